"""The default training loop: a whole epoch of the book's steps compiled by XLA, in one Session call.

The book runs one ``session.run`` per mini-batch; here the steps of an epoch (or of a part of it)
run in a ``tf.while_loop`` inside a ``tf.function(jit_compile=True)`` added to the same graph,
over the same variables. It is the book's step, computed the same way:

* the batches are the rows of the epoch's ``np.random.permutation`` that the book's
  ``shuffle_batch`` would feed, gathered in-graph from the training set held in the graph as its
  raw uint8 pixels (local variables of this loop, never saved) and scaled as the book scales
  them, ``pixels / 255`` in float32;
* forward pass, ``tf.gradients`` of the same loss (the mean cross-entropy, plus the l1 cells'
  penalty), gradient descent ``var -= learning_rate * grad`` (the gradient clipped by value in
  the gradient-clipping cell), and the batch-norm moving averages
  ``moving -= (moving - batch_stat) * (1 - momentum)``, with the batch statistics of the same step;
* the steps run one after another (XLA's while loop is sequential), each seeing the previous
  step's variables, like consecutive ``session.run`` calls. The values are carried through the
  loop and assigned to the variables when the call ends.

Pixels that are 0 in every training image (69 of MNIST's 784: the borders) are left out of the
step (unless an l1 penalty moves their rows, or the inputs are scaled): the training set is held
without those columns, and the first kernel is carried without their rows. Their rows would
only ever be updated by ``-= learning_rate * 0``, so they keep their initial values exactly, as in
the book's loop, and they are written back unchanged; every other product and sum is the same,
with less work (``benchmarks/ab_step.py`` compares the loop with and without it). Validation and
test images still use all 784 inputs.

ELU is computed as TensorFlow's CPU ``Elu`` kernel computes it (``network.elu_as_cpu_kernel``), not
through XLA's lowering of ``tf.nn.elu`` (``expm1``), so its values are the per-step loop's.

XLA fuses the element-wise ops and schedules the matrix products itself, so the last bits of the
variables differ from the per-step Session loop (``--feed-dict``; the tests state the measured
tolerance), while the book's validation table comes out exactly, bit-identical
from run to run and under any thread setting (tests/test_training.py). Validation, test accuracy,
restores and the book's recipe all use the ordinary graph, untouched by this module.

``np.array_split`` makes batches of two sizes when the batch size does not divide the training
set (q + 1 rows for the first r batches, q for the rest); each size gets its own call and index
matrix, so all shapes are static, as XLA needs. :meth:`XlaEpochLoop.compile` compiles the loop
for every batch size of an epoch before the first step, so it counts as start-up,
as the JAX peer's ahead-of-time compile does, and the first epoch is timed like the others.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import tensorflow as tf

from . import compile_cache, network
from .graph import clip_gradient, network_loss

tf1 = tf.compat.v1


def _train_step(config, params, X, y, elu_as_cpu_kernel=True):
    """One gradient-descent step on ``(X, y)`` from ``params`` (variable name -> value); returns
    the batch's mean loss and the new values."""
    moments = []

    def statistics(layer, z):  # the batch's, which also move the moving averages
        mean, variance = tf1.nn.moments(z, [0])
        moments.append((layer.batch_norm, mean, variance))
        return mean, variance

    logits = network.forward(config, X, params.__getitem__, statistics, elu_as_cpu_kernel=elu_as_cpu_kernel)
    loss = network_loss(config, y, logits, params.__getitem__)
    trainables = network.trainable_names(config)
    grads = tf.gradients(loss, [params[name] for name in trainables])
    lr = tf.constant(config.learning_rate, tf.float32)
    new = dict(params)
    for name, grad in zip(trainables, grads):
        new[name] = params[name] - clip_gradient(config, grad) * lr
    for bn, mean, variance in moments:
        for stat, value in (("moving_mean", mean), ("moving_variance", variance)):
            name = f"{bn}/{stat}"
            new[name] = params[name] - network.moving_average_delta(params[name], value, config.momentum)
    return loss, new


def _load_data(sess, arrays):
    """Each of ``arrays`` (name -> array) held in the graph, all loaded by one Session call: as
    local variables, not global ones, so the Saver never writes the data set into checkpoints, and
    of no fixed shape, so they can be emptied. Returns the variables, in the same order."""
    variables, feeds = [], {}
    for name, array in arrays.items():
        value = tf1.placeholder(tf.as_dtype(array.dtype), [None] * np.ndim(array), name=name + "_in")
        variables.append(
            tf1.Variable(
                value, trainable=False, validate_shape=False, name=name, collections=[tf1.GraphKeys.LOCAL_VARIABLES]
            )
        )
        feeds[value] = array
    sess.run([v.initializer for v in variables], feeds)
    return variables


class XlaEpochLoop:
    """Runs steps ``start..stop-1`` of the current epoch in one Session call per batch size.

    ``start_epoch(batches)`` takes the epoch's index arrays (``trainer.batch_indices``);
    ``run(start, stop)`` returns the steps' losses, ending early right after the first
    non-finite one (nothing after it is computed)."""

    chunk = None  # whole epochs per call

    def __init__(self, sess, h, config, train_pixels, y_train, *, drop_unused_inputs=True, elu_as_cpu_kernel=True):
        self.sess = sess
        variables = {v.op.name: v for v in h.model_variables}
        names = list(variables)
        first_kernel = f"{network.layers(config)[0].dense}/kernel"
        # an l1 penalty moves those rows too, and input scaling makes the inputs non-zero
        drop_unused_inputs = drop_unused_inputs and not (config.l1_scale or config.standardize_inputs)
        in_use = train_pixels.max(axis=0) != 0 if drop_unused_inputs else np.ones(train_pixels.shape[1], bool)
        self.used_inputs = used = np.flatnonzero(in_use).astype(np.int32)
        with h.graph.as_default(), tf.name_scope("xla_epoch"):
            # The book scales with NumPy, pixels / 255 in float32. A divisor held in a variable
            # cannot be folded into a multiplication by 1/255 (whose product differs from the
            # quotient in the last bit for some pixels), so the step divides as the book does.
            X_data, y_data, pixel_scale = _load_data(
                sess,
                {
                    "train_pixels_used": (
                        train_pixels if len(used) == train_pixels.shape[1] else np.take(train_pixels, used, axis=1)
                    ),
                    "y_train": y_train,
                    "pixel_scale": np.float32(255.0),
                },
            )
            # after the last epoch the training set is not needed: give its memory back
            self._release = tf.group(
                tf1.assign(X_data, tf.zeros([0, len(used)], tf.uint8), validate_shape=False),
                tf1.assign(y_data, tf.zeros([0], y_data.dtype), validate_shape=False),
            )
            self.rows = tf1.placeholder(tf.int32, (None, None), name="batches")
            self.start = tf1.placeholder(tf.int32, (), name="start")
            self.stop = tf1.placeholder(tf.int32, (), name="stop")

            @tf.function(jit_compile=True, autograph=False)
            def run_steps(rows, start, stop):
                # the variables' values are carried through the loop and assigned once at the end;
                # the first kernel only by its rows for the inputs in use (the others never change)
                cols = tf.constant(used)[:, None]

                def body(i, losses, finite, *values):
                    idx = rows[i]
                    X = tf.cast(tf.gather(X_data, idx), tf.float32) / pixel_scale
                    loss, new = _train_step(
                        config, dict(zip(names, values)), X, tf.gather(y_data, idx), elu_as_cpu_kernel
                    )
                    losses = tf.tensor_scatter_nd_update(losses, [[i]], [loss])
                    return (i + 1, losses, tf.math.is_finite(loss), *[new[name] for name in names])

                initial = {name: v.value() for name, v in variables.items()}
                initial[first_kernel] = tf.gather_nd(initial[first_kernel], cols)
                losses = tf.zeros([tf.shape(rows)[0]], tf.float32)
                i, losses, _, *values = tf.while_loop(
                    lambda i, losses, finite, *values: (i < stop) & finite,
                    body,
                    [start, losses, tf.constant(True), *[initial[name] for name in names]],
                    parallel_iterations=1,
                )
                final = dict(zip(names, values))
                final[first_kernel] = tf.tensor_scatter_nd_update(
                    variables[first_kernel].value(), cols, final[first_kernel]
                )
                with tf.control_dependencies([variables[name].assign(final[name]) for name in names]):
                    return tf.identity(losses), tf.identity(i)

            self.fetches = run_steps(self.rows, self.start, self.stop)  # (losses, steps reached)
        self.groups = []

    def compile(self, n_train, batch_size):
        """Compile for the index-matrix shapes of an epoch (the same every epoch) with calls that
        run no step; returns the seconds it took. The calls fetch what :meth:`run` fetches, so the
        Session also prepares the executor the steps will use, which the first epoch would pay
        for otherwise. Draws nothing from the shuffling random state."""
        t = time.perf_counter()
        self.start_epoch(np.array_split(np.arange(n_train), n_train // batch_size))
        with compile_cache.compiling():
            for _, rows in self.groups:
                self.sess.run(self.fetches, {self.rows: rows, self.start: 0, self.stop: 0})
        self.groups = []
        return time.perf_counter() - t

    def release(self):
        """Drop the loop's copy of the training set; no step runs after this."""
        self.sess.run(self._release)

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
            if reached < hi:  # a loss was not finite: stop there
                break
        return out
