"""Helper run in its own process by test_seeding.py (tests only, never the package): builds
networks with ``tf.compat.v1.layers`` through tf-keras, which creates TF1's op sequence, and
prints, per random op, the op seed TF1 would have given it: the id of the newest op, counting
from 1. Input: a JSON list of architectures on argv[1]; output: one JSON list of seed lists."""

import json
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import tensorflow as tf  # noqa: E402
from tensorflow.python.framework import random_seed  # noqa: E402

tf1 = tf.compat.v1
tf1.disable_v2_behavior()
seen = []
_get_seed = random_seed.get_seed


def recording_get_seed(op_seed):
    graph = tf1.get_default_graph()
    if op_seed is None and graph.seed is not None:
        seen.append(len(graph.get_operations()))  # TF1: graph._last_id, ids counting from 1
    return _get_seed(op_seed)


random_seed.get_seed = recording_get_seed


def leaky_relu(z, name=None):
    return tf.maximum(0.01 * z, z, name=name)


def selu(z, scale=1.0507009873554805, alpha=1.6732632423543772):
    return scale * tf.where(z >= 0.0, z, alpha * tf.nn.elu(z))  # the chapter's own selu()


def l1_regularizer(scale):
    """tf.contrib.layers.l1_regularizer of TF 1.x, op for op."""

    def l1(weights):
        with tf.name_scope("l1_regularizer"):
            my_scale = tf.convert_to_tensor(scale, dtype=weights.dtype.base_dtype, name="scale")
            return tf.multiply(my_scale, tf.reduce_sum(tf.abs(weights)))

    return l1


def max_norm_regularizer(threshold):
    """The chapter's max_norm_regularizer()."""

    def max_norm(weights):
        clip = tf1.assign(weights, tf.clip_by_norm(weights, clip_norm=threshold, axes=1), name="max_norm")
        tf1.add_to_collection("max_norm", clip)

    return max_norm


def build(arch):
    tf1.reset_default_graph()
    tf1.set_random_seed(42)
    del seen[:]
    X = tf1.placeholder(tf.float32, shape=(None, 784), name="X")
    tf1.placeholder(tf.int32, shape=(None), name="y")
    dropout = arch.get("dropout_rate", 0.0)
    bn = arch["batch_norm"]
    training = tf1.placeholder_with_default(False, shape=(), name="training") if bn or dropout else None
    act = {"elu": tf.nn.elu, "leaky_relu": leaky_relu, "relu": tf.nn.relu, "selu": selu}[arch["activation"]]
    init = tf1.variance_scaling_initializer() if arch["initializer"] == "he" else None
    regularizer = None
    if arch.get("l1_scale") and arch.get("l1_form") == "regularizer":
        regularizer = l1_regularizer(arch["l1_scale"])
    if arch.get("max_norm") and arch.get("max_norm_form") == "regularizer":
        regularizer = max_norm_regularizer(arch["max_norm"])
    if dropout:
        X = tf1.layers.dropout(X, dropout, training=training)
    with tf.name_scope("dnn"):
        z = X
        for i, units in enumerate(arch["hidden"], start=1):
            if bn:
                z = tf1.layers.dense(z, units, kernel_initializer=init, name=f"hidden{i}")
                z = act(tf1.layers.batch_normalization(z, training=training, momentum=0.9))
            else:
                z = tf1.layers.dense(
                    z, units, kernel_initializer=init, activation=act, kernel_regularizer=regularizer, name=f"hidden{i}"
                )
            if dropout:
                z = tf1.layers.dropout(z, dropout, training=training)
        # the max-norm regularizer stays off the logits, as in the chapter; the l1 one does not
        top = regularizer if arch.get("l1_form") == "regularizer" else None
        logits = tf1.layers.dense(z, 10, kernel_initializer=init, kernel_regularizer=top, name="outputs")
        if bn:
            tf1.layers.batch_normalization(logits, training=training, momentum=0.9)
    return list(seen)


def build_imported(spec):
    """The reuse cell that imports the saved gradient-clipping graph (of ``spec["source"]``'s
    hidden sizes) and puts new layers (``spec["new"]``) on its ``hidden<keep>``: their seeds."""
    import tempfile

    tf1.reset_default_graph()
    tf1.set_random_seed(42)
    X = tf1.placeholder(tf.float32, shape=(None, 784), name="X")
    y = tf1.placeholder(tf.int32, shape=(None), name="y")
    with tf.name_scope("dnn"):
        z = X
        for i, units in enumerate(spec["source"], start=1):
            z = tf1.layers.dense(z, units, activation=tf.nn.relu, name=f"hidden{i}")
        logits = tf1.layers.dense(z, 10, name="outputs")
    with tf.name_scope("loss"):
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits), name="loss")
    optimizer = tf1.train.GradientDescentOptimizer(0.01)
    capped = [(tf.clip_by_value(g, -1.0, 1.0), v) for g, v in optimizer.compute_gradients(loss)]
    optimizer.apply_gradients(capped)
    with tf.name_scope("eval"):
        tf.reduce_mean(tf.cast(tf1.nn.in_top_k(logits, y, 1), tf.float32), name="accuracy")
    tf1.global_variables_initializer()
    meta = os.path.join(tempfile.mkdtemp(), "model.meta")
    tf1.train.Saver().export_meta_graph(meta)
    tf1.reset_default_graph()
    tf1.set_random_seed(42)
    del seen[:]
    tf1.train.import_meta_graph(meta)
    z = tf1.get_default_graph().get_tensor_by_name(f"dnn/hidden{spec['keep']}/Relu:0")
    for i, units in enumerate(spec["new"], start=spec["keep"] + 1):
        z = tf1.layers.dense(z, units, activation=tf.nn.relu, name=f"new_hidden{i}")
    tf1.layers.dense(z, 10, name="new_outputs")
    return list(seen)


if __name__ == "__main__":
    print(json.dumps([build_imported(a["imported"]) if "imported" in a else build(a) for a in json.loads(sys.argv[1])]))
