"""The book's training cell, as one function: :func:`train`.

Chapter 11's cell shuffles the training set each epoch (``shuffle_batch``), runs
``sess.run([training_op, extra_update_ops], feed_dict={training: True, X: X_batch, y: y_batch})``
for each mini-batch, then prints ``epoch, "Validation accuracy:", accuracy_val`` and saves a
checkpoint. :func:`_book_loop` is that cell, line for line; what a long run adds plugs into it:

* ``steps``: how the epoch's steps run, the book's ``feed_dict`` loop or the XLA loop's whole
  epochs (``steps.py``, ``xla_loop.py``);
* ``run``: the Session, the checkpoint with everything a resume needs, and the validation that
  runs on a copy of the network while the next epoch trains (``training_session.py``).
"""

from __future__ import annotations

import os
import signal
import sys
import time

import numpy as np

from . import atomic, runs
from .errors import NumericalError
from .steps import StopOnCtrlC, make_steps, progress_bar_available, run_epoch
from .training_session import Result, TrainingSession

__all__ = ["Result", "TrainingInterrupted", "batch_indices", "shuffle_batch", "train"]


class TrainingInterrupted(Exception):
    """Ctrl-C or SIGTERM stopped the run cleanly after its last completed epoch; ``signum`` says
    which."""

    def __init__(self, run_dir, epochs_done, signum=signal.SIGINT):
        super().__init__(f"interrupted; {epochs_done} epoch(s) saved in {run_dir}")
        self.run_dir = run_dir
        self.epochs_done = epochs_done
        self.signum = signum


def shuffle_batch(X, y, batch_size, rng=np.random):
    """The book's helper: a fresh permutation per epoch, split into ``len(X) // batch_size``
    nearly equal batches by ``np.array_split`` (so no example is dropped; some batches are one
    larger). Same NumPy calls as the book, hence the same batches for the same random state."""
    for batch_idx in batch_indices(len(X), batch_size, rng):
        yield X[batch_idx], y[batch_idx]


def batch_indices(n, batch_size, rng=np.random):
    """The index arrays of :func:`shuffle_batch`'s batches."""
    rnd_idx = rng.permutation(n)
    n_batches = n // batch_size
    return np.array_split(rnd_idx, n_batches)


def train(
    config, split, run_dir, *, resume=False, dry_run=False, out=sys.stdout, data_info=None, progress=False,
    steps_per_call=None, before_first_step=None,
):  # fmt: skip
    """Train ``config`` on ``split`` in ``run_dir`` (made by :func:`runs.new_run_dir`, or an
    existing run when ``resume``). Returns a :class:`Result`; raises :class:`TrainingInterrupted`
    on Ctrl-C or SIGTERM, :class:`NumericalError` if the loss or a variable stops being finite, and
    :class:`WriteError` if a checkpoint or the results cannot be written.

    ``resume`` may also be a checkpoint prefix of the run, to resume from it instead of the newest:
    the later ones stop being named by the state file before they are trained again.
    ``progress`` shows a bar over each epoch's steps on a terminal; ``steps_per_call`` caps the
    steps of one call of the XLA loop. Neither changes the results. ``before_first_step()`` is
    called once the start-up is over."""
    with runs.run_lock(run_dir):
        if not resume:
            atomic.write_json_atomic(os.path.join(run_dir, runs.CONFIG_FILE), config.to_json())
            if data_info is not None:
                atomic.write_json_atomic(os.path.join(run_dir, runs.DATA_FILE), data_info)
        with TrainingSession(config, split, run_dir, resume, out) as run:
            bar = progress_bar_available(progress)
            return _book_loop(run, config, split, dry_run, bar, steps_per_call, before_first_step)


def _book_loop(run, config, split, dry_run, bar, steps_per_call, before_first_step=None):
    """The book's cell, with ``run`` (its Session, Saver and validating copy) and ``steps`` (its
    per-step loop, or XLA's) plugged in."""
    first_epoch = run.start()  # init.run(), or a checkpoint's variables and state
    steps = make_steps(run.sess, run.h, config, split)
    run.epoch_end.prepare()  # the validating copy, built while the loop compiles
    run.started(steps.compile(split.n_train, config.batch_size))  # before the first step
    if before_first_step is not None:
        before_first_step()
    with StopOnCtrlC() as ctrl_c:
        for epoch in range(first_epoch, config.epochs):
            t_epoch = time.perf_counter()
            batches = batch_indices(split.n_train, config.batch_size, run.rng)  # shuffle_batch
            if dry_run:
                batches = batches[:2]
            # for each batch: sess.run([training_op, extra_update_ops], feed_dict={training: True, ...})
            try:
                losses = run_epoch(steps, batches, epoch, ctrl_c, bar, steps_per_call)
            except FloatingPointError as e:
                step, loss = e.args
                raise NumericalError(
                    f"the training loss became {loss} at epoch {epoch}, step {step}; nothing from this epoch was saved"
                ) from None
            if losses is None:
                raise TrainingInterrupted(run.run_dir, epoch, ctrl_c.raised)
            run.result.examples += sum(map(len, batches))
            values = run.checked_variables(epoch)
            run.save(epoch, losses, time.perf_counter() - t_epoch)  # saver.save(sess, ...)
            # accuracy.eval(feed_dict={X: X_valid, y: y_valid}) and the print, beside the next epoch
            run.validate(epoch, values, now=bar or ctrl_c.raised or dry_run, last_batch=batches[-1])
            if ctrl_c.raised:
                raise TrainingInterrupted(run.run_dir, epoch + 1, ctrl_c.raised)
            if dry_run:
                break
    steps.release()  # nothing is held past its last use
    return run.finish(dry_run)
