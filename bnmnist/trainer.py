"""Session-based training: the book's ``shuffle_batch`` loop, checkpoints, logs and resume.

Each step runs the training op together with ``UPDATE_OPS`` (the moving averages) and
``training=True``, as the book does; after each epoch the validation accuracy is printed in the
book's format (``0 Validation accuracy: 0.8952``), written to TensorBoard, and a checkpoint saved
with everything that decides the rest of the run: the variables, the moving statistics, the NumPy
random state that drives shuffling, the epoch and the table so far. A run killed at any moment
and resumed therefore ends bit-identical to one that never stopped. The checkpoint is written
before the next epoch starts; validation and TensorBoard run on an exact copy of the epoch's
variables while the next epoch trains (epoch_end.py).
"""
from __future__ import annotations

import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from . import checkpoint, runs
from .errors import NumericalError, WriteError
from .epoch_end import EpochEnd
from .graph import build_graph

tf1 = tf.compat.v1
RUN_STATE = "run_state"


class TrainingInterrupted(Exception):
    """Ctrl-C stopped the run cleanly after its last completed epoch."""

    def __init__(self, run_dir, epochs_done):
        super().__init__(f"interrupted; {epochs_done} epoch(s) saved in {run_dir}")
        self.run_dir = run_dir
        self.epochs_done = epochs_done


def shuffle_batch(X, y, batch_size, rng=np.random):
    """The book's helper: a fresh permutation per epoch, split into ``len(X) // batch_size``
    nearly equal batches by ``np.array_split`` (so no example is dropped; some batches are one
    larger). Same NumPy calls as the book, hence the same batches for the same random state."""
    for batch_idx in batch_indices(len(X), batch_size, rng):
        yield X[batch_idx], y[batch_idx]


def batch_indices(n, batch_size, rng=np.random):
    rnd_idx = rng.permutation(n)
    n_batches = n // batch_size
    return np.array_split(rnd_idx, n_batches)


@dataclass
class Result:
    run_dir: str
    accuracies: list = field(default_factory=list)     # validation accuracy per epoch (float32)
    losses: list = field(default_factory=list)         # mean training loss per epoch
    epoch_seconds: list = field(default_factory=list)
    test_accuracy: np.float32 = np.float32("nan")
    train_seconds: float = 0.0                         # this process's epochs, first_epoch on
    examples_per_second: float = 0.0
    first_epoch: int = 0                               # > 0 when resumed
    checkpoint: str = ""
    startup_seconds: float = 0.0                       # train() entry to the first step
    compile_seconds: float = 0.0                       # of which the XLA loop's compile


def session_config(threads=(1, 2)):
    """(intra-op, inter-op) threads; 0 means TensorFlow's default (one per core). The default
    (1, 2) lets independent ops, such as a layer's two gradient matmuls, run at once, while
    single-threaded kernels skip Eigen's sharding overhead at batch 200. The float results do not
    depend on these settings (benchmarks/README.md; tests/test_training.py checks one)."""
    intra, inter = threads
    return tf1.ConfigProto(intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter)


class _StepLoop:
    """The per-step loops: one Session call per batch, as in the book. ``run(start, stop)``
    returns the steps' losses, ending right after the first non-finite one."""
    chunk = 1                           # Ctrl-C and the progress bar see every step

    def __init__(self, step):
        self.step, self.batches = step, []

    def compile(self, n_train, batch_size):
        return 0.0                      # nothing is compiled ahead

    def start_epoch(self, batches):
        self.batches = batches

    def run(self, start, stop):
        losses = []
        for i in range(start, stop):
            losses.append(float(self.step(self.batches[i])))
            if not np.isfinite(losses[-1]):
                break
        return losses


def _training_loop(sess, h, split, config):
    """The loop ``config.loop`` names. All run the same fetches per step (training op, update
    ops, loss, with ``training=True``); "feed_dict" and "graph" differ only in how the batch
    reaches ``X`` and ``y`` (identical floats); "xla" runs whole epochs (see xla_loop.py)."""
    fetches = [h.training_op, h.extra_update_ops, h.loss]
    extra = [h.training] if h.training is not None else []
    if config.loop == "feed_dict":     # the book's loop, verbatim
        def step(idx):
            feed = {h.X: split.X_train[idx], h.y: split.y_train[idx]}
            if h.training is not None:
                feed[h.training] = True
            return sess.run(fetches, feed_dict=feed)[2]
        return _StepLoop(step)
    if config.loop == "xla":           # holds its own copy of the training set
        from .xla_loop import XlaEpochLoop
        return XlaEpochLoop(sess, h, config, split.X_train, split.y_train)
    sess.run(h.data.load, feed_dict={h.data.X_in: split.X_train, h.data.y_in: split.y_train})
    run = sess.make_callable(fetches, feed_list=[h.data.batch_idx, *extra])
    flags = [True] * len(extra)
    return _StepLoop(lambda idx: run(idx, *flags)[2])


class _SigintFlag:
    """Turns Ctrl-C into a flag the loop checks between steps, so nothing stops half-way."""

    def __init__(self):
        self.raised = False
        self.previous = None

    def __enter__(self):
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:          # not the main thread: leave Ctrl-C alone
            self.previous = None
        return self

    def _handle(self, signum, frame):
        self.raised = True

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)


def _say(out, *parts):
    if out is not None:
        print(*parts, file=out, flush=True)


def train(config, split, run_dir, *, resume=False, dry_run=False, out=sys.stdout, data_info=None,
          progress=False, steps_per_call=None):
    """Train ``config`` on ``split`` in ``run_dir`` (made by :func:`runs.new_run_dir`, or an
    existing run when ``resume``). Returns a :class:`Result`; raises :class:`TrainingInterrupted`
    on Ctrl-C and :class:`NumericalError` if the loss or a variable stops being finite.

    ``steps_per_call`` caps the steps of one Session call of the "xla" loop (default: a whole
    epoch, or a twentieth of one while a progress bar shows); the results do not depend on it.
    ``resume`` may also be a checkpoint prefix of the run, to resume from it instead of the newest:
    the later ones stop being named by the state file before they are trained again."""
    locked = runs.lock_run(run_dir)     # one process trains a run at a time
    try:
        return _train(config, split, run_dir, resume, dry_run, out, data_info, progress, steps_per_call)
    finally:
        if locked:
            runs.unlock_run(run_dir)


def _train(config, split, run_dir, resume, dry_run, out, data_info, progress, steps_per_call):
    if not resume:
        runs.write_json_atomic(os.path.join(run_dir, runs.CONFIG_FILE), config.to_json())
        if data_info is not None:
            runs.write_json_atomic(os.path.join(run_dir, runs.DATA_FILE), data_info)
    t_start = time.perf_counter()
    run = _Run(config, split, run_dir, resume, out)
    run.t_start = t_start
    try:
        with run.h.graph.as_default():
            return run.train(dry_run, progress, steps_per_call)
    finally:
        run.close()


class _Run:
    """One training session: the book's graph plus what the trainer adds to it (the saved run
    state, the Saver), its Session, its TensorBoard writer and the copy that validates."""

    def __init__(self, config, split, run_dir, resume, out):
        self.config, self.split, self.run_dir, self.resume, self.out = config, split, run_dir, resume, out
        self.h = h = build_graph(config, in_graph_data=config.loop == "graph")
        with h.graph.as_default():
            # everything that decides the rest of the run, as JSON, saved in every checkpoint
            self.run_state = tf1.Variable("", trainable=False, name=RUN_STATE, dtype=tf.string)
            self.run_state_in = tf1.placeholder(tf.string, shape=(), name="run_state_in")
            self.set_run_state = self.run_state.assign(self.run_state_in)
            self.saver = tf1.train.Saver(max_to_keep=None, save_relative_paths=True)
            self.writer = tf1.summary.FileWriter(run_dir, graph=None if resume else h.graph)
            if not resume:
                meta = self.saver.export_meta_graph()
                runs.write_bytes_atomic(os.path.join(run_dir, runs.GRAPH_META), meta.SerializeToString())
        self.rng = np.random.RandomState(config.seed)        # the book's np.random.seed(42)
        self.sess = tf1.Session(graph=h.graph, config=session_config(config.threads))
        self.result = Result(run_dir)
        self.epoch_end = EpochEnd(config, split, self.writer, self.result, out,
                                  session_config(config.threads))

    def close(self):
        self.epoch_end.close()
        self.writer.close()
        self.sess.close()

    def _start(self):
        """Initialise, or restore the newest checkpoint and the state saved with it."""
        h, result = self.h, self.result
        if not self.resume:
            self.sess.run([h.init, self.run_state.initializer])
            return 0
        start = self.resume if isinstance(self.resume, str) else None
        result.checkpoint = start or runs.newest_prefix(self.run_dir)
        checkpoint.restore(self.sess, self.saver, result.checkpoint, h.model_variables)
        if start:                   # back to this epoch: later checkpoints are trained again
            epoch = runs.checkpoint_epoch(start)
            runs.write_state(self.run_dir, [p for p in runs.read_state(self.run_dir)
                                            if (runs.checkpoint_epoch(p) or 0) < epoch] + [start])
        saved = runs.read_config(self.run_dir)
        if saved.epochs != self.config.epochs:     # --epochs extends the run: it is now that long
            runs.write_json_atomic(os.path.join(self.run_dir, runs.CONFIG_FILE),
                                   saved.replace(epochs=self.config.epochs).to_json())
        state = json.loads(self.sess.run(self.run_state).decode())
        self.rng.set_state(_rng_from_json(state["rng"]))
        result.accuracies = [np.float32(a) for a in state["accuracies"]]
        result.losses = state["losses"]
        result.epoch_seconds = state["epoch_seconds"]
        for epoch, acc in enumerate(result.accuracies):
            _say(self.out, epoch, "Validation accuracy:", acc, "(from checkpoint)")
        # TensorBoard drops what this run wrote from here on before the kill (it is rewritten)
        self.writer.add_session_log(tf1.SessionLog(status=tf1.SessionLog.START), len(result.accuracies))
        if len(result.accuracies) < state["epoch"]:   # the last epoch's validation: recompute it
            last = len(result.accuracies)
            self.epoch_end.submit(last, self.sess.run(h.model_variables), result.losses[last],
                                  result.epoch_seconds[last], note="from checkpoint")
            self.epoch_end.wait()
        return state["epoch"]

    def train(self, dry_run, progress, steps_per_call=None):
        config, split, h, result = self.config, self.split, self.h, self.result
        self.epoch_end.prepare()
        start_epoch = result.first_epoch = self._start()
        loop = _training_loop(self.sess, h, split, config)
        n_train = len(split.X_train)
        result.compile_seconds = loop.compile(n_train, config.batch_size)  # before the first step, like JAX's AOT
        kill_at = int(os.environ.get("BNMNIST_TEST_SIGKILL_AT_STEP", "-1"))  # crash tests only
        examples = steps = 0
        t_train = time.perf_counter()
        result.startup_seconds = t_train - self.t_start
        with _SigintFlag() as sigint:
            for epoch in range(start_epoch, config.epochs):
                t_epoch = time.perf_counter()
                step_losses = []
                batches = batch_indices(n_train, config.batch_size, self.rng)
                n = min(2, len(batches)) if dry_run else len(batches)
                bar = _progress_bar(n, epoch, progress)
                # whole epochs in one call unless a bar shows progress (same results either way)
                chunk = loop.chunk or steps_per_call or (max(1, n // 20) if bar else n)
                loop.start_epoch(batches)
                pos = 0
                try:
                    while pos < n:
                        if sigint.raised:
                            raise TrainingInterrupted(self.run_dir, epoch)
                        stop = min(n, pos + chunk)
                        if steps < kill_at <= steps + stop - pos:
                            stop = pos + kill_at - steps
                        losses = loop.run(pos, stop)
                        steps += len(losses)
                        if steps == kill_at:      # fault injection for the crash tests
                            os.kill(os.getpid(), signal.SIGKILL)
                        if not np.isfinite(losses[-1]):
                            raise NumericalError(
                                f"the training loss became {losses[-1]} at epoch {epoch}, step "
                                f"{pos + len(losses) - 1}; nothing from this epoch was saved; try "
                                f"a smaller --learning-rate (now {config.learning_rate})")
                        step_losses += losses
                        examples += sum(len(batches[i]) for i in range(pos, stop))
                        if bar is not None:
                            bar.update(stop - pos)
                        pos = stop
                finally:
                    if bar is not None:
                        bar.close()
                values = _check_finite(self.sess, h, epoch)
                self.epoch_end.wait()                 # the previous epoch's accuracy, for the state
                result.losses.append(float(np.mean(step_losses)))
                result.epoch_seconds.append(time.perf_counter() - t_epoch)
                self._save(epoch)                     # before the next epoch starts
                # validation and TensorBoard run on a copy while the next epoch trains
                self.epoch_end.submit(epoch, values, result.losses[-1], result.epoch_seconds[-1])
                if bar is not None or sigint.raised or dry_run:
                    self.epoch_end.wait()             # its line before the next bar or the exit
                if sigint.raised:
                    raise TrainingInterrupted(self.run_dir, epoch + 1)
                if dry_run:
                    break
        self.epoch_end.wait()
        result.train_seconds = time.perf_counter() - t_train
        result.examples_per_second = examples / max(result.train_seconds, 1e-9)
        result.test_accuracy = self.sess.run(h.accuracy, feed_dict={h.X: split.X_test, h.y: split.y_test})
        try:
            runs.write_json_atomic(os.path.join(self.run_dir, runs.RESULTS_FILE), {
                "validation_accuracy": [float(a) for a in result.accuracies],
                "validation_accuracy_printed": [str(a) for a in result.accuracies],
                "training_loss": result.losses, "epoch_seconds": result.epoch_seconds,
                "test_accuracy": float(result.test_accuracy),
                "train_seconds": result.train_seconds, "train_seconds_from_epoch": result.first_epoch,
                "checkpoint": os.path.basename(result.checkpoint),
                **({"dry_run": True} if dry_run else {}),
            })
        except OSError as e:
            raise WriteError(f"could not write {runs.RESULTS_FILE} in {self.run_dir} ({e.strerror}); "
                             "every epoch's checkpoint is saved: make room or fix the folder, then "
                             f"resume with: python scripts/train.py --resume {self.run_dir}") from None
        return result

    def _save(self, epoch):
        """The checkpoint of ``epoch`` with the run state: committed only once complete."""
        result = self.result
        state = {"epoch": epoch + 1, "rng": _rng_to_json(self.rng.get_state()),
                 "accuracies": [float(a) for a in result.accuracies],
                 "losses": result.losses, "epoch_seconds": result.epoch_seconds}
        self.sess.run(self.set_run_state, feed_dict={self.run_state_in: json.dumps(state)})
        prefix = runs.checkpoint_prefix(self.run_dir, epoch)
        try:
            self.saver.save(self.sess, prefix, write_meta_graph=False, write_state=False)
            runs.link_meta(self.run_dir, prefix)
            runs.commit_checkpoint(self.run_dir, prefix, self.config.keep_checkpoints)
        except (tf.errors.OpError, OSError, ValueError) as e:
            if not runs.is_run_dir(self.run_dir):       # removed (TensorBoard may remake it empty)
                raise WriteError(f"could not write the checkpoint of epoch {epoch}: the run folder "
                                 f"{self.run_dir} is gone ({checkpoint.first_line(e)}); "
                                 "start a new run") from None
            newest = runs.read_state(self.run_dir)
            kept = (f"the newest complete checkpoint is still {os.path.basename(newest[-1])}"
                    if newest else "no epoch of this run is saved yet")
            raise WriteError(f"could not write the checkpoint of epoch {epoch} in {self.run_dir} "
                             f"({checkpoint.first_line(e)}); {kept}; make room or fix the folder, "
                             f"then resume with: python scripts/train.py --resume {self.run_dir}") from None
        result.checkpoint = prefix


def _progress_bar(n_steps, epoch, enabled):
    """A tqdm bar over the epoch's steps, only when asked, stdout is a terminal and tqdm (the
    'progress' extra) is installed."""
    if not enabled or not sys.stdout.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=n_steps, desc=f"epoch {epoch}", unit="step", leave=False, file=sys.stdout)


def _check_finite(sess, h, epoch):
    """The loss can stay finite while a moving variance overflows: check every variable before
    anything of the epoch is written. Returns their values."""
    values = sess.run(h.model_variables)
    for v, value in zip(h.model_variables, values):
        if not np.all(np.isfinite(value)):
            raise NumericalError(f"{v.op.name} became NaN or infinite during epoch {epoch}; "
                                 "nothing from this epoch was saved; try a smaller --learning-rate")
    return values


def _rng_to_json(state):
    name, keys, pos, has_gauss, cached = state
    return [name, keys.tolist(), int(pos), int(has_gauss), float(cached)]


def _rng_from_json(s):
    name, keys, pos, has_gauss, cached = s
    return (name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached)
