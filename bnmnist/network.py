"""The book's network, written once: per layer a dense product, batch norm, the activation.

:func:`forward` turns inputs, parameters and normalisation statistics into logits for a
:class:`~bnmnist.config.Config`. Every path takes its math from it and supplies only what differs:

* the graph builder (``graph.py``): a ``cond`` on ``training`` picks batch or moving statistics,
  and the moving-average updates go to ``UPDATE_OPS``;
* the XLA epoch step (``xla_loop.py``): the batch moments, and the parameters' values carried from
  the previous step;
* the SavedModel export (``export.py``): the moving statistics.

:func:`layers` names the layers as the book's ``tf.layers`` code does, for all of them.
"""

from __future__ import annotations

from dataclasses import dataclass

import tensorflow as tf

tf1 = tf.compat.v1
EPSILON = 1e-3  # tf.layers.batch_normalization's default, which the book keeps


@dataclass(frozen=True)
class Layer:
    dense: str  # "hidden1", "hidden2", ..., "outputs"
    batch_norm: str | None  # "batch_normalization", "batch_normalization_1", ...; None without
    units: int
    last: bool  # the logits: no activation after it

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
    return [
        Layer(
            name,
            ("batch_normalization" + (f"_{i}" if i else "")) if config.batch_norm else None,
            units,
            i == len(sizes) - 1,
        )
        for i, (name, units) in enumerate(zip(dense, sizes))
    ]


def variable_names(config):
    return [name for layer in layers(config) for name in layer.variables]


def leaky_relu(z, name=None):
    """The chapter's plain network: ``tf.maximum(0.01 * z, z)``."""
    return tf.maximum(0.01 * z, z, name=name)


@tf.custom_gradient
def elu_as_cpu_kernel(z):
    """``tf.nn.elu`` as TensorFlow's CPU kernel computes it, ``z < 0 ? exp(z) - 1 : z``, with the
    kernel's gradient. Under XLA, ``tf.nn.elu`` is lowered through ``expm1`` instead, whose last
    bits differ from the per-step loops' kernel."""
    a = tf.where(z < 0, tf.exp(z) - 1, z)
    return a, lambda grad: tf.raw_ops.EluGrad(gradients=grad, outputs=a)


def activation(config, elu_as_cpu_kernel_=False):
    if config.activation == "elu":
        return elu_as_cpu_kernel if elu_as_cpu_kernel_ else tf.nn.elu
    return leaky_relu


def forward(config, X, params, statistics, *, elu_as_cpu_kernel=False):
    """The logits of ``config``'s network for the inputs ``X``.

    ``params(name)`` gives the value of a variable (``"hidden1/kernel"``); ``statistics(layer, z)``
    gives the ``(mean, variance)`` that normalise ``z``, the output of ``layer``'s dense product,
    at a batch-norm layer. ``X`` may hold only some of the pixel columns when ``params`` gives the
    first kernel's matching rows: the products and sums are the same.

    ``elu_as_cpu_kernel`` computes ELU as TensorFlow's CPU kernel does (:func:`elu_as_cpu_kernel`),
    for code that XLA compiles."""
    act = activation(config, elu_as_cpu_kernel)
    z = X
    for layer in layers(config):
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
    return z


def moving_average_delta(moving, batch_stat, momentum):
    """``(moving - batch_stat) * (1 - momentum)``, with 1 - momentum taken in Python double and
    then float32, as TF1 did. The moving statistic is then ``assign_sub``-ed by it."""
    decay = tf.convert_to_tensor(1.0 - momentum, dtype=tf.float32, name="decay")
    return (moving - batch_stat) * decay
