"""Export a trained run as a TF2 SavedModel with a ``serving_default`` signature.

The SavedModel is plain TF2 (a ``tf.Module`` with a ``tf.function``), so it loads with
``tf.saved_model.load`` in any eager program, TF Serving or TFLite conversion, with no
``compat.v1`` code. Input ``images``: uint8 (None, 28, 28). Outputs ``probabilities`` (float32,
(None, 10)) and ``classes`` (int64, (None,)). It runs the inference pass of the book's graph with
the same ops: the book's scaling, ``MatMul`` + ``BiasAdd``, batch norm with the moving statistics
(epsilon 1e-3), the run's activation, softmax.
"""
from __future__ import annotations

import tensorflow as tf

from . import runs
from .layers import EPSILON
from .checkpoint import check_compatible
from .graph import build_graph


class InferenceModule(tf.Module):
    def __init__(self, config, values):
        super().__init__(name="bnmnist")
        self.config = config
        self.weights = {name: tf.Variable(value, trainable=False, name=name.replace("/", "__"))
                        for name, value in values.items()}
        # The book divides by 255. In a tf.function Grappler's constant folding would turn a
        # division by the constant 255 into a multiplication by 1/255, which moves about one pixel
        # value in eight by one ulp (and the 20-epoch model's probabilities by up to 1e-6); a
        # divisor held in a variable cannot be folded, so the division stays the book's.
        self.pixel_scale = tf.Variable(255.0, trainable=False, name="pixel_scale")

    def _dense(self, x, name):
        return tf.nn.bias_add(tf.matmul(x, self.weights[name + "/kernel"]), self.weights[name + "/bias"])

    def _batch_norm(self, x, name):
        w = self.weights
        return tf.nn.batch_normalization(x, w[name + "/moving_mean"], w[name + "/moving_variance"],
                                         w[name + "/beta"], w[name + "/gamma"], EPSILON)

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8, name="images")])
    def serve(self, images):
        cfg = self.config
        x = tf.reshape(tf.cast(images, tf.float32), [-1, 28 * 28]) / self.pixel_scale
        activation = tf.nn.elu if cfg.activation == "elu" else (lambda z: tf.maximum(0.01 * z, z))
        n_bn = 0
        names = [f"hidden{i}" for i in range(1, len(cfg.hidden) + 1)] + ["outputs"]
        for name in names:
            x = self._dense(x, name)
            if cfg.batch_norm:
                x = self._batch_norm(x, "batch_normalization" + (f"_{n_bn}" if n_bn else ""))
                n_bn += 1
            if name != "outputs":
                x = activation(x)
        return {"probabilities": tf.nn.softmax(x), "classes": tf.argmax(x, axis=1)}


def export_saved_model(run, out_dir, logdir="tf_logs"):
    """Write the SavedModel of ``run`` (folder, checkpoint prefix or "latest") to ``out_dir``."""
    _, prefix, config = runs.resolve(run, logdir)
    variables = build_graph(config, train_op=False).model_variables
    check_compatible(prefix, variables)
    reader = tf.train.load_checkpoint(prefix)
    names = [v.op.name for v in variables]
    module = InferenceModule(config, {n: reader.get_tensor(n) for n in names})
    tf.saved_model.save(module, str(out_dir), signatures={"serving_default": module.serve})
    return str(out_dir)
