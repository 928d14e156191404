"""A trained run, opened again: ``bnmnist.restore(path)`` in its own graph and session, and
:func:`export_saved_model`, a plain TF2 SavedModel of it. Both rebuild the network from the run's
``config.json`` and read only variables: a ``.meta`` file could carry arbitrary ops.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from . import data, network, runs
from .errors import RunFolderError
from .graph import build_graph

tf1 = tf.compat.v1


def as_model_input(images: np.ndarray) -> np.ndarray:
    """uint8 (n, 28, 28) raw images, or float (n, 784) already in [0, 1] -> float32 (n, 784)."""
    a = np.asarray(images)
    if a.dtype == np.uint8 and a.ndim == 3 and a.shape[1:] == (28, 28):
        return data.scale_images(a)
    if np.issubdtype(a.dtype, np.floating) and a.ndim == 2 and a.shape[1] == 784:
        if a.size and not np.all(np.isfinite(a)):
            raise ValueError("images must not hold NaN or infinite values")
        if a.size and (a.min() < 0 or a.max() > 1):
            raise ValueError("images must be scaled to [0, 1] (pixels / 255) when given as floats")
        return a.astype(np.float32, copy=False)
    hint = "; for one image pass images[None]" if a.shape in ((28, 28), (784,)) else ""
    raise ValueError(
        f"images must be uint8 of shape (n, 28, 28) or float of shape (n, 784) in [0, 1]; got {a.dtype} {a.shape}{hint}"
    )


class RestoredModel:
    """A trained network in its own graph and session. Use as a context manager, or ``close()``."""

    def __init__(self, path: str, logdir: str = "tf_logs"):
        self.closed = False
        self.run_dir, self.checkpoint, self.config = runs.resolve(path, logdir)
        self.handles = h = build_graph(self.config, train_op=False)
        self.graph = h.graph
        with self.graph.as_default():
            saver = tf1.train.Saver(var_list=h.model_variables)
        self.session = tf1.Session(graph=self.graph)
        try:
            with self.graph.as_default():
                runs.restore_checkpoint(self.session, saver, self.checkpoint, h.model_variables)
        except Exception:
            self.session.close()
            raise

    def _run(self, fetch, feed):
        if self.closed:
            raise RuntimeError(f"{self!r} is closed; restore it again with bnmnist.restore")
        return self.session.run(fetch, feed)

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        return self._run(self.handles.probabilities, {self.handles.X: as_model_input(images)})

    def predict(self, images: np.ndarray) -> np.ndarray:
        return self._run(self.handles.predictions, {self.handles.X: as_model_input(images)})

    def evaluate(self, images: np.ndarray, labels: np.ndarray) -> np.float32:
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

    def load_data(self) -> data.Mnist:
        """MNIST for this run: the copy it was trained on, as its ``data.json`` records it (checked
        by SHA-256), or ``BNMNIST_DATA`` if it holds the same data. A :class:`bnmnist.data.Mnist`."""
        try:
            record = runs.read_data_record(self.run_dir)
        except RunFolderError:
            return data.load()  # a run folder without its record: the usual sources
        return data.load_recorded(record, owner=self.run_dir)

    def variables(self) -> dict[str, np.ndarray]:
        """Name -> NumPy value of every restored variable."""
        values = self._run(self.handles.model_variables, None)
        return {v.op.name: value for v, value in zip(self.handles.model_variables, values)}

    def close(self) -> None:
        self.closed = True
        self.session.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"RestoredModel({self.checkpoint!r}, preset={self.config.preset!r})"


def restore(path: str = "latest", logdir: str = "tf_logs") -> RestoredModel:
    """Restore a run folder, a checkpoint prefix, or ``"latest"`` (the newest run under
    ``logdir`` that holds a checkpoint). Returns a :class:`RestoredModel`."""
    return RestoredModel(path, logdir)


class InferenceModule(tf.Module):
    """The exported program: input ``images``, uint8 (None, 28, 28); outputs ``probabilities``
    (float32, (None, 10)) and ``classes`` (int64). It runs :func:`bnmnist.network.forward` with the
    moving statistics, after the book's scaling; no ``compat.v1`` code."""

    def __init__(self, config, values):
        super().__init__(name="bnmnist")
        self.config = config
        self.weights = {
            name: tf.Variable(value, trainable=False, name=name.replace("/", "__")) for name, value in values.items()
        }
        self.pixel_scale = tf.Variable(255.0, trainable=False, name="pixel_scale")

    def _moving_statistics(self, layer, _z):
        bn = layer.batch_norm
        return self.weights[f"{bn}/moving_mean"], self.weights[f"{bn}/moving_variance"]

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8, name="images")])
    def serve(self, images):
        x = network.scale_pixels(tf.reshape(images, [-1, 28 * 28]), self.pixel_scale)
        logits = network.forward(self.config, x, self.weights.__getitem__, self._moving_statistics)
        return {"probabilities": tf.nn.softmax(logits), "classes": tf.argmax(logits, axis=1)}


def export_saved_model(run: str, out_dir: str, logdir: str = "tf_logs") -> str:
    """Write the SavedModel of ``run`` (folder, checkpoint prefix or "latest") to ``out_dir``."""
    _, prefix, config = runs.resolve(run, logdir)
    variables = build_graph(config, train_op=False).model_variables
    runs.check_compatible(prefix, variables)
    reader = tf.train.load_checkpoint(prefix)
    module = InferenceModule(config, {name: reader.get_tensor(name) for name in network.variable_names(config)})
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.serve})
    return str(out_dir)
