"""The book's network as a TF1 graph, with the book's names (:data:`TENSOR_NAMES`): the math is
:mod:`bnmnist.network`'s; this module wires it with placeholders, variables with TF1's seeds,
batch norm's ``cond`` on ``training`` and ``UPDATE_OPS``, the optimizer and the max-norm clips.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import tensorflow as tf

from . import network
from .seeds import TF1OpClock

tf1 = tf.compat.v1

TENSOR_NAMES = {
    "X": "X:0",
    "y": "y:0",
    "training": "training:0",
    "logits": "dnn/logits:0",
    "probabilities": "dnn/probabilities:0",
    "predictions": "eval/predictions:0",
    "loss": "loss/loss:0",
    "accuracy": "eval/accuracy:0",
}
TRAINING_OP_NAME = "train/training_op"


@dataclass(frozen=True, kw_only=True)
class Handles:
    """The graph's named handles: what the trainer, a restore and the book's recipe read."""

    graph: tf.Graph
    X: tf.Tensor
    y: tf.Tensor
    training: tf.Tensor | None  # None for a network without batch norm or dropout
    logits: tf.Tensor
    probabilities: tf.Tensor
    predictions: tf.Tensor
    loss: tf.Tensor
    accuracy: tf.Tensor
    training_op: tf.Operation | None  # None for a graph built with train_op=False
    extra_update_ops: list
    init: tf.Operation
    model_variables: list  # every variable of the network, weights and moving statistics
    after_step: list = field(default_factory=list)  # ops the cell runs after each training step
    input_statistics: tuple = ()  # (mean, std) variables of a network that standardises its inputs
    layer_outputs: dict = field(default_factory=dict)  # hidden layer name -> its output tensor


def build_graph(config, train_op=True):
    """A fresh graph for ``config``, as the book's cell builds it. Without ``train_op`` the
    ``train`` scope is left out, for graphs that only evaluate; every other name and seed stays."""
    graph = tf.Graph()
    with graph.as_default():
        # the book's reset_graph(seed): graph-level seed (the NumPy seed is the trainer's business)
        tf1.set_random_seed(config.seed)
        clock = TF1OpClock(graph, config.seeding)
        with clock.same_as_tf1():
            X = tf1.placeholder(tf.float32, shape=(None, config.n_inputs), name="X")
            y = tf1.placeholder(tf.int32, shape=(None), name="y")
            training = None
            if config.batch_norm or config.dropout_rate:
                training = tf1.placeholder_with_default(False, shape=(), name="training")
        variables = _variables(config, clock)

        def params(name):
            return variables[name].value()

        def statistics(layer, z):
            return _batch_norm_statistics(z, training, variables, layer.batch_norm, config.momentum)

        def dropout(name, z):  # tf.layers.dropout(z, rate, training=training)
            seed = clock.seeds[name]
            return tf1.cond(training, lambda: network.tf1_dropout(z, config.dropout_rate, seed), lambda: tf.identity(z))

        layer_outputs = {}
        with tf.name_scope("dnn"):
            logits = network.forward(config, X, params, statistics, dropout=dropout, outputs=layer_outputs)
            logits = tf.identity(logits, name="logits")
            probabilities = tf.nn.softmax(logits, name="probabilities")
        with tf.name_scope("loss"):
            loss = network.loss(config, y, logits, params)
        training_op = None
        if train_op:
            with tf.name_scope("train"):
                training_op = _training_op(config, loss)
        after_step = _max_norm_clips(config, variables) if train_op else []
        with tf.name_scope("eval"):
            accuracy, predictions = network.accuracy_and_predictions(logits, y)
        model_variables = list(variables.values())
        # the network's variables, and the optimizer's slots and global step, if any
        init = tf1.variables_initializer(tf1.global_variables(), name="init")
        extra_update_ops = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
    statistics = tuple(variables[n] for n in (network.INPUT_MEAN, network.INPUT_STD) if n in variables)
    tensors = dict(X=X, y=y, training=training, logits=logits, probabilities=probabilities, predictions=predictions)
    return Handles(
        graph=graph,
        **tensors,
        loss=loss,
        accuracy=accuracy,
        training_op=training_op,
        init=init,
        extra_update_ops=extra_update_ops,
        model_variables=model_variables,
        after_step=after_step,
        input_statistics=statistics,
        layer_outputs=layer_outputs,
    )


def training_graph(config, resume=False):
    """The graph a run trains: :func:`build_graph`'s, or, for the cells that import their source
    run's ``.meta`` file, that graph, trained as it is (``reuse_model``) or with new layers on its
    ``hidden3`` (``reuse_lower_imported``). A resumed run rebuilds the same network by code."""
    if config.reuse not in ("model", "lower_imported") or resume:
        return build_graph(config)
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(config.seed)  # the cell's reset_graph() before import_meta_graph
        tf1.train.import_meta_graph(config.reuse_from + ".meta")
        variables = {v.op.name: v for v in tf1.global_variables()}
        if config.reuse == "model":
            names = ("logits", "probabilities", "predictions", "loss", "accuracy")
            tensors = dict(zip(names, (graph.get_tensor_by_name(TENSOR_NAMES[k]) for k in names)))
            training_op = graph.get_operation_by_name(TRAINING_OP_NAME)
        else:
            tensors, training_op = _new_layers_on_imported(config, graph, variables)
        model_variables = [variables[name] for name in network.variable_names(config)]
        init = tf1.variables_initializer(tf1.global_variables(), name="new_init")
    X, y = graph.get_tensor_by_name(TENSOR_NAMES["X"]), graph.get_tensor_by_name(TENSOR_NAMES["y"])
    return Handles(
        graph=graph, X=X, y=y, training=None, **tensors, training_op=training_op, extra_update_ops=[], init=init,
        model_variables=model_variables,
    )  # fmt: skip


def _new_layers_on_imported(config, graph, variables):
    """``config``'s layers from ``new_layers_from`` on, on the imported graph, in the cell's
    ``new_*`` scopes, seeded after every op of the imported graph, as TF1 seeded them."""
    from . import runs

    clock = TF1OpClock(graph, config.seeding)
    clock.imported_training_graph(runs.read_config(os.path.dirname(config.reuse_from)))
    start = config.new_layers_from
    variables.update(_variables(config, clock, start=start))
    below = graph.get_tensor_by_name(f"dnn/hidden{start}/Relu:0")
    params = lambda name: variables[name].value()  # noqa: E731
    logits = tf.identity(network.forward(config, below, params, None, start=start), name="new_logits")
    probabilities = tf.nn.softmax(logits, name="new_probabilities")
    y = graph.get_tensor_by_name(TENSOR_NAMES["y"])
    with tf.name_scope("new_loss"):
        loss = network.loss(config, y, logits, params)
    with tf.name_scope("new_eval"):
        accuracy, predictions = network.accuracy_and_predictions(logits, y)
    with tf.name_scope("new_train"):
        training_op = _training_op(config, loss)
    tensors = {"logits": logits, "probabilities": probabilities, "predictions": predictions}
    return {**tensors, "loss": loss, "accuracy": accuracy}, training_op


def _training_op(config, loss):
    """``optimizer.minimize(loss)`` in two halves, for the clipping cell's ``clip_by_value``
    between them; with the learning-rate cell's ``exponential_decay``."""
    learning_rate, global_step = config.learning_rate, None
    if config.decay_steps:
        global_step = tf1.Variable(0, trainable=False, name="global_step")
        learning_rate = tf1.train.exponential_decay(learning_rate, global_step, config.decay_steps, config.decay_rate)
    if config.optimizer == "momentum":
        optimizer = tf1.train.MomentumOptimizer(learning_rate, momentum=config.optimizer_momentum)
    else:
        optimizer = tf1.train.GradientDescentOptimizer(learning_rate)
    var_list = None
    if config.train_scope:  # the freezing cell's var_list: the layers that still learn
        var_list = tf1.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES, scope=config.train_scope)
    grads_and_vars = optimizer.compute_gradients(loss, var_list=var_list)
    grads_and_vars = [(network.clip_gradient(config, grad), var) for grad, var in grads_and_vars]
    return optimizer.apply_gradients(grads_and_vars, global_step=global_step, name="training_op")


def _max_norm_clips(config, variables):
    """The max-norm cells' clip assigns for each hidden kernel, run after every step."""
    clips = []
    with tf.name_scope("max_norm"):
        for layer in network.max_norm_layers(config):
            kernel = variables[f"{layer.dense}/kernel"]
            clips.append(tf1.assign(kernel, network.max_norm_clip(config, kernel.value()), name=layer.dense).op)
            tf1.add_to_collection("max_norm", clips[-1])
    return clips


def set_input_statistics(sess, h, X_train):
    """The SELU cell's ``means`` and ``stds`` of the training set, into ``h.input_statistics``."""
    means = X_train.mean(axis=0, keepdims=True)
    stds = X_train.std(axis=0, keepdims=True) + 1e-10
    for variable, value in zip(h.input_statistics, (means[0], stds[0])):
        sess.run(variable.initializer, {variable.initializer.inputs[1]: value})  # Variable.load, unwarned


def kernel_initializer(kind, seed):
    if kind == "he":  # tf.variance_scaling_initializer() with TF1's defaults
        return tf1.initializers.variance_scaling(scale=1.0, mode="fan_in", distribution="truncated_normal", seed=seed)
    return tf1.initializers.glorot_uniform(seed=seed)  # tf.layers' default kernel initializer


def _variables(config, clock, start=0):
    """The network's variables from layer ``start`` on, by name, in tf.layers' order, each
    kernel with the op seed TF1 gave it (``clock``)."""
    variables = {}

    def variable(name, shape, initializer, trainable=True):
        variables[name] = tf1.get_variable(name, shape, tf.float32, initializer=initializer, trainable=trainable)

    n_in = config.layer_sizes[start]
    if config.dropout_rate and not start:
        clock.dropout(network.INPUT_DROPOUT)
    for layer in network.layers(config)[start:]:
        seed = clock.dense(layer.dense, layer.units, config.initializer, layer.regularizer)
        variable(f"{layer.dense}/kernel", [n_in, layer.units], kernel_initializer(config.initializer, seed))
        variable(f"{layer.dense}/bias", [layer.units], tf1.zeros_initializer())
        if layer.batch_norm:
            clock.batch_norm(layer.units)
            for stat in ("gamma", "beta", "moving_mean", "moving_variance"):
                init = tf1.ones_initializer() if stat in ("gamma", "moving_variance") else tf1.zeros_initializer()
                variable(f"{layer.batch_norm}/{stat}", [layer.units], init, trainable=not stat.startswith("moving"))
        if not layer.last:
            clock.activation(config.activation)
        if layer.dropout:
            clock.dropout(layer.dropout)
        if layer.dense == config.stop_gradient_after:
            clock.stop_gradient()
        n_in = layer.units
    if config.standardize_inputs and not start:  # not the book's graph: set from the data, not seeded
        for name, init in ((network.INPUT_MEAN, tf1.zeros_initializer()), (network.INPUT_STD, tf1.ones_initializer())):
            variable(name, [config.n_inputs], init, trainable=False)
    return variables


def _batch_norm_statistics(z, training, variables, name, momentum):
    """TF1's non-fused batch norm: the batch moments when ``training``, else the moving statistics,
    by a ``cond``; the moving averages' updates, in ``cond``s on ``training``, in ``UPDATE_OPS``."""
    moving_mean, moving_variance = variables[f"{name}/moving_mean"], variables[f"{name}/moving_variance"]
    batch_mean, batch_variance = tf1.nn.moments(z, [0])
    mean = tf1.cond(training, lambda: batch_mean, lambda: tf.identity(moving_mean.value()))
    variance = tf1.cond(training, lambda: batch_variance, lambda: tf.identity(moving_variance.value()))
    for var, value in ((moving_mean, mean), (moving_variance, variance)):
        update = tf1.cond(
            training,
            lambda var=var, value=value: _assign_moving_average(var, value, momentum),
            lambda var=var: tf.identity(var.value()),
        )
        tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, update)
    return mean, variance


def _assign_moving_average(variable, value, momentum):
    with tf.name_scope("AssignMovingAvg") as scope:
        return tf1.assign_sub(variable, network.moving_average_delta(variable, value, momentum), name=scope)
