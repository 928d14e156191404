"""The graph builder: the book's names, UPDATE_OPS, TF1 batch-norm math and the TF1 seeds."""

import numpy as np
import pytest
import tensorflow as tf

from bnmnist.config import PRESETS, Config
from bnmnist.graph import TENSOR_NAMES, TRAINING_OP_NAME, build_graph

from helpers import op_seeds

tf1 = tf.compat.v1
BOOK_VARIABLES = [
    f"{layer}/{v}"
    for layer in (
        "hidden1",
        "batch_normalization",
        "hidden2",
        "batch_normalization_1",
        "outputs",
        "batch_normalization_2",
    )
    for v in (
        ("kernel", "bias") if not layer.startswith("batch") else ("gamma", "beta", "moving_mean", "moving_variance")
    )
]


@pytest.fixture(scope="module")
def book():
    return build_graph(Config())


def test_each_build_is_a_fresh_graph_with_identical_names(book):
    other = build_graph(Config())
    assert other.graph is not book.graph and tf1.get_default_graph() is not book.graph
    assert [op.name for op in other.graph.get_operations()] == [op.name for op in book.graph.get_operations()]


def test_variables_have_the_books_names_and_shapes(book):
    names = [v.op.name for v in book.model_variables]
    assert names == BOOK_VARIABLES
    shapes = {v.op.name: v.shape.as_list() for v in book.model_variables}
    assert shapes["hidden1/kernel"] == [784, 300] and shapes["outputs/kernel"] == [100, 10]
    assert shapes["batch_normalization_1/moving_variance"] == [100]
    trainable = {v.op.name for v in book.graph.get_collection(tf1.GraphKeys.TRAINABLE_VARIABLES)}
    assert not any("moving" in n for n in trainable) and len(trainable) == 12


def test_every_fetchable_tensor_has_an_explicit_name(book):
    g = book.graph
    for key, name in TENSOR_NAMES.items():
        assert g.get_tensor_by_name(name) is getattr(book, key), key
    assert g.get_operation_by_name(TRAINING_OP_NAME) is book.training_op
    assert book.X.op.type == "Placeholder" and book.y.op.type == "Placeholder"
    assert book.training.op.type == "PlaceholderWithDefault"
    assert book.X.dtype == tf.float32 and book.y.dtype == tf.int32 and book.training.dtype == tf.bool


def test_an_evaluation_graph_is_the_training_graph_without_its_train_scope(book):
    ev = build_graph(Config(), train_op=False)
    assert ev.training_op is None
    assert not [op.name for op in ev.graph.get_operations() if op.name.startswith("train/")]
    book_ops = [op.name for op in book.graph.get_operations() if not op.name.startswith("train/")]
    assert [op.name for op in ev.graph.get_operations()] == book_ops
    assert op_seeds(ev.graph) == op_seeds(book.graph)
    X = np.random.RandomState(1).rand(100, 784).astype(np.float32)
    outputs = []
    for h in (book, ev):  # the same initial weights, the same logits
        with tf1.Session(graph=h.graph) as sess:
            sess.run(h.init)
            outputs.append(sess.run([h.model_variables, h.logits], {h.X: X, h.training: True}))
    for a, b in zip(outputs[0][0] + [outputs[0][1]], outputs[1][0] + [outputs[1][1]]):
        assert np.array_equal(a, b)


def test_update_ops_hold_two_moving_average_updates_per_batch_norm_layer(book):
    updates = book.graph.get_collection(tf1.GraphKeys.UPDATE_OPS)
    assert updates == book.extra_update_ops and len(updates) == 6
    assert [u.name.split("/")[1] for u in updates] == ["batch_normalization"] * 2 + ["batch_normalization_1"] * 2 + [
        "batch_normalization_2"
    ] * 2


def _moving(sess, h):
    return sess.run([v for v in h.model_variables if "moving" in v.op.name])


def test_moving_mean_changes_only_in_training(book):
    rng = np.random.RandomState(0)
    X, y = rng.rand(50, 784).astype(np.float32), rng.randint(0, 10, 50).astype(np.int32)
    with tf1.Session(graph=book.graph) as sess:
        sess.run(book.init)
        before = _moving(sess, book)
        sess.run(book.extra_update_ops, {book.X: X, book.y: y})  # training defaults to False
        sess.run([book.accuracy, book.loss], {book.X: X, book.y: y})
        assert all(np.array_equal(a, b) for a, b in zip(before, _moving(sess, book)))
        sess.run(book.extra_update_ops, {book.X: X, book.y: y, book.training: True})
        after = _moving(sess, book)
        assert all(not np.array_equal(a, b) for a, b in zip(before, after))


def test_batch_norm_follows_tf1_math(book):
    """Training mode normalises with the biased batch variance and eps 1e-3, and the moving mean
    moves by (moving - batch) * (1 - momentum); checked against NumPy on the first layer."""
    rng = np.random.RandomState(1)
    X = rng.rand(64, 784).astype(np.float32)
    g = book.graph
    hidden1 = g.get_tensor_by_name("dnn/hidden1/BiasAdd:0")
    bn1 = g.get_tensor_by_name("dnn/batch_normalization/batchnorm/add_1:0")
    with tf1.Session(graph=g) as sess:
        sess.run(book.init)
        z, out = sess.run([hidden1, bn1], {book.X: X, book.training: True})
        sess.run(book.extra_update_ops, {book.X: X, book.training: True})
        variables = {v.op.name: v for v in book.model_variables}
        moving_mean, moving_var = sess.run(
            [variables["batch_normalization/moving_mean"], variables["batch_normalization/moving_variance"]]
        )
        inference = sess.run(bn1, {book.X: X})
    mean, var = z.mean(0), z.var(0)
    np.testing.assert_allclose(out, (z - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(moving_mean, 0 - (0 - mean) * (1 - 0.9), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(moving_var, 1 - (1 - var) * (1 - 0.9), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(inference, (z - moving_mean) / np.sqrt(moving_var + 1e-3), rtol=1e-4, atol=1e-4)


def test_book_graph_gets_the_op_seeds_tf1_gave_it(book):
    assert op_seeds(book.graph) == {"hidden1/kernel": 7, "hidden2/kernel": 95, "outputs/kernel": 183}


def _initial_kernel(config):
    h = build_graph(config)
    with tf1.Session(graph=h.graph) as sess:
        sess.run(h.init)
        return sess.run(h.model_variables[0])


def test_tf2_seeding_stays_available_and_gives_other_weights():
    tf2_seeds = op_seeds(build_graph(Config(seeding="tf2")).graph)
    assert tf2_seeds.keys() == op_seeds(build_graph(Config()).graph).keys() and set(tf2_seeds.values()) != {7, 95, 183}
    tf1_w, tf2_w = _initial_kernel(Config()), _initial_kernel(Config(seeding="tf2"))
    assert not np.array_equal(tf1_w, tf2_w)
    assert np.array_equal(tf1_w, _initial_kernel(Config()))  # deterministic


def test_he_initializer_is_truncated_normal_with_fan_in_scale():
    w = _initial_kernel(Config())
    std = np.sqrt(1.0 / 784)
    assert abs(w.std() - std) / std < 0.02 and np.abs(w).max() <= 2 * std / 0.87962566103423978 + 1e-6


def test_plain_preset_has_no_batch_norm_and_no_training_placeholder():
    h = build_graph(PRESETS["plain"])
    assert h.training is None and h.extra_update_ops == []
    assert [v.op.name for v in h.model_variables] == [
        "hidden1/kernel",
        "hidden1/bias",
        "hidden2/kernel",
        "hidden2/bias",
        "outputs/kernel",
        "outputs/bias",
    ]
    assert h.graph.get_operation_by_name("dnn/hidden1/Maximum").type == "Maximum"


def test_xla_loop_elu_equals_tensorflows_elu_kernel_and_its_gradient():
    from bnmnist.network import elu_as_cpu_kernel as _elu_as_tf_kernel

    z = np.concatenate([np.linspace(-20, 5, 20001, dtype=np.float32), [0.0, -0.0, -1e-30, 1e-30]])
    g = np.random.RandomState(0).randn(z.size).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        z_in, g_in = tf1.placeholder(tf.float32, z.shape), tf1.placeholder(tf.float32, z.shape)
        ours, book = _elu_as_tf_kernel(z_in), tf.nn.elu(z_in)
        fetches = [ours, book, tf.gradients(ours, z_in, g_in)[0], tf.gradients(book, z_in, g_in)[0]]
    with tf1.Session(graph=graph) as sess:
        ours_v, book_v, ours_g, book_g = sess.run(fetches, {z_in: z, g_in: g})
    assert np.array_equal(ours_v, book_v) and np.array_equal(ours_g, book_g)
    assert (ours_v < 0).sum() > 10000  # the exp branch is exercised
