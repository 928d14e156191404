"""Validation and TensorBoard for an epoch, done on an exact copy of the network while the next
epoch trains.

After each epoch the trainer fetches every variable (to check they are all finite) and saves the
checkpoint itself, before the next epoch starts, so a kill loses at most the epoch in progress.
What is left, the validation accuracy, the book's line and the TensorBoard summaries, needs only
those values, so :class:`EpochEnd` loads them into a second graph (built by the same
:func:`~bnmnist.graph.build_graph`, without the training set) and does it there, in one
background thread, on the core the training leaves idle. The copy is exact (the float32 values
are assigned as they are) and the ops are the same code, so the printed accuracy is the one the
training graph would give (tests/test_training.py checks it bit for bit).

Because the validation of epoch k finishes after its checkpoint is written, checkpoint k holds
the table up to epoch k - 1; a resume from it recomputes epoch k's accuracy from the restored
variables (the same value) and rewrites that epoch's TensorBoard summaries. Epoch ends run one at
a time, in order; the trainer waits for the pending one before the next checkpoint, before it
returns and before it raises.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import tensorflow as tf

from .graph import build_graph

tf1 = tf.compat.v1


def histogram_summaries(h):
    with h.graph.as_default(), tf.name_scope("histograms"):
        return tf1.summary.merge([tf1.summary.histogram(v.op.name, v) for v in h.model_variables])


class EpochEnd:
    """``submit(...)`` queues one epoch's validation and summaries; ``wait()`` returns once the
    queued one is done (re-raising its error, if any). Accuracies go to ``result.accuracies``."""

    def __init__(self, config, split, writer, result, out, session_config):
        self.config, self.split, self.writer, self.result, self.out = config, split, writer, result, out
        self.session_config = session_config
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="bnmnist-epoch-end")
        self.pending = None
        self.sess = None
        self.prepared = False

    def prepare(self):
        """Start building the copy graph and its session and setting up its three Session calls
        (``make_callable`` builds their executors without running anything), so that neither
        happens during training. The trainer calls it once its own loop is built, before XLA
        compiles that: the copy is built in the background thread meanwhile, on the other core.
        (While the loop is traced, another graph being built would change the order of
        TensorFlow's process-wide name counters, hence the traced function's names and XLA's
        fingerprint of it, and the compile cache would miss.) The first :meth:`submit` comes
        after it, and starts it if nothing has; it raises its error if it failed."""
        if not self.prepared:
            self.prepared = True
            self.pending = self.pool.submit(self._prepare)

    def _prepare(self):
        h = build_graph(self.config, train_op=False)
        histograms = histogram_summaries(h)
        with h.graph.as_default():
            values_in = [tf1.placeholder(v.dtype.base_dtype, v.shape) for v in h.model_variables]
            load = tf.group([v.assign(p) for v, p in zip(h.model_variables, values_in)])
        self.sess = tf1.Session(graph=h.graph, config=self.session_config)
        self._load = self.sess.make_callable(load, feed_list=values_in)
        self._accuracy = self.sess.make_callable(h.accuracy, feed_list=[h.X, h.y])
        self._histograms = self.sess.make_callable(histograms)

    def submit(self, epoch, values, mean_loss, seconds, note=None, last_batch=None):
        """``values``: the model variables after ``epoch``, in the training
        graph's order. The printed line ends with ``note`` in brackets, by default the epoch's time;
        ``last_batch``, the indices of the epoch's last batch, for a cell that prints its accuracy."""
        self.prepare()
        self.wait()
        self.pending = self.pool.submit(self._end, epoch, values, mean_loss, seconds, note, last_batch)

    def wait(self):
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def close(self):
        """Finish what is queued (errors are for :meth:`wait` to raise) and free the copy."""
        self.pool.shutdown(wait=True)
        if self.sess is not None:
            self.sess.close()

    def _end(self, epoch, values, mean_loss, seconds, note, last_batch):
        self._load(*values)
        acc = self._accuracy(self.split.X_valid, self.split.y_valid)
        self.result.accuracies.append(acc)
        if self.out is not None and printed_epoch(self.config, epoch):
            batch = []
            if self.config.batch_accuracy and last_batch is not None:
                X, y = self.split.X_train[last_batch], self.split.y_train[last_batch]
                batch = ["Batch accuracy:", self._accuracy(X, y)]
            suffix = f"({note or f'epoch {seconds:.2f} s'})"
            print(epoch, *batch, "Validation accuracy:", acc, suffix, file=self.out, flush=True)
        try:
            self.writer.add_summary(
                tf1.Summary(
                    value=[
                        tf1.Summary.Value(tag="validation_accuracy", simple_value=float(acc)),
                        tf1.Summary.Value(tag="training_loss", simple_value=mean_loss),
                        tf1.Summary.Value(tag="epoch_seconds", simple_value=seconds),
                    ]
                ),
                epoch,
            )
            self.writer.add_summary(self._histograms(), epoch)
            self.writer.flush()
        except (RuntimeError, OSError) as e:  # the writer's thread failed: disk full, folder gone
            raise EventFileError(str(e).splitlines()[0]) from None


def printed_epoch(config, epoch):
    """Whether the cell prints ``epoch``'s line: every epoch, or every ``print_every``-th."""
    return epoch % config.print_every == 0


class EventFileError(OSError):
    """TensorBoard's event file could not be written; ``str()`` is the reason."""
