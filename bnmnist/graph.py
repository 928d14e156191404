"""Build the book's network in a fresh ``tf.Graph`` and return named handles to it.

The names are the book's, and every tensor a user fetches after a restore has an explicit one:

====================  ============================================================
``X:0``               float32 (None, 784) pixels scaled to [0, 1]
``y:0``               int32 (None,) labels
``training:0``        bool, ``placeholder_with_default(False)`` (batch norm or dropout only)
``dnn/logits:0``      float32 (None, 10)
``dnn/probabilities:0`` softmax of the logits
``eval/predictions:0``  int64 arg-max class
``loss/loss:0``       mean cross-entropy
``eval/accuracy:0``   mean of ``in_top_k(logits, y, 1)``
``train/training_op`` the training step (run it with ``UPDATE_OPS``, then ``max_norm``)
====================  ============================================================

The chapter's other cells add their constructs here: the optimizer, gradient clipping and the
learning-rate schedule (``train/global_step``), the l1 penalty (``loss/avg_xentropy`` plus it),
dropout's ``cond`` on ``training``, the max-norm clips (``max_norm/hidden1``, ... in the
collection ``max_norm``), and for the reuse cells the partial graph (``stop_gradient``, the
optimizer's ``var_list``). :func:`training_graph` imports a source run's graph where a reuse
cell does; its new layers' step is ``new_train/training_op``.

The network's math is :func:`bnmnist.network.forward`; this module supplies its variables and
the batch-norm statistics of TF1's ``tf.layers.batch_normalization``.

Variables: ``hidden1/kernel``, ``hidden1/bias``, ``batch_normalization/gamma|beta|moving_mean|
moving_variance``, ``hidden2/...``, ``batch_normalization_1/...``, ``outputs/...``,
``batch_normalization_2/...``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import tensorflow as tf

from . import network
from .seeding import TF1OpClock

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


@dataclass
class Handles:
    graph: tf.Graph
    X: tf.Tensor
    y: tf.Tensor
    training: object  # tf.Tensor, or None for a network without batch norm
    logits: tf.Tensor
    probabilities: tf.Tensor
    predictions: tf.Tensor
    loss: tf.Tensor
    accuracy: tf.Tensor
    training_op: object  # tf.Operation, or None for a graph built with train_op=False
    extra_update_ops: list
    init: tf.Operation
    kernel_seeds: dict  # variable name (or dropout layer name) -> op seed given to its random op
    model_variables: list  # every variable of the network, weights and moving statistics
    after_step: list = field(default_factory=list)  # ops the cell runs after each training step
    input_statistics: tuple = ()  # (mean, std) variables of a network that standardises its inputs
    layer_outputs: dict = field(default_factory=dict)  # hidden layer name -> its output tensor


def build_graph(config, train_op=True):
    """A fresh graph for ``config``, the way the book's cell builds it, seeded per ``config.seeding``.

    Without ``train_op`` the ``train`` scope (the optimizer and its gradients) is left out,
    for graphs that only evaluate (a restored model, the epoch-end copy, the export); the
    variables, their seeds and every other name are the same.
    """
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
            loss = network_loss(config, y, logits, params)
        training_op = None
        if train_op:
            with tf.name_scope("train"):
                training_op = _training_op(config, loss)
        after_step = _max_norm_clips(config, variables) if train_op else []
        with tf.name_scope("eval"):
            correct = tf1.nn.in_top_k(logits, y, 1)
            accuracy = tf.reduce_mean(tf.cast(correct, tf.float32), name="accuracy")
            predictions = tf.argmax(logits, axis=1, name="predictions")
        model_variables = list(variables.values())
        # the network's variables, and the optimizer's slots and global step, if any
        init = tf1.variables_initializer(tf1.global_variables(), name="init")
        extra_update_ops = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
    return Handles(
        graph,
        X,
        y,
        training,
        logits,
        probabilities,
        predictions,
        loss,
        accuracy,
        training_op,
        extra_update_ops,
        init,
        dict(clock.seeds),
        model_variables,
        after_step,
        tuple(variables[name] for name in (network.INPUT_MEAN, network.INPUT_STD) if name in variables),
        layer_outputs,
    )


def training_graph(config, resume=False):
    """The graph a run trains: :func:`build_graph`'s; or, for a reuse cell that imports its
    source run's ``.meta`` file, that graph, as the cell does: ``reuse_model`` trains it as it is
    (the same graph :func:`build_graph` makes for the source's network), ``reuse_lower_imported``
    puts new layers on its ``hidden3``. A resumed run rebuilds the same network by code."""
    if config.reuse not in ("model", "lower_imported") or resume:
        return build_graph(config)
    graph = tf.Graph()
    with graph.as_default():
        tf1.set_random_seed(config.seed)  # the cell's reset_graph() before import_meta_graph
        tf1.train.import_meta_graph(config.reuse_from + ".meta")
        variables = {v.op.name: v for v in tf1.global_variables()}
        seeds = {}
        if config.reuse == "model":
            tensors = [graph.get_tensor_by_name(TENSOR_NAMES[k]) for k in ("logits", "probabilities", "predictions")]
            tensors += [graph.get_tensor_by_name(TENSOR_NAMES[k]) for k in ("loss", "accuracy")]
            training_op = graph.get_operation_by_name(TRAINING_OP_NAME)
        else:
            tensors, training_op, seeds = _new_layers_on_imported(config, graph, variables)
        model_variables = [variables[name] for name in network.variable_names(config)]
        init = tf1.variables_initializer(tf1.global_variables(), name="new_init")
    X, y = graph.get_tensor_by_name(TENSOR_NAMES["X"]), graph.get_tensor_by_name(TENSOR_NAMES["y"])
    return Handles(graph, X, y, None, *tensors, training_op, [], init, seeds, model_variables)


def _new_layers_on_imported(config, graph, variables):
    """The new layers of ``config`` from ``config.new_layers_from`` on, on the imported graph's
    hidden layer below them, with the cell's ``new_loss``, ``new_eval`` and ``new_train`` scopes;
    their kernels seeded after every op of the imported graph, as TF1 seeded them."""
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
        loss = network_loss(config, y, logits, params)
    with tf.name_scope("new_eval"):
        accuracy = tf.reduce_mean(tf.cast(tf1.nn.in_top_k(logits, y, 1), tf.float32), name="accuracy")
        predictions = tf.argmax(logits, axis=1, name="predictions")
    with tf.name_scope("new_train"):
        training_op = _training_op(config, loss)
    return [logits, probabilities, predictions, loss, accuracy], training_op, dict(clock.seeds)


def network_loss(config, y, logits, params):
    """The mean cross-entropy, plus the l1 cells' penalty (the XLA loop's step uses it too)."""
    xentropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    if not config.l1_scale:
        return tf.reduce_mean(xentropy, name="loss")
    base_loss = tf.reduce_mean(xentropy, name="avg_xentropy")
    penalty = network.l1_penalty(config, params)
    if config.l1_form == "loss":
        return tf.add(base_loss, penalty, name="loss")
    return tf.add_n([base_loss, *penalty], name="loss")


def _training_op(config, loss):
    """``optimizer.minimize(loss)``, as compute_gradients and apply_gradients so that the
    gradient-clipping cell's ``clip_by_value`` fits between them; with the learning-rate cell's
    ``exponential_decay`` of a ``global_step``."""
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
    grads_and_vars = [(clip_gradient(config, grad), var) for grad, var in grads_and_vars]
    return optimizer.apply_gradients(grads_and_vars, global_step=global_step, name="training_op")


def clip_gradient(config, grad):
    """The gradient-clipping cell's ``tf.clip_by_value(grad, -threshold, threshold)``, if any."""
    if not config.clip_gradients:
        return grad
    return tf.clip_by_value(grad, -config.clip_gradients, config.clip_gradients)


def _max_norm_clips(config, variables):
    """The max-norm cells' ``tf.assign(weights, tf.clip_by_norm(weights, threshold, axes=1))``
    for each hidden kernel, run after every training step; in the collection ``max_norm``."""
    clips = []
    with tf.name_scope("max_norm"):
        for layer in network.max_norm_layers(config):
            kernel = variables[f"{layer.dense}/kernel"]
            clipped = tf.clip_by_norm(kernel.value(), clip_norm=config.max_norm, axes=1)
            clips.append(tf1.assign(kernel, clipped, name=layer.dense).op)
            tf1.add_to_collection("max_norm", clips[-1])
    return clips


def set_input_statistics(sess, h, X_train):
    """The SELU cell's ``means`` and ``stds`` of the training set, computed as the cell does,
    into the graph's input-statistics variables (``h.input_statistics``, which it must have)."""
    means = X_train.mean(axis=0, keepdims=True)
    stds = X_train.std(axis=0, keepdims=True) + 1e-10
    for variable, value in zip(h.input_statistics, (means[0], stds[0])):
        variable.load(value, sess)


def kernel_initializer(kind, seed):
    if kind == "he":
        # tf.variance_scaling_initializer() with TF1 defaults: scale 1, fan_in, truncated normal
        return tf1.initializers.variance_scaling(scale=1.0, mode="fan_in", distribution="truncated_normal", seed=seed)
    if kind == "glorot_uniform":
        return tf1.initializers.glorot_uniform(seed=seed)  # tf.layers' default kernel initializer
    raise ValueError(f"unknown initializer {kind!r}")


def _variables(config, clock, start=0):
    """Every variable of the network (from layer ``start`` on), name -> variable, in the order
    the book's tf.layers code creates them; the clock hands each kernel the op seed TF1 gave it."""
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
            for stat, init, trainable in (
                ("gamma", tf1.ones_initializer(), True),
                ("beta", tf1.zeros_initializer(), True),
                ("moving_mean", tf1.zeros_initializer(), False),
                ("moving_variance", tf1.ones_initializer(), False),
            ):
                variable(f"{layer.batch_norm}/{stat}", [layer.units], init, trainable)
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
    """TF1's non-fused batch norm on 2-D inputs: the batch moments (biased variance) when
    ``training``, else the moving statistics, picked by a ``cond``; the moving averages
    ``moving -= (moving - batch_stat) * (1 - momentum)`` in ``cond``s that only assign when
    ``training`` is True, added to ``UPDATE_OPS``."""
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
