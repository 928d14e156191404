"""Export a trained run as a TF2 SavedModel with a ``serving_default`` signature.

The SavedModel is plain TF2 (a ``tf.Module`` with a ``tf.function``), so it loads with
``tf.saved_model.load`` in any eager program, TF Serving or TFLite conversion, with no
``compat.v1`` code. Input ``images``: uint8 (None, 28, 28). Outputs ``probabilities`` (float32,
(None, 10)) and ``classes`` (int64, (None,)). It runs :func:`bnmnist.network.forward`, the math
of the book's graph, with the moving statistics, after the book's scaling; then softmax.
"""

from __future__ import annotations

import tensorflow as tf

from . import network, runs
from .checkpoint import check_compatible
from .graph import build_graph


class InferenceModule(tf.Module):
    def __init__(self, config, values):
        super().__init__(name="bnmnist")
        self.config = config
        self.weights = {
            name: tf.Variable(value, trainable=False, name=name.replace("/", "__")) for name, value in values.items()
        }
        # The book divides by 255. In a tf.function Grappler's constant folding would turn a
        # division by the constant 255 into a multiplication by 1/255, which moves some pixel
        # values by one ulp; a divisor held in a variable cannot be folded, so the division
        # stays the book's.
        self.pixel_scale = tf.Variable(255.0, trainable=False, name="pixel_scale")

    def _moving_statistics(self, layer, z):
        bn = layer.batch_norm
        return self.weights[f"{bn}/moving_mean"], self.weights[f"{bn}/moving_variance"]

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8, name="images")])
    def serve(self, images):
        x = tf.reshape(tf.cast(images, tf.float32), [-1, 28 * 28]) / self.pixel_scale
        logits = network.forward(self.config, x, self.weights.__getitem__, self._moving_statistics)
        return {"probabilities": tf.nn.softmax(logits), "classes": tf.argmax(logits, axis=1)}


def export_saved_model(run, out_dir, logdir="tf_logs"):
    """Write the SavedModel of ``run`` (folder, checkpoint prefix or "latest") to ``out_dir``."""
    _, prefix, config = runs.resolve(run, logdir)
    variables = build_graph(config, train_op=False).model_variables
    check_compatible(prefix, variables)
    reader = tf.train.load_checkpoint(prefix)
    module = InferenceModule(config, {name: reader.get_tensor(name) for name in network.variable_names(config)})
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.serve})
    return str(out_dir)
