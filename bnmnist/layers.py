"""``dense`` and ``batch_normalization`` on ``tf.compat.v1`` core ops, replacing ``tf.layers``.

``tf.compat.v1.layers`` raises "not available with Keras 3" on TF 2.16+. These two functions
rebuild the book's layers from core ops with TF1's math, op for op, so the float results and the
gradients' summation order are those of TF1's non-fused batch norm on 2-D inputs:

* ``dense``: ``MatMul`` then ``BiasAdd``; variables ``<name>/kernel`` and ``<name>/bias``.
* ``batch_normalization``: ``nn.moments`` over the batch (biased variance); a ``cond`` on
  ``training`` picks batch or moving statistics; ``nn.batch_normalization`` with epsilon 1e-3;
  the moving averages ``moving -= (moving - batch_stat) * (1 - momentum)`` sit in ``cond``s that
  only assign when ``training`` is True and are added to ``UPDATE_OPS``. Variables
  ``<name>/gamma``, ``beta``, ``moving_mean``, ``moving_variance``.

Each call also advances the :class:`~bnmnist.seeding.TF1OpClock` by the ops TF1 would have made.
"""
from __future__ import annotations

import tensorflow as tf

tf1 = tf.compat.v1
EPSILON = 1e-3


def kernel_initializer(kind, seed):
    if kind == "he":
        # tf.variance_scaling_initializer() with TF1 defaults: scale 1, fan_in, truncated normal
        return tf1.initializers.variance_scaling(scale=1.0, mode="fan_in",
                                                 distribution="truncated_normal", seed=seed)
    if kind == "glorot_uniform":
        return tf1.initializers.glorot_uniform(seed=seed)  # tf.layers' default kernel initializer
    raise ValueError(f"unknown initializer {kind!r}")


def dense(inputs, units, name, clock, initializer="he", activation=None):
    n_in = int(inputs.shape[-1])
    seed = clock.dense(name, units, initializer)
    with tf1.variable_scope(name):
        kernel = tf1.get_variable("kernel", [n_in, units], tf.float32,
                                  initializer=kernel_initializer(initializer, seed))
        bias = tf1.get_variable("bias", [units], tf.float32, initializer=tf1.zeros_initializer())
        outputs = tf.nn.bias_add(tf.matmul(inputs, kernel), bias)
        if activation is not None:
            with clock.same_as_tf1():
                outputs = activation(outputs)
    return outputs


def moving_average_delta(moving, batch_stat, momentum):
    """``(moving - batch_stat) * (1 - momentum)``, with 1 - momentum taken in Python double and
    then float32: what TF1 did. The moving statistic is then ``assign_sub``-ed by it."""
    decay = tf.convert_to_tensor(1.0 - momentum, dtype=tf.float32, name="decay")
    return (moving - batch_stat) * decay


def _assign_moving_average(variable, value, momentum):
    with tf.name_scope("AssignMovingAvg") as scope:
        return tf1.assign_sub(variable, moving_average_delta(variable, value, momentum), name=scope)


def batch_normalization(inputs, training, momentum, name, clock):
    units = int(inputs.shape[-1])
    clock.batch_norm(units)
    with tf1.variable_scope(name):
        gamma = tf1.get_variable("gamma", [units], initializer=tf1.ones_initializer())
        beta = tf1.get_variable("beta", [units], initializer=tf1.zeros_initializer())
        moving_mean = tf1.get_variable("moving_mean", [units], initializer=tf1.zeros_initializer(),
                                       trainable=False)
        moving_variance = tf1.get_variable("moving_variance", [units],
                                           initializer=tf1.ones_initializer(), trainable=False)
        batch_mean, batch_variance = tf1.nn.moments(inputs, [0])
        mean = tf1.cond(training, lambda: batch_mean, lambda: tf.identity(moving_mean.value()))
        variance = tf1.cond(training, lambda: batch_variance,
                            lambda: tf.identity(moving_variance.value()))
        for var, value in ((moving_mean, mean), (moving_variance, variance)):
            update = tf1.cond(training,
                              lambda var=var, value=value: _assign_moving_average(var, value, momentum),
                              lambda var=var: tf.identity(var.value()))
            tf1.add_to_collection(tf1.GraphKeys.UPDATE_OPS, update)
        return tf.nn.batch_normalization(inputs, mean, variance, beta, gamma, EPSILON)
