"""What a run holds while it trains: the Session, the Saver and its run state, the TensorBoard
writer, and :class:`EpochEnd`, a copy of the network that validates each epoch while the next
trains. A checkpoint holds all that decides the rest of the run (variables, moving statistics, and
in ``run_state`` the shuffling's NumPy state and the table), so a resumed run ends bit-identical.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from . import atomic, reuse, runs
from .errors import CheckpointError, NumericalError, WriteError
from .graph import build_graph, set_input_statistics, training_graph

tf1 = tf.compat.v1
RUN_STATE = "run_state"


def session_config(threads=(1, 2)):
    """(intra-op, inter-op) threads; 0 means TensorFlow's default (one per core). (1, 2) runs
    independent ops, such as a layer's two gradient matmuls, at once, with unsharded kernels."""
    intra, inter = threads
    return tf1.ConfigProto(intra_op_parallelism_threads=intra, inter_op_parallelism_threads=inter)


@dataclass
class Result:
    run_dir: str
    accuracies: list = field(default_factory=list)  # validation accuracy per epoch (float32)
    losses: list = field(default_factory=list)  # mean training loss per epoch
    epoch_seconds: list = field(default_factory=list)
    test_accuracy: np.float32 = np.float32("nan")
    train_seconds: float = 0.0  # this process's epochs, first_epoch on
    examples: int = 0  # trained by this process
    examples_per_second: float = 0.0
    first_epoch: int = 0  # > 0 when resumed
    checkpoint: str = ""
    startup_seconds: float = 0.0  # train() entry to the first step
    compile_seconds: float = 0.0  # of which the XLA loop's compile


class TrainingSession:
    """One run's graph, Session, Saver, writer and validating copy. ``start()`` initialises or
    restores; ``save``, ``validate`` and ``finish`` are the ends of the book's epoch and run."""

    def __init__(self, config, split, run_dir, resume, out):
        self.t_start = time.perf_counter()
        self.config, self.split, self.run_dir, self.resume, self.out = config, split, run_dir, resume, out
        self.h = h = training_graph(config, resume)
        with h.graph.as_default():
            # an imported graph has its source run's; this run's state takes its place
            existing = [v for v in tf1.global_variables() if v.op.name == RUN_STATE]
            self.run_state = (existing or [tf1.Variable("", trainable=False, name=RUN_STATE, dtype=tf.string)])[0]
            self.run_state_in = tf1.placeholder(tf.string, shape=(), name="run_state_in")
            self.set_run_state = self.run_state.assign(self.run_state_in)
            self.saver = tf1.train.Saver(max_to_keep=None, save_relative_paths=True)
            self.writer = tf1.summary.FileWriter(run_dir, graph=None if resume else h.graph)
            if not resume:
                meta = self.saver.export_meta_graph().SerializeToString()
                atomic.write_bytes_atomic(os.path.join(run_dir, runs.GRAPH_META), meta)
        self.rng = np.random.RandomState(config.seed)  # the book's np.random.seed(42)
        self.sess = tf1.Session(graph=h.graph, config=session_config(config.run.threads))
        self.result = Result(run_dir)
        self.epoch_end = EpochEnd(config, split, self.writer, out, session_config(config.run.threads))
        self.t_train = None

    def __enter__(self):
        self._graph = self.h.graph.as_default()
        self._graph.__enter__()
        return self

    def __exit__(self, *exc):
        self._graph.__exit__(*exc)
        self.epoch_end.close()
        self.writer.close()
        self.sess.close()

    def start(self):
        """Initialise, or restore the checkpoint to resume from and the state saved with it.
        Returns the first epoch to train."""
        if not self.resume:
            self.sess.run([self.h.init, self.run_state.initializer])
            if self.h.input_statistics:  # only then: the XLA loop never makes the float32 training set
                set_input_statistics(self.sess, self.h, self.split.X_train)
            if self.config.reuse:  # the reuse cells' saver.restore, of all or some layers
                self._restore_source()
            return 0
        self.result.first_epoch = self._restore()
        return self.result.first_epoch

    def _restore_source(self):
        config = self.config
        reuse.check_source(config.reuse_from, config)
        if config.reuse_sha256 and reuse.sha256(config.reuse_from) != config.reuse_sha256:
            raise CheckpointError(
                f"{config.reuse_from} changed after this run recorded it; start the run again from the source"
            )
        if config.reuse in ("model", "lower_imported"):  # the imported saver's restore: all it saved
            stored = set(runs.stored_shapes(config.reuse_from)) - {RUN_STATE}
            imported = [v for v in tf1.global_variables() if v.op.name in stored]
            reuse.restore_layers(self.sess, config.reuse_from, imported, scope="")
        else:
            reuse.restore_layers(self.sess, config.reuse_from, self.h.model_variables, config.restore_scope)

    def _restore(self):
        h, result = self.h, self.result
        start = self.resume if isinstance(self.resume, str) else None
        result.checkpoint = start or runs.newest_prefix(self.run_dir)
        runs.restore_checkpoint(self.sess, self.saver, result.checkpoint, h.model_variables)
        if start:  # back to this epoch: later checkpoints are trained again
            epoch = runs.checkpoint_epoch(start)
            kept = runs.read_state(self.run_dir)
            earlier = [p for p in kept if (runs.checkpoint_epoch(p) or 0) < epoch]
            runs.write_state(self.run_dir, [*earlier, start])
        saved = runs.read_config(self.run_dir)
        if saved.epochs != self.config.epochs:  # --epochs extends the run: it is now that long
            runs.write_config(self.run_dir, saved.replace(epochs=self.config.epochs))
        state = json.loads(self.sess.run(self.run_state).decode())
        self._replay_dropout(state["epoch"])
        name, keys, *rest = state["rng"]
        self.rng.set_state((name, np.array(keys, dtype=np.uint32), *rest))
        result.accuracies = [np.float32(a) for a in state["accuracies"]]
        result.losses, result.epoch_seconds = state["losses"], state["epoch_seconds"]
        if self.out is not None:
            for epoch, acc in enumerate(result.accuracies):
                if epoch % self.config.print_every == 0:
                    print(epoch, "Validation accuracy:", acc, "(from checkpoint)", file=self.out, flush=True)
        # TensorBoard drops what this run wrote from here on before the kill (it is rewritten)
        self.writer.add_session_log(tf1.SessionLog(status=tf1.SessionLog.START), len(result.accuracies))
        if len(result.accuracies) < state["epoch"]:  # the last epoch's validation: recompute it
            last = len(result.accuracies)
            values = self.sess.run(h.model_variables)
            self.epoch_end.submit(last, values, result.losses[last], result.epoch_seconds[last], note="from checkpoint")
            self.wait_for_validation()
        return state["epoch"]

    def _replay_dropout(self, epochs):
        """Dropout's random streams live in the Session, not the checkpoint: run as many forward
        passes with ``training`` on, on batches of the same sizes, as ``epochs`` epochs made."""
        if not self.config.dropout_rate or not epochs:
            return
        n = self.split.n_train
        sizes = [len(b) for b in np.array_split(np.arange(n), n // self.config.batch_size)]
        forward = self.sess.make_callable(self.h.logits, feed_list=[self.h.X, self.h.training])
        zeros = {n: np.zeros((n, self.config.n_inputs), np.float32) for n in set(sizes)}
        for n in sizes * epochs:
            forward(zeros[n], True)

    def started(self, compile_seconds):
        self.result.compile_seconds = compile_seconds
        self.t_train = time.perf_counter()
        self.result.startup_seconds = self.t_train - self.t_start

    def checked_variables(self, epoch):
        """Every variable's value, checked finite before the epoch is saved (a moving variance can
        overflow while the loss stays finite)."""
        values = self.sess.run(self.h.model_variables)
        for v, value in zip(self.h.model_variables, values):
            if not np.all(np.isfinite(value)):
                raise NumericalError(
                    f"{v.op.name} became NaN or infinite during epoch {epoch}; nothing from this epoch was saved"
                )
        return values

    def save(self, epoch, losses, seconds):
        """``saver.save`` of ``epoch`` with the run state, committed once complete."""
        result = self.result
        self.wait_for_validation()  # the previous epoch's accuracy belongs to the state
        result.losses.append(float(np.mean(losses)))
        result.epoch_seconds.append(seconds)
        name, keys, pos, has_gauss, cached = self.rng.get_state()
        state = {
            "epoch": epoch + 1,
            "rng": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
            "accuracies": [float(a) for a in result.accuracies],
            "losses": result.losses,
            "epoch_seconds": result.epoch_seconds,
        }
        self.sess.run(self.set_run_state, feed_dict={self.run_state_in: json.dumps(state)})
        prefix = runs.checkpoint_prefix(self.run_dir, epoch)
        try:
            self.saver.save(self.sess, prefix, write_meta_graph=False, write_state=False)
            runs.link_meta(self.run_dir, prefix)
            runs.commit_checkpoint(self.run_dir, prefix, self.config.run.keep_checkpoints)
        except (tf.errors.OpError, OSError, ValueError) as e:
            raise self._write_error(f"the checkpoint of epoch {epoch}", e) from None
        result.checkpoint = prefix

    def validate(self, epoch, values, now=False, last_batch=None):
        """The epoch's validation accuracy, its line and its TensorBoard summaries, on the copy,
        while the next epoch trains; ``now`` waits for them."""
        losses, seconds = self.result.losses[-1], self.result.epoch_seconds[-1]
        self.epoch_end.submit(epoch, values, losses, seconds, last_batch=last_batch)
        if now:
            self.wait_for_validation()

    def wait_for_validation(self):
        """Until the pending epoch's validation is done; its accuracy joins the table here."""
        try:
            accuracy = self.epoch_end.wait()
        except EventFileError as e:
            raise self._write_error("TensorBoard's event file", e) from None
        if accuracy is not None:
            self.result.accuracies.append(accuracy)

    def finish(self, dry_run):
        """The test accuracy and ``results.json``, once every epoch is validated."""
        result, h, split = self.result, self.h, self.split
        self.wait_for_validation()
        result.train_seconds = time.perf_counter() - self.t_train
        result.examples_per_second = result.examples / max(result.train_seconds, 1e-9)
        result.test_accuracy = self.sess.run(h.accuracy, feed_dict={h.X: split.X_test, h.y: split.y_test})
        results = {
            "validation_accuracy": [float(a) for a in result.accuracies],
            "validation_accuracy_printed": [str(a) for a in result.accuracies],
            "training_loss": result.losses,
            "epoch_seconds": result.epoch_seconds,
            "test_accuracy": float(result.test_accuracy),
            "train_seconds": result.train_seconds,
            "train_seconds_from_epoch": result.first_epoch,
            "checkpoint": os.path.basename(result.checkpoint),
            **({"dry_run": True} if dry_run else {}),
        }
        try:
            atomic.write_json_atomic(os.path.join(self.run_dir, runs.RESULTS_FILE), results)
        except OSError as e:
            raise self._write_error(runs.RESULTS_FILE, e) from None
        return result

    def _write_error(self, what, e):
        """A :class:`WriteError` saying what could not be written, why, and what is still saved."""
        reason = runs.first_line(e) if isinstance(e, tf.errors.OpError) else (e.strerror or str(e))
        reason = reason.replace(f"{self.run_dir}/", "")  # the folder is named once, below
        if not runs.is_run_dir(self.run_dir):  # removed (TensorBoard may remake it empty)
            return WriteError(f"could not write {what}: the run folder {self.run_dir} is gone ({reason})")
        newest = [os.path.basename(p) for p in runs.read_state(self.run_dir)]
        kept = (
            f"the newest complete checkpoint is still {newest[-1]}" if newest else "no epoch of this run is saved yet"
        )
        return WriteError(f"could not write {what} in {self.run_dir} ({reason}); {kept}", resumable=bool(newest))


class EpochEnd:
    """``submit(...)`` queues one epoch's validation and summaries; ``wait()`` returns its
    validation accuracy once done (None when nothing was queued), re-raising its error, if any.
    The thread touches only the copy, the writer and the printed line."""

    def __init__(self, config, split, writer, out, session_config):
        self.config, self.split, self.writer, self.out, self.session_config = config, split, writer, out, session_config
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="bnmnist-epoch-end")
        self.pending = self.sess = None
        self.prepared = False

    def prepare(self):
        """Build the copy, its session and Session calls in the background thread. The trainer
        calls it after tracing its loop: a graph built during the tracing would change TensorFlow's
        name counters, hence XLA's fingerprint, and the compile cache would miss."""
        if not self.prepared:
            self.prepared = True
            self.pending = self.pool.submit(self._prepare)

    def _prepare(self):
        h = build_graph(self.config, train_op=False)
        with h.graph.as_default():
            with tf.name_scope("histograms"):
                histograms = tf1.summary.merge([tf1.summary.histogram(v.op.name, v) for v in h.model_variables])
            values_in = [tf1.placeholder(v.dtype.base_dtype, v.shape) for v in h.model_variables]
            load = tf.group([v.assign(p) for v, p in zip(h.model_variables, values_in)])
        self.sess = tf1.Session(graph=h.graph, config=self.session_config)
        self._load = self.sess.make_callable(load, feed_list=values_in)
        self._accuracy = self.sess.make_callable(h.accuracy, feed_list=[h.X, h.y])
        self._histograms = self.sess.make_callable(histograms)

    def submit(self, epoch, values, mean_loss, seconds, note=None, last_batch=None):
        """``values``: the model variables after ``epoch``, in the training graph's order. The line
        ends with ``note``, else the epoch's time; ``last_batch`` for a cell that prints its accuracy."""
        self.prepare()
        if self.wait() is not None:
            raise RuntimeError("an epoch's accuracy was not collected: wait() before the next submit()")
        self.pending = self.pool.submit(self._end, epoch, values, mean_loss, seconds, note, last_batch)

    def wait(self):
        pending, self.pending = self.pending, None
        return None if pending is None else pending.result()

    def close(self):
        """Finish what is queued (errors are for :meth:`wait` to raise) and free the copy."""
        self.pool.shutdown(wait=True)
        if self.sess is not None:
            self.sess.close()

    def _end(self, epoch, values, mean_loss, seconds, note, last_batch):
        self._load(*values)
        acc = self._accuracy(self.split.X_valid, self.split.y_valid)
        if self.out is not None and epoch % self.config.print_every == 0:
            batch = []
            if self.config.batch_accuracy and last_batch is not None:
                X, y = self.split.X_train[last_batch], self.split.y_train[last_batch]
                batch = ["Batch accuracy:", self._accuracy(X, y)]
            suffix = f"({note or f'epoch {seconds:.2f} s'})"
            print(epoch, *batch, "Validation accuracy:", acc, suffix, file=self.out, flush=True)
        try:
            scalars = {"validation_accuracy": float(acc), "training_loss": mean_loss, "epoch_seconds": seconds}
            values = [tf1.Summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
            self.writer.add_summary(tf1.Summary(value=values), epoch)
            self.writer.add_summary(self._histograms(), epoch)
            self.writer.flush()
        except (RuntimeError, OSError) as e:  # the writer's thread failed: disk full, folder gone
            raise EventFileError(str(e).splitlines()[0]) from None
        return acc


class EventFileError(OSError):
    """TensorBoard's event file could not be written; ``str()`` is the reason."""
