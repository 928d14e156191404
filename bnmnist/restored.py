"""``bnmnist.restore(path)``: open a trained run in a notebook, from the package's own code.

The graph is rebuilt from the package and the run's ``config.json``, then every variable (moving
statistics included) is restored from the checkpoint. Nothing is imported from a ``.meta`` file,
which could carry arbitrary ops. Each restored model holds its own graph and session, so several
can be open side by side, and nothing global in TensorFlow is touched.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from . import atomic, checkpoint, data, runs
from .graph import build_graph

tf1 = tf.compat.v1


def as_model_input(images):
    """uint8 (n, 28, 28) raw images, or float (n, 784) already in [0, 1] -> float32 (n, 784)."""
    a = np.asarray(images)
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[1:] == (28, 28):
        return data.scale_images(a)
    if np.issubdtype(a.dtype, np.floating) and a.ndim == 2 and a.shape[1] == 784:
        if a.size:
            if not np.all(np.isfinite(a)):
                raise ValueError("images must not hold NaN or infinite values")
            if a.min() < 0 or a.max() > 1:
                raise ValueError("images must be scaled to [0, 1] (pixels / 255) when given as floats")
        return a.astype(np.float32, copy=False)
    hint = "; for one image pass images[None]" if a.shape in ((28, 28), (784,)) else ""
    raise ValueError(
        f"images must be uint8 of shape (n, 28, 28) or float of shape (n, 784) in [0, 1]; got {a.dtype} {a.shape}{hint}"
    )


class RestoredModel:
    """A trained network in its own graph and session. Use as a context manager, or ``close()``."""

    def __init__(self, path, logdir="tf_logs"):
        self.closed = False
        self.run_dir, self.checkpoint, self.config = runs.resolve(path, logdir)
        self.handles = h = build_graph(self.config, train_op=False)
        self.graph = h.graph
        with self.graph.as_default():
            saver = tf1.train.Saver(var_list=h.model_variables)
        self.session = tf1.Session(graph=self.graph)
        try:
            with self.graph.as_default():
                checkpoint.restore(self.session, saver, self.checkpoint, h.model_variables)
        except Exception:
            self.session.close()
            raise

    def _run(self, fetch, feed):
        if self.closed:
            raise RuntimeError(f"{self!r} is closed; restore it again with bnmnist.restore")
        return self.session.run(fetch, feed)

    def predict_proba(self, images):
        return self._run(self.handles.probabilities, {self.handles.X: as_model_input(images)})

    def predict(self, images):
        return self._run(self.handles.predictions, {self.handles.X: as_model_input(images)})

    def evaluate(self, images, labels):
        """Accuracy as the book computes it (``eval/accuracy``), a float32."""
        X = as_model_input(images)
        y = np.asarray(labels)
        if y.shape != (len(X),) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"labels must be integers of shape ({len(X)},); got {y.dtype} {y.shape}")
        if not y.size:
            raise ValueError("evaluate needs at least one image and label; the accuracy of none is undefined")
        if y.min() < 0 or y.max() > 9:
            raise ValueError(f"labels must be digits 0-9; got {y.min()}..{y.max()}")
        return self._run(self.handles.accuracy, {self.handles.X: X, self.handles.y: y.astype(np.int32)})

    def load_data(self):
        """MNIST for this run: the copy it was trained on, as its ``data.json`` records it (checked
        by SHA-256), or ``BNMNIST_DATA`` if set, which must hold the same data. A
        :class:`bnmnist.data.Mnist`."""
        try:
            record = atomic.read_json(os.path.join(self.run_dir, runs.DATA_FILE))
        except (OSError, ValueError):
            return data.load()  # a run folder without its record: the usual sources
        return data.load_recorded(record, owner=self.run_dir)

    def variables(self):
        """Name -> NumPy value of every restored variable."""
        values = self._run(self.handles.model_variables, None)
        return {v.op.name: value for v, value in zip(self.handles.model_variables, values)}

    def close(self):
        self.closed = True
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"RestoredModel({self.checkpoint!r}, preset={self.config.preset!r})"


def restore(path="latest", logdir="tf_logs"):
    """Restore a run folder, a checkpoint prefix, or ``"latest"`` (the newest run under
    ``logdir`` that holds a checkpoint). Returns a :class:`RestoredModel`."""
    return RestoredModel(path, logdir)
