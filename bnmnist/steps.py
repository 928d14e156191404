"""How an epoch's steps reach the graph: the book's per-step ``feed_dict`` loop, or the XLA loop's
whole epochs (``xla_loop.py``). Both run the same step, the training op with ``UPDATE_OPS`` and
``training=True``, on the batches the trainer draws; the trainer sees only :func:`run_epoch`.
"""

from __future__ import annotations

import signal
import sys

import numpy as np
import tensorflow as tf

tf1 = tf.compat.v1


def session_config(threads=(1, 2)):
    """(intra-op, inter-op) threads; 0 means TensorFlow's default (one per core). The default
    (1, 2) lets independent ops, such as a layer's two gradient matmuls, run at once, while
    single-threaded kernels skip Eigen's sharding overhead at batch 200. The bn network's float
    results do not depend on these settings (tests/test_training.py checks one); some of the
    chapter's batch-50 networks' do, so their presets keep TensorFlow's defaults, as the book."""
    intra, inter = threads
    return tf1.ConfigProto(intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter)


class BookSteps:
    """The book's loop: one ``sess.run([training_op, extra_update_ops], feed_dict=...)`` per
    batch. ``run(start, stop)`` returns the steps' losses, ending right after a non-finite one.

    Each step is that Session call through ``make_callable``, which works out the feeds and
    fetches once instead of at every step: the same executor runs the same kernels, so the values
    are the ``sess.run`` loop's, bit for bit, with less Python per step."""

    chunk = 1  # Ctrl-C and the progress bar see every step

    def __init__(self, sess, h, split, cache_layer=""):
        self.sess, self.h, self.split = sess, h, split
        self.fetches = [h.training_op, h.extra_update_ops, h.loss]
        self.batches = []
        self.cache_layer = cache_layer
        self.inputs, self.X_train = h.X, None
        self.step = self.after_step = None

    def compile(self, n_train, batch_size):
        h = self.h
        if self.cache_layer:  # the caching cell: the frozen layer's outputs, once, fed for X
            from .reuse import cache_outputs

            self.inputs = h.layer_outputs[self.cache_layer]
            self.X_train = cache_outputs(self.sess, h, self.cache_layer, self.split.X_train)
        feeds = [self.inputs, h.y] + ([h.training] if h.training is not None else [])
        self.step = self.sess.make_callable(self.fetches, feed_list=feeds)
        if h.after_step:
            self.after_step = self.sess.make_callable(h.after_step)
        return 0.0  # nothing is compiled ahead

    def start_epoch(self, batches):
        self.batches = batches

    def release(self):
        self.X_train = None  # the training set is the caller's; a cache is this loop's

    def run(self, start, stop):
        h, losses = self.h, []
        X_train = self.split.X_train if self.X_train is None else self.X_train
        training = (True,) if h.training is not None else ()
        for idx in self.batches[start:stop]:
            # sess.run([training_op, extra_update_ops], feed_dict={X: ..., y: ..., training: True})
            losses.append(float(self.step(X_train[idx], self.split.y_train[idx], *training)[2]))
            if self.after_step:  # the max-norm cells' clip_weights.eval(), after the step
                self.after_step()
            if not np.isfinite(losses[-1]):
                break
        return losses


def make_steps(sess, h, config, split):
    """The loop ``config.loop`` names, on the graph ``h`` in ``sess``."""
    if config.loop == "xla":  # holds its own copy of the training set
        from .xla_loop import XlaEpochLoop

        return XlaEpochLoop(sess, h, config, split.train_pixels, split.y_train)
    return BookSteps(sess, h, split, config.stop_gradient_after if config.cache_frozen else "")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; timeout, kill, container stops, job schedulers


class StopOnCtrlC:
    """Turns Ctrl-C and SIGTERM into a flag checked between steps, so no step or checkpoint stops
    half-way. ``raised`` is the signal's number once one came (0 before)."""

    def __init__(self):
        self.raised = 0
        self.previous = {}

    def __enter__(self):
        for signum in STOP_SIGNALS:
            try:
                self.previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave the signals alone
                break
        return self

    def _handle(self, signum, frame):
        self.raised = signum

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            # a second SIGTERM (passed on by a parent script as well as sent to the process group)
            # must not break into a run that is already stopping
            stopping = signum == signal.SIGTERM and self.raised == signal.SIGTERM
            signal.signal(signum, signal.SIG_IGN if stopping else previous)


def progress_bar_available(wanted):
    """A tqdm bar over each epoch's steps: when asked, on a terminal, with tqdm (the 'progress'
    extra) installed."""
    if not wanted or not sys.stdout.isatty():
        return False
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True


def run_epoch(steps, batches, epoch, ctrl_c, bar=False, steps_per_call=None):
    """Run the epoch's ``batches`` through ``steps``; returns their losses, or None when Ctrl-C
    or SIGTERM came first (the epoch is then left unfinished and unsaved). Raises ``FloatingPointError(step,
    loss)`` when a loss is not finite; nothing after it is computed.

    ``steps_per_call`` caps the steps of one call (default: the whole epoch, or a twentieth of
    one while a bar shows); the results do not depend on it."""
    n = len(batches)
    progress = None
    if bar:
        from tqdm import tqdm

        progress = tqdm(total=n, desc=f"epoch {epoch}", unit="step", leave=False, file=sys.stdout)
    chunk = steps.chunk or steps_per_call or (max(1, n // 20) if progress else n)
    steps.start_epoch(batches)
    losses = []
    try:
        while len(losses) < n:
            if ctrl_c.raised:
                return None
            stop = min(n, len(losses) + chunk)
            losses += steps.run(len(losses), stop)
            if not np.isfinite(losses[-1]):
                raise FloatingPointError(len(losses) - 1, losses[-1])
            if progress is not None:
                progress.update(stop - progress.n)
    finally:
        if progress is not None:
            progress.close()
    return losses
