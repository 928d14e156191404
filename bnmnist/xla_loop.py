"""The default training loop: a whole epoch of the book's steps compiled by XLA, in one Session call.

The book runs one ``session.run`` per mini-batch; here the steps of an epoch (or of a part of it)
run in a ``tf.while_loop`` inside a ``tf.function(jit_compile=True)`` added to the same graph,
over the same variables. It is the book's step, computed the same way:

* the batches are the rows of the epoch's ``np.random.permutation`` that the book's
  ``shuffle_batch`` would feed, gathered in-graph from the training set held in the graph;
* forward pass, ``tf.gradients`` of the same mean cross-entropy, gradient descent
  ``var -= learning_rate * grad``, and the batch-norm moving averages
  ``moving -= (moving - batch_stat) * (1 - momentum)``, with the batch statistics of the same step;
* the steps run one after another (XLA's while loop is sequential), each seeing the previous
  step's variables, like consecutive ``session.run`` calls.

ELU is computed as TensorFlow's CPU ``Elu`` kernel computes it (``exp(z) - 1`` below zero, with the
kernel's ``EluGrad``), not through XLA's lowering of ``tf.nn.elu`` (``expm1``): closer to the
per-step loops, and about 4% faster per step here (``benchmarks/ab_elu.py``).

XLA fuses the element-wise ops and schedules the matrix products itself, so the last bits of the
variables differ from the per-step Session loop (``--loop graph`` / ``--feed-dict``; the tests
state the measured tolerance), while the book's validation table comes out exactly, bit-identical
from run to run and under any thread setting (tests/test_training.py). Validation, test accuracy,
restores and the book's recipe all use the ordinary graph, untouched by this module.

``np.array_split`` makes batches of two sizes when the batch size does not divide the training
set (q + 1 rows for the first r batches, q for the rest); each size gets its own call and index
matrix, so all shapes are static, as XLA needs. :meth:`XlaEpochLoop.compile` compiles the loop
for every batch size of an epoch before the first step (about 2 s here), so it counts as start-up,
as the JAX peer's ahead-of-time compile does, and the first epoch is timed like the others.
"""
from __future__ import annotations

import itertools
import time

import numpy as np
import tensorflow as tf

from . import layers
from .graph import ACTIVATIONS, layer_names

tf1 = tf.compat.v1


@tf.custom_gradient
def _elu_as_tf_kernel(z):
    """``tf.nn.elu`` as TensorFlow's CPU kernel computes it: ``z < 0 ? exp(z) - 1 : z``."""
    a = tf.where(z < 0, tf.exp(z) - 1, z)
    return a, lambda grad: tf.raw_ops.EluGrad(gradients=grad, outputs=a)


XLA_ACTIVATIONS = dict(ACTIVATIONS, elu=_elu_as_tf_kernel)


def _train_step(config, variables, X, y):
    """One gradient-descent step on ``(X, y)``; returns the batch's mean loss once every
    variable has its new value."""
    activation = XLA_ACTIVATIONS[config.activation]
    trainables, moving_updates = [], []
    z = X
    names = layer_names(config)
    for i, (dense, bn) in enumerate(names):
        kernel, bias = variables[f"{dense}/kernel"], variables[f"{dense}/bias"]
        k, b = kernel.value(), bias.value()
        trainables += [(kernel, k), (bias, b)]
        z = tf.nn.bias_add(tf.matmul(z, k), b)
        if bn is not None:
            gamma, beta = variables[f"{bn}/gamma"], variables[f"{bn}/beta"]
            g, bt = gamma.value(), beta.value()
            trainables += [(gamma, g), (beta, bt)]
            mean, variance = tf1.nn.moments(z, [0])
            moving_updates += [(variables[f"{bn}/moving_mean"], mean),
                               (variables[f"{bn}/moving_variance"], variance)]
            z = tf.nn.batch_normalization(z, mean, variance, bt, g, layers.EPSILON)
        if i < len(names) - 1:
            z = activation(z)
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=z))
    grads = tf.gradients(loss, [value for _, value in trainables])
    lr = tf.constant(config.learning_rate, tf.float32)
    updates = [var.assign_sub(grad * lr) for (var, _), grad in zip(trainables, grads)]
    updates += [var.assign_sub(layers.moving_average_delta(var.value(), stat, config.momentum))
                for var, stat in moving_updates]
    with tf.control_dependencies(updates):
        return tf.identity(loss)


class XlaEpochLoop:
    """Runs steps ``start..stop-1`` of the current epoch in one Session call per batch size.

    ``start_epoch(batches)`` takes the epoch's index arrays (``trainer.batch_indices``);
    ``run(start, stop)`` returns the steps' losses, ending early right after the first
    non-finite one (nothing after it is computed)."""
    chunk = None                        # whole epochs per call

    def __init__(self, sess, h, config):
        self.sess = sess
        variables = {v.op.name: v for v in h.model_variables}
        X_data, y_data = h.data.X_data, h.data.y_data
        with h.graph.as_default(), tf.name_scope("xla_epoch"):
            self.rows = tf1.placeholder(tf.int32, (None, None), name="batches")
            self.start = tf1.placeholder(tf.int32, (), name="start")
            self.stop = tf1.placeholder(tf.int32, (), name="stop")

            @tf.function(jit_compile=True, autograph=False)
            def run_steps(rows, start, stop):
                def body(i, losses, finite):
                    idx = rows[i]
                    loss = _train_step(config, variables, tf.gather(X_data, idx), tf.gather(y_data, idx))
                    losses = tf.tensor_scatter_nd_update(losses, [[i]], [loss])
                    return i + 1, losses, tf.math.is_finite(loss)
                losses = tf.zeros([tf.shape(rows)[0]], tf.float32)
                i, losses, _ = tf.while_loop(lambda i, losses, finite: (i < stop) & finite, body,
                                             [start, losses, tf.constant(True)], parallel_iterations=1)
                return losses, i

            self.fetches = run_steps(self.rows, self.start, self.stop)      # (losses, steps reached)
        self.groups = []

    def compile(self, n_train, batch_size):
        """Compile for the index-matrix shapes of an epoch (the same every epoch) with calls that
        run no step; returns the seconds it took. The calls fetch what :meth:`run` fetches, so the
        Session also prepares the executor the steps will use (a quarter of a second here, paid
        by the first epoch otherwise). Draws nothing from the shuffling random state."""
        t = time.perf_counter()
        self.start_epoch(np.array_split(np.arange(n_train), n_train // batch_size))
        for _, rows in self.groups:
            self.sess.run(self.fetches, {self.rows: rows, self.start: 0, self.stop: 0})
        self.groups = []
        return time.perf_counter() - t

    def start_epoch(self, batches):
        """Group the batches by size: (index of the group's first step, index matrix)."""
        self.groups, first = [], 0
        for _, group in itertools.groupby(batches, key=len):
            rows = np.stack(list(group)).astype(np.int32)
            self.groups.append((first, rows))
            first += len(rows)

    def run(self, start, stop):
        out = []
        for first, rows in self.groups:
            lo, hi = max(start, first) - first, min(stop, first + len(rows)) - first
            if lo >= hi:
                continue
            losses, reached = self.sess.run(self.fetches, {self.rows: rows, self.start: lo, self.stop: hi})
            out += [float(x) for x in losses[lo:reached]]
            if reached < hi:            # a loss was not finite: stop there
                break
        return out
