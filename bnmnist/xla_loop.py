"""The default loop: a whole epoch of the book's steps in one XLA-compiled Session call, a
``tf.while_loop`` of :func:`bnmnist.network.sgd_step` over the epoch's batches on carried values.
The training set lives in the graph as uint8 pixels, without those 0 in every image (their kernel
rows never move). XLA orders some sums its own way: the last bits differ, the printed table not.
"""

from __future__ import annotations

import itertools
import time

import numpy as np
import tensorflow as tf

from . import compile_cache, network

tf1 = tf.compat.v1


def _load_data(sess, arrays):
    """``arrays`` (name -> array) as local variables of no fixed shape, loaded by one Session call:
    the Saver never writes them, and they can be emptied. Returns the variables, in order."""
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
    """The XLA loop as a :class:`bnmnist.trainer.Steps`: one Session call per batch size."""

    chunk = None  # whole epochs per call
    # The step's two shortcuts, each leaving the values as they are (benchmarks/ab_step.py times
    # a subclass without them): the inputs never lit in training left out; ELU as TF's CPU kernel.
    drop_unused_inputs = True
    elu_as_cpu_kernel = True

    def __init__(self, sess, h, config, train_pixels, y_train):
        self.sess = sess
        elu_as_cpu_kernel = self.elu_as_cpu_kernel
        variables = {v.op.name: v for v in h.model_variables}
        names = list(variables)
        first_kernel = f"{network.layers(config)[0].dense}/kernel"
        # an l1 penalty moves those rows too, and input scaling makes the inputs non-zero
        drop_unused_inputs = self.drop_unused_inputs and not (config.l1_scale or config.standardize_inputs)
        in_use = train_pixels.max(axis=0) != 0 if drop_unused_inputs else np.ones(train_pixels.shape[1], bool)
        self.used_inputs = used = np.flatnonzero(in_use).astype(np.int32)
        with h.graph.as_default(), tf.name_scope("xla_epoch"):
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

                def body(i, losses, _finite, *values):
                    idx = rows[i]
                    X = network.scale_pixels(tf.gather(X_data, idx), pixel_scale)
                    loss, new = network.sgd_step(
                        config, dict(zip(names, values)), X, tf.gather(y_data, idx), elu_as_cpu_kernel
                    )
                    losses = tf.tensor_scatter_nd_update(losses, [[i]], [loss])
                    return (i + 1, losses, tf.math.is_finite(loss), *[new[name] for name in names])

                initial = {name: v.value() for name, v in variables.items()}
                initial[first_kernel] = tf.gather_nd(initial[first_kernel], cols)
                losses = tf.zeros([tf.shape(rows)[0]], tf.float32)
                i, losses, _, *values = tf.while_loop(
                    lambda i, _losses, finite, *_values: (i < stop) & finite,
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
        """Compile, and prepare the executor, for an epoch's shapes by calls that run no step and
        draw nothing from the shuffling's random state; returns the seconds it took."""
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
