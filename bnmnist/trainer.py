"""The book's training cell as one function, :func:`train`, and the per-step stepping it runs.
:func:`_book_loop` is chapter 11's cell line for line; its steps plug in as a :class:`Steps`:
:class:`BookSteps`, one Session call per step, or the XLA loop's whole epochs (``xla_loop.py``).
The Session, checkpoints and validation are ``training_session.py``'s.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

import numpy as np

from . import runs
from .errors import NumericalError, TrainingInterrupted
from .training_session import Result, TrainingSession

if TYPE_CHECKING:
    from .config import Config
    from .data import Split

__all__ = ["Result", "TrainingInterrupted", "batch_indices", "shuffle_batch", "train"]
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; timeout, kill, containers, job schedulers
STEPS_PER_CALL = None  # steps of one call of a whole-epoch loop; None: the epoch (a twentieth with a bar)


def shuffle_batch(X, y, batch_size, rng=np.random) -> Iterator:
    """The book's helper, with its NumPy calls: a fresh permutation per epoch, split into
    ``len(X) // batch_size`` nearly equal batches (none dropped; some one larger)."""
    for batch_idx in batch_indices(len(X), batch_size, rng):
        yield X[batch_idx], y[batch_idx]


def batch_indices(n: int, batch_size: int, rng=np.random) -> list:
    """The index arrays of :func:`shuffle_batch`'s batches."""
    return np.array_split(rng.permutation(n), n // batch_size)


def train(
    config: Config, split: Split, run_dir: str, *, resume: bool | str = False, dry_run: bool = False,
    out=sys.stdout, data_info: dict | None = None, progress: bool = False, before_first_step=None,
) -> Result:  # fmt: skip
    """Train ``config`` on ``split`` in ``run_dir`` (a new run folder, or with ``resume`` an existing
    run, or one of its checkpoints to go back to). Raises :class:`TrainingInterrupted`,
    :class:`NumericalError` or :class:`WriteError`. ``progress``: a tqdm bar on a terminal."""
    with runs.run_lock(run_dir):
        if not resume:
            runs.write_records(run_dir, config, data_info)
        with TrainingSession(config, split, run_dir, resume, out) as run:
            return _book_loop(run, config, split, dry_run, progress_bar(progress), before_first_step)


def _book_loop(run, config, split, dry_run, bar, before_first_step=None):
    """The book's cell, with ``run`` (its Session, Saver and validating copy) and ``steps``."""
    first_epoch = run.start()  # init.run(), or a checkpoint's variables and state
    steps = make_steps(run.sess, run.h, config, split)
    run.epoch_end.prepare()  # the validating copy, built while the loop compiles
    run.started(steps.compile(split.n_train, config.batch_size))  # before the first step
    if before_first_step is not None:
        before_first_step()
    with StopOnSignal() as stop:
        for epoch in range(first_epoch, config.epochs):
            t_epoch = time.perf_counter()
            batches = batch_indices(split.n_train, config.batch_size, run.rng)  # shuffle_batch
            if dry_run:
                batches = batches[:2]
            # for each batch: sess.run([training_op, extra_update_ops], feed_dict={training: True, ...})
            losses = run_epoch(steps, batches, epoch, stop, bar, run.run_dir)
            run.result.examples += sum(map(len, batches))
            values = run.checked_variables(epoch)
            run.save(epoch, losses, time.perf_counter() - t_epoch)  # saver.save(sess, ...)
            # accuracy.eval(feed_dict={X: X_valid, y: y_valid}) and the print, beside the next epoch
            run.validate(epoch, values, now=bar or stop.signum or dry_run, last_batch=batches[-1])
            if stop.signum:
                raise TrainingInterrupted(run.run_dir, epoch + 1, stop.signum)
            if dry_run:
                break
    steps.release()  # nothing is held past its last use
    return run.finish(dry_run)


class Steps(Protocol):
    """How an epoch's steps reach the graph: each the training op with ``UPDATE_OPS`` and
    ``training=True`` on the batches the trainer draws."""

    chunk: int | None  # steps per call: 1 for the per-step loop, None for whole epochs

    def compile(self, n_train: int, batch_size: int) -> float:
        """Prepare every call an epoch makes, before the first step; returns the seconds taken."""

    def start_epoch(self, batches: Sequence[np.ndarray]) -> None:
        """Take the epoch's index arrays."""

    def run(self, start: int, stop: int) -> list[float]:
        """Steps ``start..stop-1``: their losses, ending right after a non-finite one."""

    def release(self) -> None:
        """Drop what the loop holds; no step runs after this."""


class BookSteps:
    """The book's loop: one ``sess.run([training_op, extra_update_ops], feed_dict=...)`` per batch,
    through ``make_callable`` (the same executor and kernels: the same values, bit for bit)."""

    chunk = 1  # Ctrl-C and the progress bar see every step

    def __init__(self, sess, h, split, cache_layer=""):
        self.sess, self.h, self.split, self.cache_layer = sess, h, split, cache_layer
        self.batches = []
        self.inputs, self.X_train = h.X, None
        self.step = self.after_step = None

    def compile(self, _n_train, _batch_size):
        h = self.h
        if self.cache_layer:  # the caching cell: the frozen layer's outputs, once, fed for X
            from .reuse import cache_outputs

            self.inputs = h.layer_outputs[self.cache_layer]
            self.X_train = cache_outputs(self.sess, h, self.cache_layer, self.split.X_train)
        feeds = [self.inputs, h.y] + ([h.training] if h.training is not None else [])
        self.step = self.sess.make_callable([h.training_op, h.extra_update_ops, h.loss], feed_list=feeds)
        if h.after_step:
            self.after_step = self.sess.make_callable(h.after_step)
        return 0.0  # nothing is compiled ahead

    def start_epoch(self, batches):
        self.batches = batches

    def release(self):
        self.X_train = None  # the training set is the caller's; a cache is this loop's

    def run(self, start, stop):
        losses = []
        X_train = self.split.X_train if self.X_train is None else self.X_train
        training = (True,) if self.h.training is not None else ()
        for idx in self.batches[start:stop]:
            losses.append(float(self.step(X_train[idx], self.split.y_train[idx], *training)[2]))
            if self.after_step:  # the max-norm cells' clip_weights.eval(), after the step
                self.after_step()
            if not np.isfinite(losses[-1]):
                break
        return losses


def make_steps(sess, h, config, split) -> Steps:
    """The loop ``config.run.loop`` names, on the graph ``h`` in ``sess``."""
    if config.run.loop == "xla":  # holds its own copy of the training set
        from .xla_loop import XlaEpochLoop

        return XlaEpochLoop(sess, h, config, split.train_pixels, split.y_train)
    return BookSteps(sess, h, split, config.stop_gradient_after if config.cache_frozen else "")


class StopOnSignal:
    """Ctrl-C and SIGTERM as a flag checked between steps (``signum``, 0 until one comes)."""

    def __init__(self):
        self.signum = 0
        self.previous = {}

    def __enter__(self):
        for signum in STOP_SIGNALS:
            try:
                self.previous[signum] = signal.signal(signum, lambda s, _: setattr(self, "signum", s))
            except ValueError:  # not the main thread: leave the signals alone
                break
        return self

    def __exit__(self, *exc):
        for signum, previous in self.previous.items():
            # a second SIGTERM (a supervisor sending it again) must not break into a run that is
            # already stopping
            stopping = signum == signal.SIGTERM and self.signum == signal.SIGTERM
            signal.signal(signum, signal.SIG_IGN if stopping else previous)


def progress_bar(wanted: bool, note=None) -> bool:
    """A tqdm bar: when wanted, on a terminal, with tqdm installed (else ``note()`` is called)."""
    if not wanted or not sys.stdout.isatty():
        return False
    try:
        import tqdm  # noqa: F401
    except ImportError:
        if note is not None:
            note()
        return False
    return True


def run_epoch(steps: Steps, batches, epoch: int, stop: StopOnSignal, bar: bool, run_dir: str) -> list[float]:
    """The epoch's ``batches`` through ``steps``; returns their losses. Raises :class:`NumericalError`
    at the first loss that is not finite, :class:`TrainingInterrupted` when a stop signal came."""
    n = len(batches)
    progress = None
    if bar:
        from tqdm import tqdm

        progress = tqdm(total=n, desc=f"epoch {epoch}", unit="step", leave=False, file=sys.stdout)
    chunk = steps.chunk or STEPS_PER_CALL or (max(1, n // 20) if progress else n)
    steps.start_epoch(batches)
    losses = []
    try:
        while len(losses) < n:
            if stop.signum:
                raise TrainingInterrupted(run_dir, epoch, stop.signum)
            stop_at = min(n, len(losses) + chunk)
            losses += steps.run(len(losses), stop_at)
            if not np.isfinite(losses[-1]):
                raise NumericalError(
                    f"the training loss became {losses[-1]} at epoch {epoch}, step {len(losses) - 1}; "
                    "nothing from this epoch was saved"
                )
            if progress is not None:
                progress.update(stop_at - progress.n)
    finally:
        if progress is not None:
            progress.close()
    return losses
