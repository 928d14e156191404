"""One definition of the network: the graph, the XLA step and the export agree, for any architecture.

Fast, on synthetic data: the bn network, the plain network and an odd one.
"""

import numpy as np
import pytest
import tensorflow as tf

import bnmnist
from bnmnist import data, network, runs
from bnmnist.config import PRESETS, Config
from bnmnist.graph import build_graph
from bnmnist.restored import InferenceModule, export_saved_model
from bnmnist.trainer import train
from bnmnist.xla_loop import XlaEpochLoop

tf1 = tf.compat.v1
CONFIGS = {
    "bn": Config(),
    "plain": PRESETS["plain"],
    "odd": Config(hidden=(7, 50, 1000), activation="leaky_relu", initializer="glorot_uniform"),
}
# One XLA step against one per-step Session step, largest absolute difference of any variable:
# XLA fuses the element-wise ops and orders the sums its own way. Measured on these networks: at
# most 1.2e-7; the bound leaves room for other CPUs.
ONE_STEP_TOLERANCE = 1e-6


def synthetic_split(n_train=600, n_valid=100, n_test=100, seed=0):
    """Images with a border of always-zero pixels, as MNIST has, and learnable classes."""
    rng = np.random.RandomState(seed)

    def images(n):
        x = np.zeros((n, 28, 28), np.uint8)
        x[:, 3:25, 3:25] = rng.randint(0, 256, (n, 22, 22))
        return x

    y = [rng.randint(0, 10, n).astype(np.uint8) for n in (n_train + n_valid, n_test)]
    mnist = data.Mnist(images(n_train + n_valid), y[0], images(n_test), y[1], "synthetic")
    return data.split(mnist, n_valid=n_valid), mnist


@pytest.fixture(scope="module")
def split():
    return synthetic_split()[0]


def step_variables(config, split, loop):
    """The variables after one training step on the first 50 training images, from the same
    initial values, by the per-step Session step or the XLA step."""
    h = build_graph(config)
    batch = np.arange(50)
    with tf1.Session(graph=h.graph) as sess:
        if loop == "xla":
            xla = XlaEpochLoop(sess, h, config, split.train_pixels, split.y_train)
            sess.run(h.init)
            xla.start_epoch([batch])
            xla.run(0, 1)
        else:
            sess.run(h.init)
            feed = {h.X: split.X_train[batch], h.y: split.y_train[batch]}
            if h.training is not None:
                feed[h.training] = True
            sess.run([h.training_op, h.extra_update_ops], feed)
        return {v.op.name: value for v, value in zip(h.model_variables, sess.run(h.model_variables))}


# chapter cells the XLA loop can run: their l1 penalty, clipping and input scaling
XLA_CHAPTER_CELLS = ("selu", "l1", "l1_regularizer", "gradient_clipping")


@pytest.mark.parametrize("name", [*CONFIGS, *XLA_CHAPTER_CELLS])
def test_one_xla_step_agrees_with_one_session_step(name, split):
    config = CONFIGS.get(name) or PRESETS[name].replace(loop="xla")
    session, xla = step_variables(config, split, "feed_dict"), step_variables(config, split, "xla")
    assert list(session) == list(xla) == network.variable_names(config)
    moved = 0
    for var in session:
        np.testing.assert_allclose(xla[var], session[var], rtol=0, atol=ONE_STEP_TOLERANCE, err_msg=var)
        moved += "/gamma" not in var  # every other variable moves in a step
    assert moved


@pytest.fixture(scope="module")
def trained_runs(split, tmp_path_factory):
    """A finished one-epoch run of each architecture (the per-step loop: no compile to wait for)."""
    logdir = str(tmp_path_factory.mktemp("network_runs"))
    return {
        name: train(
            config.replace(epochs=1, batch_size=100, loop="feed_dict"), split, runs.new_run_dir(logdir), out=None
        ).run_dir
        for name, config in CONFIGS.items()
    }


@pytest.mark.parametrize("name", CONFIGS)
def test_export_gives_the_probabilities_of_bnmnist_restore(name, trained_runs, tmp_path):
    images = synthetic_split(seed=1)[1].x_test
    out = export_saved_model(trained_runs[name], tmp_path / "saved_model")
    exported = tf.saved_model.load(out).signatures["serving_default"](images=tf.constant(images))
    with bnmnist.restore(trained_runs[name]) as model:
        restored = model.predict_proba(images)
        classes = model.predict(images)
    assert exported["probabilities"].numpy().tobytes() == restored.tobytes()
    assert np.array_equal(exported["classes"].numpy(), classes)


@pytest.mark.parametrize("name", CONFIGS)
def test_every_path_names_the_layers_alike(name, trained_runs):
    config = CONFIGS[name]
    names = network.variable_names(config)
    assert [v.op.name for v in build_graph(config).model_variables] == names
    prefix = runs.read_state(trained_runs[name])[-1]
    assert sorted(n for n, _ in tf.train.list_variables(prefix) if n != "run_state") == sorted(names)
    values = {n: np.zeros(s, np.float32) for n, s in tf.train.list_variables(prefix) if n != "run_state"}
    assert list(InferenceModule(config, values).weights) == sorted(names)
    layers = network.layers(config)
    assert [layer.dense for layer in layers] == [f"hidden{i}" for i in range(1, len(config.hidden) + 1)] + ["outputs"]
    assert [layer.units for layer in layers] == [*config.hidden, 10]


def test_the_xla_loop_gives_back_its_copy_of_the_training_set_once_released(split):
    config = CONFIGS["bn"]
    h = build_graph(config)
    with tf1.Session(graph=h.graph) as sess:
        xla = XlaEpochLoop(sess, h, config, split.train_pixels, split.y_train)
        held = [v for v in h.graph.get_collection(tf1.GraphKeys.LOCAL_VARIABLES) if v.dtype.base_dtype != tf.float32]
        assert [sess.run(v).shape[0] for v in held] == [len(split.train_pixels)] * 2  # pixels and labels
        xla.release()
        assert [sess.run(v).shape[0] for v in held] == [0, 0]


def test_a_run_of_the_xla_loop_never_makes_the_float32_training_set(tmp_path):
    """The XLA loop scales the uint8 pixels in its step; nothing else of a run may ask for the
    scaled copy (``Split.X_train``, made on first use), which would hold it for the whole run."""
    split = synthetic_split()[0]
    train(CONFIGS["plain"].replace(epochs=1, batch_size=100), split, runs.new_run_dir(str(tmp_path)), out=None)
    assert "X_train" not in vars(split)
