"""Build the book's network in a fresh ``tf.Graph`` and return named handles to it.

The names are the book's, and every tensor a user fetches after a restore has an explicit one:

====================  ============================================================
``X:0``               float32 (None, 784) pixels scaled to [0, 1]
``y:0``               int32 (None,) labels
``training:0``        bool, ``placeholder_with_default(False)`` (batch-norm networks only)
``dnn/logits:0``      float32 (None, 10)
``dnn/probabilities:0`` softmax of the logits
``eval/predictions:0``  int64 arg-max class
``loss/loss:0``       mean cross-entropy
``eval/accuracy:0``   mean of ``in_top_k(logits, y, 1)``
``train/training_op`` the gradient-descent step (run it with ``UPDATE_OPS``)
====================  ============================================================

Variables: ``hidden1/kernel``, ``hidden1/bias``, ``batch_normalization/gamma|beta|moving_mean|
moving_variance``, ``hidden2/...``, ``batch_normalization_1/...``, ``outputs/...``,
``batch_normalization_2/...``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import tensorflow as tf

from . import layers
from .seeding import TF1OpClock

tf1 = tf.compat.v1

TENSOR_NAMES = {
    "X": "X:0", "y": "y:0", "training": "training:0", "logits": "dnn/logits:0",
    "probabilities": "dnn/probabilities:0", "predictions": "eval/predictions:0",
    "loss": "loss/loss:0", "accuracy": "eval/accuracy:0",
}
TRAINING_OP_NAME = "train/training_op"


def leaky_relu(z, name=None):
    """The chapter's plain network: ``tf.maximum(0.01 * z, z)``."""
    return tf.maximum(0.01 * z, z, name=name)


ACTIVATIONS = {"elu": tf.nn.elu, "leaky_relu": leaky_relu}


def layer_names(config):
    """The book's names, layer by layer: ``(dense scope, batch-norm scope or None)``, i.e.
    ``("hidden1", "batch_normalization")``, ``("hidden2", "batch_normalization_1")``, ...,
    ``("outputs", "batch_normalization_<n>")``."""
    dense_names = [f"hidden{i}" for i in range(1, len(config.hidden) + 1)] + ["outputs"]
    return [(name, ("batch_normalization" + (f"_{i}" if i else "")) if config.batch_norm else None)
            for i, name in enumerate(dense_names)]


@dataclass
class Handles:
    graph: tf.Graph
    X: tf.Tensor
    y: tf.Tensor
    training: object           # tf.Tensor, or None for a network without batch norm
    logits: tf.Tensor
    probabilities: tf.Tensor
    predictions: tf.Tensor
    loss: tf.Tensor
    accuracy: tf.Tensor
    training_op: object        # tf.Operation, or None for a graph built with train_op=False
    extra_update_ops: list
    init: tf.Operation
    kernel_seeds: dict         # variable name -> op seed given to its initializer
    model_variables: list      # every variable of the network, weights and moving statistics
    data: object = None        # DataHandles when the training set is held in the graph


def build_graph(config, in_graph_data=False, train_op=True):
    """A fresh graph for ``config``, the way the book's cell builds it, seeded per ``config.seeding``.

    Without ``train_op`` the ``train`` scope (the optimizer and its gradients) is left out,
    for graphs that only evaluate (a restored model, the epoch-end copy); the variables, their
    seeds and every other name are the same.

    With ``in_graph_data`` the training set lives in the graph (local variables ``data/X_train``
    and ``data/y_train``, loaded once through ``data/*_in`` placeholders and never saved) and
    ``X`` and ``y`` default to the rows ``data/batch_idx`` selects, so a training step feeds only
    the indices. ``X`` and ``y`` stay feedable as in the book (for validation, restores, the
    recipe); the float operations of a step are the same either way.
    """
    graph = tf.Graph()
    with graph.as_default():
        # the book's reset_graph(seed): graph-level seed (the NumPy seed is the trainer's business)
        tf1.set_random_seed(config.seed)
        clock = TF1OpClock(graph, config.seeding)
        data_handles = _in_graph_data(config) if in_graph_data else None
        with clock.same_as_tf1():
            if data_handles is None:
                X = tf1.placeholder(tf.float32, shape=(None, config.n_inputs), name="X")
                y = tf1.placeholder(tf.int32, shape=(None), name="y")
            else:   # one op each, like the book's placeholders
                X = tf1.placeholder_with_default(data_handles.X_batch, (None, config.n_inputs), name="X")
                y = tf1.placeholder_with_default(data_handles.y_batch, (None,), name="y")
            training = (tf1.placeholder_with_default(False, shape=(), name="training")
                        if config.batch_norm else None)
        activation = ACTIVATIONS[config.activation]
        (*hidden_names, (out_name, out_bn)) = layer_names(config)

        def batch_norm(z, name):
            return layers.batch_normalization(z, training, config.momentum, name, clock)

        with tf.name_scope("dnn"):
            dense = partial(layers.dense, clock=clock, initializer=config.initializer)
            z = X
            for units, (name, bn_name) in zip(config.hidden, hidden_names):
                if config.batch_norm:
                    z = batch_norm(dense(z, units, name), bn_name)
                    with clock.same_as_tf1():
                        z = activation(z)
                else:
                    z = dense(z, units, name, activation=activation)
            logits = dense(z, config.n_outputs, out_name)
            if config.batch_norm:
                logits = batch_norm(logits, out_bn)
            logits = tf.identity(logits, name="logits")
            probabilities = tf.nn.softmax(logits, name="probabilities")
        with tf.name_scope("loss"):
            xentropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
            loss = tf.reduce_mean(xentropy, name="loss")
        training_op = None
        if train_op:
            with tf.name_scope("train"):
                optimizer = tf1.train.GradientDescentOptimizer(config.learning_rate)
                training_op = optimizer.minimize(loss, name="training_op")
        with tf.name_scope("eval"):
            correct = tf1.nn.in_top_k(logits, y, 1)
            accuracy = tf.reduce_mean(tf.cast(correct, tf.float32), name="accuracy")
            predictions = tf.argmax(logits, axis=1, name="predictions")
        model_variables = tf1.global_variables()
        init = tf1.variables_initializer(model_variables, name="init")
        extra_update_ops = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
    return Handles(graph, X, y, training, logits, probabilities, predictions, loss, accuracy,
                   training_op, extra_update_ops, init, dict(clock.seeds), model_variables,
                   data_handles)


@dataclass
class DataHandles:
    X_in: tf.Tensor
    y_in: tf.Tensor
    load: tf.Operation
    batch_idx: tf.Tensor
    X_batch: tf.Tensor
    y_batch: tf.Tensor
    X_data: object             # the local variables holding the training set
    y_data: object


def local_data(initial, name):
    """A variable holding data set ``initial`` (a placeholder fed when it is initialised): local,
    not global, so the Saver never writes the data set into checkpoints."""
    return tf1.Variable(initial, trainable=False, validate_shape=False, name=name,
                        collections=[tf1.GraphKeys.LOCAL_VARIABLES])


def _in_graph_data(config):
    with tf.name_scope("data"):
        X_in = tf1.placeholder(tf.float32, (None, config.n_inputs), name="X_in")
        y_in = tf1.placeholder(tf.int32, (None,), name="y_in")
        X_data, y_data = local_data(X_in, "X_train"), local_data(y_in, "y_train")
        load = tf.group(X_data.initializer, y_data.initializer, name="load")
        batch_idx = tf1.placeholder(tf.int32, (None,), name="batch_idx")
        X_batch = tf.gather(X_data.value(), batch_idx, name="X_batch")
        y_batch = tf.gather(y_data.value(), batch_idx, name="y_batch")
    return DataHandles(X_in, y_in, load, batch_idx, X_batch, y_batch, X_data, y_data)
