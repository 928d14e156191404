"""The network's math, written once: the forward pass, the loss and accuracy, the batch-norm
moving averages, the gradient-descent step, clipping, l1 and max-norm, and the pixel scaling.
The TF1 graph (``graph.py``), the XLA loop (``xla_loop.py``) and the export (``restored.py``)
supply only what differs: variables or carried values, and the statistics batch norm uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from math import e, erfc, exp, pi, sqrt

import tensorflow as tf

tf1 = tf.compat.v1
EPSILON = 1e-3  # tf.layers.batch_normalization's default, which the book keeps


@dataclass(frozen=True)
class Layer:
    dense: str  # "hidden1", "hidden2", ..., "outputs"
    batch_norm: str | None  # "batch_normalization", "batch_normalization_1", ...; None without
    units: int
    last: bool  # the logits: no activation after it
    dropout: str | None = None  # the dropout after the activation: "dropout_1", ...; None without
    regularizer: str | None = None  # the kernel_regularizer's kind ("l1", "max_norm"), or None

    @property
    def variables(self):
        """The layer's variable names, in the order TF1's tf.layers creates them."""
        names = [f"{self.dense}/kernel", f"{self.dense}/bias"]
        if self.batch_norm:
            names += [f"{self.batch_norm}/{v}" for v in ("gamma", "beta", "moving_mean", "moving_variance")]
        return names


def layers(config):
    """The network's layers with the book's names: ``hidden1`` + ``batch_normalization``,
    ``hidden2`` + ``batch_normalization_1``, ..., ``outputs`` + ``batch_normalization_<n>``."""
    sizes = (*config.hidden, config.n_outputs)
    dense = [f"hidden{i}" for i in range(1, len(config.hidden) + 1)] + ["outputs"]
    if config.new_layers_from:  # new layers on an imported graph: new_hidden4, new_outputs
        dense = [("new_" if i >= config.new_layers_from else "") + name for i, name in enumerate(dense)]
    result = []
    for i, (name, units) in enumerate(zip(dense, sizes)):
        last = i == len(sizes) - 1
        regularizer = None
        if config.l1_scale and config.l1_form == "regularizer":
            regularizer = "l1"
        elif config.max_norm and config.max_norm_form == "regularizer" and not last:
            regularizer = "max_norm"  # the chapter leaves the logits unclipped
        bn = ("batch_normalization" + (f"_{i}" if i else "")) if config.batch_norm else None
        dropout = f"dropout_{i + 1}" if config.dropout_rate and not last else None
        result.append(Layer(name, bn, units, last, dropout, regularizer))
    return result


INPUT_DROPOUT = "dropout"  # tf.layers' name for the dropout on the inputs
INPUT_MEAN, INPUT_STD = "standardize/mean", "standardize/std"


def variable_names(config):
    names = [name for layer in layers(config) for name in layer.variables]
    return names + ([INPUT_MEAN, INPUT_STD] if config.standardize_inputs else [])


def trainable_names(config):
    """The variables gradient descent updates: not the moving statistics or the input scaling."""
    return [name for layer in layers(config) for name in layer.variables if "/moving_" not in name]


def variable_shapes(config):
    """Variable name -> shape, for every variable :func:`variable_names` lists."""
    shapes, n_in = {}, config.n_inputs
    for layer in layers(config):
        shapes.update({name: [layer.units] for name in layer.variables})
        shapes[f"{layer.dense}/kernel"], n_in = [n_in, layer.units], layer.units
    if config.standardize_inputs:
        shapes[INPUT_MEAN] = shapes[INPUT_STD] = [config.n_inputs]
    return shapes


def leaky_relu(z, name=None):
    """The chapter's plain network: ``tf.maximum(0.01 * z, z)``."""
    return tf.maximum(0.01 * z, z, name=name)


@tf.custom_gradient
def elu_as_cpu_kernel(z):
    """``tf.nn.elu`` as TensorFlow's CPU kernel computes it, ``z < 0 ? exp(z) - 1 : z``, with its
    gradient: XLA lowers ``tf.nn.elu`` through ``expm1``, whose last bits differ."""
    a = tf.where(z < 0, tf.exp(z) - 1, z)
    return a, lambda grad: tf.raw_ops.EluGrad(gradients=grad, outputs=a)


# The SELU cell's alpha and scale for mean 0 and standard deviation 1 (equation 14 of Klambauer et
# al., 2017), by the cell's own formulas.
SELU_ALPHA = -sqrt(2 / pi) / (erfc(1 / sqrt(2)) * exp(1 / 2) - 1)
SELU_SCALE = (
    (1 - erfc(1 / sqrt(2)) * sqrt(e))
    * sqrt(2 * pi)
    * (2 * erfc(sqrt(2)) * e**2 + pi * erfc(1 / sqrt(2)) ** 2 * e - 2 * (2 + pi) * erfc(1 / sqrt(2)) * sqrt(e) + pi + 2)
    ** (-1 / 2)
)


def selu(z, scale=SELU_SCALE, alpha=SELU_ALPHA, elu=tf.nn.elu):
    """The SELU cell's ``selu()``, with scale and alpha in their places: the cell's source swaps
    them, but its printed table (epoch 0: 0.923) was made without the swap (0.9388 with it)."""
    return scale * tf1.where(z >= 0.0, z, alpha * elu(z))


def activation(config, elu_as_cpu_kernel_=False):
    elu = elu_as_cpu_kernel if elu_as_cpu_kernel_ else tf.nn.elu
    return {"elu": elu, "leaky_relu": leaky_relu, "relu": tf.nn.relu, "selu": partial(selu, elu=elu)}[config.activation]


def standardize(config, X, params):
    """The SELU cell's ``(X - means) / stds``; the training set's statistics are variables."""
    if not config.standardize_inputs:
        return X
    return (X - params(INPUT_MEAN)) / params(INPUT_STD)


def forward(config, X, params, statistics, *, dropout=None, outputs=None, start=0, elu_as_cpu_kernel=False):
    """The logits of ``config``'s network for the inputs ``X``. ``params(name)`` gives a variable's
    value (``"hidden1/kernel"``); ``statistics(layer, z)`` the ``(mean, variance)`` that normalise
    ``z`` at a batch-norm layer; ``dropout(name, z)``, when training, applies a dropout layer.
    ``outputs`` receives each hidden layer's output by name, before any ``tf.stop_gradient``. From
    ``start`` on, ``X`` is layer ``start - 1``'s output. ``X`` may hold only some pixel columns
    when ``params`` gives the first kernel's matching rows."""
    act = activation(config, elu_as_cpu_kernel)
    z = X if start else standardize(config, X, params)
    if dropout and config.dropout_rate and not start:
        z = dropout(INPUT_DROPOUT, z)
    for layer in layers(config)[start:]:
        # names as the book's tf.layers code makes them: the activation inside the dense layer
        # (dnn/hidden1/Maximum), or after its batch norm (dnn/Elu)
        with tf.name_scope(layer.dense):
            z = tf.nn.bias_add(tf.matmul(z, params(f"{layer.dense}/kernel")), params(f"{layer.dense}/bias"))
            if not layer.batch_norm and not layer.last:
                z = act(z)
        if layer.batch_norm:
            bn = layer.batch_norm
            with tf.name_scope(bn):
                mean, variance = statistics(layer, z)
                z = tf.nn.batch_normalization(z, mean, variance, params(f"{bn}/beta"), params(f"{bn}/gamma"), EPSILON)
            if not layer.last:
                z = act(z)
        if dropout and layer.dropout:
            with tf.name_scope(layer.dropout):
                z = dropout(layer.dropout, z)
        if outputs is not None and not layer.last:
            outputs[layer.dense] = z
        if layer.dense == config.stop_gradient_after:  # the lower layers stay as they are
            z = tf.stop_gradient(z, name=f"{layer.dense}_stop")
    return z


def tf1_dropout(z, rate, seed):
    """TF1's ``nn.dropout(z, keep_prob=1 - rate)``: keep where ``floor(keep_prob + u)`` is 1, for
    ``u`` uniform in [0, 1) drawn with ``seed``; the kept values divided by ``keep_prob``."""
    keep_prob = tf.convert_to_tensor(1 - rate, dtype=z.dtype, name="keep_prob")
    random_tensor = keep_prob + tf1.random_uniform(tf.shape(z), seed=seed, dtype=z.dtype)
    return tf.math.divide(z, keep_prob) * tf.floor(random_tensor)


def l1_penalty(config, params):
    """The l1 cells' penalty: the hand-written ``scale * (sum|W1| + sum|W2| + ...)``, or tf.layers'
    ``kernel_regularizer`` terms ``scale * sum|W|``, a list of one per layer, for ``add_n``."""
    kernels = [params(f"{layer.dense}/kernel") for layer in layers(config)]
    if config.l1_form == "loss":
        total = tf.reduce_sum(tf.abs(kernels[0]))
        for kernel in kernels[1:]:
            total = total + tf.reduce_sum(tf.abs(kernel))
        return config.l1_scale * total
    return [l1_regularizer(config.l1_scale)(kernel) for kernel in kernels]


def l1_regularizer(scale, scope=None):
    """TF 1.x's ``tf.contrib.layers.l1_regularizer``, op for op: ``scale * sum(|weights|)``."""

    def l1(weights):
        with tf1.name_scope(scope, "l1_regularizer", [weights]) as name:
            my_scale = tf.convert_to_tensor(scale, dtype=weights.dtype.base_dtype, name="scale")
            return tf.multiply(my_scale, tf.reduce_sum(tf.abs(weights)), name=name)

    return l1


def max_norm_layers(config):
    """The hidden layers whose kernels the max-norm cells clip after each step."""
    return [layer for layer in layers(config) if not layer.last] if config.max_norm else []


def moving_average_delta(moving, batch_stat, momentum):
    """``(moving - batch_stat) * (1 - momentum)``, 1 - momentum in Python double, then float32, as
    TF1 did; the moving statistic is ``assign_sub``-ed by it."""
    decay = tf.convert_to_tensor(1.0 - momentum, dtype=tf.float32, name="decay")
    return (moving - batch_stat) * decay


def loss(config, y, logits, params):
    """The mean cross-entropy (``loss/loss``), plus the l1 cells' penalty."""
    xentropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    if not config.l1_scale:
        return tf.reduce_mean(xentropy, name="loss")
    base_loss = tf.reduce_mean(xentropy, name="avg_xentropy")
    penalty = l1_penalty(config, params)
    if config.l1_form == "loss":
        return tf.add(base_loss, penalty, name="loss")
    return tf.add_n([base_loss, *penalty], name="loss")


def accuracy_and_predictions(logits, y):
    """The book's ``reduce_mean(cast(in_top_k(logits, y, 1)))`` and the arg-max class, named."""
    accuracy = tf.reduce_mean(tf.cast(tf1.nn.in_top_k(logits, y, 1), tf.float32), name="accuracy")
    return accuracy, tf.argmax(logits, axis=1, name="predictions")


def clip_gradient(config, grad):
    """The gradient-clipping cell's ``tf.clip_by_value(grad, -threshold, threshold)``, if any."""
    if not config.clip_gradients:
        return grad
    return tf.clip_by_value(grad, -config.clip_gradients, config.clip_gradients)


def max_norm_clip(config, kernel):
    """The max-norm cells' ``tf.clip_by_norm(weights, threshold, axes=1)``."""
    return tf.clip_by_norm(kernel, clip_norm=config.max_norm, axes=1)


def scale_pixels(pixels, divisor):
    """uint8 pixels as the book scales them, ``pixels / 255`` in float32. ``divisor`` holds 255
    in a variable: Grappler and XLA fold a division by a constant into a multiplication by
    1/255, whose product differs from the quotient in the last bit for some pixels."""
    return tf.cast(pixels, tf.float32) / divisor


def sgd_step(config, params, X, y, elu_as_cpu_kernel=True):
    """One gradient-descent step on ``(X, y)`` from ``params`` (name -> value), clipped where the
    cell clips, and the moving averages moved. Returns the batch's mean loss and the new values."""
    moments = []

    def statistics(layer, z):  # the batch's, which also move the moving averages
        mean, variance = tf1.nn.moments(z, [0])
        moments.append((layer.batch_norm, mean, variance))
        return mean, variance

    logits = forward(config, X, params.__getitem__, statistics, elu_as_cpu_kernel=elu_as_cpu_kernel)
    batch_loss = loss(config, y, logits, params.__getitem__)
    trainables = trainable_names(config)
    grads = tf.gradients(batch_loss, [params[name] for name in trainables])
    lr = tf.constant(config.learning_rate, tf.float32)
    new = dict(params)
    for name, grad in zip(trainables, grads):
        new[name] = params[name] - clip_gradient(config, grad) * lr
    for bn, mean, variance in moments:
        for stat, value in (("moving_mean", mean), ("moving_variance", variance)):
            name = f"{bn}/{stat}"
            new[name] = params[name] - moving_average_delta(params[name], value, config.momentum)
    return batch_loss, new
