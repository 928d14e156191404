"""Reusing pretrained layers: partial restore, freezing, caching and the refusals on synthetic data;
the book's chain (gradient clipping, then a reuse cell) against the book's own code on MNIST."""

import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import bnmnist
from bnmnist import data, reuse, runs
from bnmnist.config import PRESETS
from bnmnist.graph import build_graph
from bnmnist.trainer import train

from helpers import op_seeds, run_dir_from, run_train

tf1 = tf.compat.v1
pytestmark = pytest.mark.slow  # each test trains on the synthetic data


def _tiny(preset, **changes):
    return PRESETS[preset].replace(**{"epochs": 2, "batch_size": 100, **changes})


@pytest.fixture(scope="module")
def split(tiny_mnist):
    return data.split(data.load(tiny_mnist))


@pytest.fixture(scope="module")
def source(split, tmp_path_factory):
    """A trained gradient_clipping run on the synthetic data: (run folder, its newest checkpoint)."""
    run_dir = runs.new_run_dir(str(tmp_path_factory.mktemp("source")))
    train(_tiny("gradient_clipping"), split, run_dir, out=None)
    return run_dir, runs.resolve(run_dir)[1]


def _reusing(preset, source, **changes):
    prefix = source[1]
    return _tiny(preset, reuse_from=os.path.abspath(prefix), reuse_sha256=reuse.sha256(prefix), **changes)


def _trained(config, split, tmp_path, name):
    run_dir = runs.new_run_dir(str(tmp_path / name))
    train(config, split, run_dir, out=None)
    with bnmnist.restore(run_dir) as model:
        return model.variables()


@pytest.fixture(scope="module")
def reused(source, split, tmp_path_factory):
    """Each reuse preset trained once from ``source`` on the synthetic data: name -> variables."""
    folder = tmp_path_factory.mktemp("reused")
    cache = {}

    def get(preset):
        if preset not in cache:
            cache[preset] = _trained(_reusing(preset, source), split, folder, preset)
        return cache[preset]

    return get


def _source_values(source):
    reader = tf.train.load_checkpoint(source[1])
    return {name: reader.get_tensor(name) for name, _ in tf.train.list_variables(source[1])}


def test_partial_restore_takes_the_lower_layers_and_leaves_the_new_ones_seeded(source):
    config = _reusing("reuse_lower", source)
    h = build_graph(config)
    with tf1.Session(graph=h.graph) as sess:
        sess.run(h.init)
        fresh = dict(zip([v.op.name for v in h.model_variables], sess.run(h.model_variables)))
        restored = reuse.restore_layers(sess, source[1], h.model_variables, "hidden[123]")
        after = dict(zip([v.op.name for v in h.model_variables], sess.run(h.model_variables)))
    assert restored == [f"hidden{i}/{v}" for i in (1, 2, 3) for v in ("kernel", "bias")]
    stored = _source_values(source)
    for name in restored:
        np.testing.assert_array_equal(after[name], stored[name])
    for name in ("hidden4/kernel", "hidden4/bias", "outputs/kernel", "outputs/bias"):
        np.testing.assert_array_equal(after[name], fresh[name])  # the new layers, as seeded
    seeds = op_seeds(h.graph)
    assert seeds["hidden4/kernel"] == 56 and seeds["outputs/kernel"] == 73  # TF1's, as the cell's


@pytest.mark.parametrize("preset", ["freeze_var_list", "freeze_stop_gradient", "cache_frozen"])
def test_frozen_layers_are_bit_identical_to_the_source_after_training(preset, source, reused):
    values = reused(preset)
    stored = _source_values(source)
    for name in ("hidden1/kernel", "hidden1/bias", "hidden2/kernel", "hidden2/bias"):
        np.testing.assert_array_equal(values[name], stored[name], err_msg=name)
    assert not np.array_equal(values["hidden3/kernel"], stored["hidden3/kernel"])  # hidden3 still learns


def test_training_on_the_cache_equals_training_through_the_frozen_layers(reused):
    """The caching cell prints the stop_gradient cell's table: the cache is the layer's output."""
    cached, through = reused("cache_frozen"), reused("freeze_stop_gradient")
    for name in cached:
        np.testing.assert_array_equal(cached[name], through[name], err_msg=name)


def test_the_cache_is_the_frozen_layers_output_for_every_image(source, split):
    config = _reusing("cache_frozen", source)
    h = build_graph(config)
    with tf1.Session(graph=h.graph) as sess:
        sess.run(h.init)
        reuse.restore_layers(sess, source[1], h.model_variables, config.restore_scope)
        cache = reuse.cache_outputs(sess, h, "hidden2", split.X_train)
        W1, b1, W2, b2 = sess.run([v for v in h.model_variables if re.match("hidden[12]/", v.op.name)])
    relu = lambda z: np.maximum(z, 0)  # noqa: E731
    want = relu(relu(split.X_train.astype(np.float64) @ W1 + b1) @ W2 + b2)
    assert cache.shape == (split.n_train, 50)
    np.testing.assert_allclose(cache, want, rtol=1e-4, atol=1e-5)


def test_the_imported_graph_and_the_rebuilt_one_train_the_same(source, reused):
    imported, rebuilt = reused("reuse_model"), reused("reuse_model_rebuilt")
    stored = _source_values(source)
    assert imported.keys() == rebuilt.keys()
    for name in imported:
        np.testing.assert_array_equal(imported[name], rebuilt[name], err_msg=name)
        assert not np.array_equal(imported[name], stored[name])  # trained on from the source's values


def test_the_book_vocabulary_builds_the_presets():
    grown = reuse.new_layers(PRESETS["gradient_clipping"], keep=3, hidden=(20,))
    assert grown == PRESETS["reuse_lower"]
    frozen = reuse.freeze(grown, ("hidden1", "hidden2"))
    assert frozen.train_scope == PRESETS["freeze_var_list"].train_scope == "hidden[34]|outputs"
    assert reuse.freeze(grown, ("hidden1", "hidden2"), how="stop_gradient").stop_gradient_after == "hidden2"
    with pytest.raises(ValueError, match="freeze the lowest layers"):
        reuse.freeze(grown, ("hidden2",))


def test_a_reuse_run_records_its_source_and_resumes_and_restores_without_it(tiny_mnist, source, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(source[0], src)
    logdir = tmp_path / "logs"
    p = run_train("--preset", "reuse_lower", "--from", src, "--data", tiny_mnist, "--logdir", logdir, "--epochs", "1")
    assert p.returncode == 0, p.stderr
    run_dir = run_dir_from(p.stdout)
    config = json.load(open(os.path.join(run_dir, "config.json")))
    prefix = runs.resolve(str(src))[1]
    assert config["reuse_from"] == os.path.abspath(prefix) and config["reuse_sha256"] == reuse.sha256(prefix)
    shutil.rmtree(src)  # the run folder is enough from here on
    p = run_train("--resume", run_dir, "--epochs", "2", "--data", tiny_mnist)
    assert p.returncode == 0, p.stderr
    with bnmnist.restore(run_dir) as model:
        assert model.config.preset == "reuse_lower" and model.variables()["hidden4/kernel"].shape == (50, 20)


def test_refusals_name_the_layer_and_the_shapes_in_one_line(tiny_mnist, source, tmp_path, tiny_run):
    bn_source = tiny_run  # a bn run: no hidden3, and hidden2 is 100 wide
    dry = tmp_path / "dry"
    assert (
        run_train("--data", tiny_mnist, "--logdir", dry, "--dry-run", "--preset", "gradient_clipping").returncode == 0
    )
    cases = [
        (["--preset", "reuse_lower"], "the reuse_lower preset starts from a trained run; pass --from RUN"),
        (["--preset", "gradient_clipping", "--from", source[0]], "--from is for the reuse presets"),
        (["--preset", "reuse_lower", "--from", str(tmp_path / "nope")], "no such file or folder"),
        (["--preset", "reuse_lower", "--from", bn_source], "hidden2/kernel is [300, 100] there but this network needs [300, 50]"),  # noqa: E501
        (["--preset", "reuse_lower", "--from", os.path.join(dry, os.listdir(dry)[0])], "is a dry run"),
    ]  # fmt: skip
    for args, message in cases:
        p = run_train(*args, "--data", tiny_mnist, "--logdir", tmp_path / "logs")
        assert p.returncode == 2 and "Traceback" not in p.stderr, (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert message in lines[-1] and lines[-1].startswith("bnmnist-train: error: "), (args, p.stderr)
    assert not os.path.exists(tmp_path / "logs") or not os.listdir(tmp_path / "logs")  # no run folder was made


# the Freezing section's cells, in notebook_cells.py's order
FREEZING = {"freeze_var_list": 127, "freeze_stop_gradient": 132}


def test_the_books_chain_gradient_clipping_then_freezing_prints_what_the_books_code_prints(
    mnist_dir, book_notebook, notebook_cells, tmp_path
):
    """Two epochs of the gradient-clipping cell, then one of each freezing cell from its
    checkpoint: bnmnist and the book's own code (TF1 seeds emulated) print the same values."""
    pytest.importorskip("tf_keras", reason="tf-keras (the dev extra) runs the book's tf.layers code")
    script = notebook_cells
    book = ""
    for section, epochs in (("Gradient Clipping", "2"), ("Freezing the Lower Layers", "1")):
        p = subprocess.run(
            [sys.executable, script, "--section", section, "--epochs", epochs, "--data", mnist_dir,
             "--notebook", book_notebook],
            capture_output=True, text=True, timeout=900, cwd=tmp_path, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        )  # fmt: skip
        assert p.returncode == 0, p.stderr[-2000:]
        book += p.stdout
    logdir = tmp_path / "logs"
    p = run_train("--preset", "gradient_clipping", "--epochs", "2", "--data", mnist_dir, "--logdir", logdir, "--quiet")
    assert p.returncode == 0, p.stderr
    source_run = run_dir_from(p.stdout)
    ours = {"gradient_clipping": json.load(open(os.path.join(source_run, "results.json")))}
    for preset in FREEZING:
        flags = ["--preset", preset, "--from", source_run, "--epochs", "1", "--logdir", logdir, "--quiet"]
        p = run_train(*flags, "--data", mnist_dir)
        assert p.returncode == 0, p.stderr
        ours[preset] = json.load(open(os.path.join(run_dir_from(p.stdout), "results.json")))
    # notebook_cells.py prints "cell 79: 0:0.288/0.288 1:0.7942/0.7936  exact 1/2": printed/notebook
    printed = {
        int(cell): [pair.split(":")[1].split("/")[0] for pair in pairs.split()]
        for cell, pairs in re.findall(r"^cell (\d+): (.*?)  exact", book, re.M)
    }
    assert printed[79] == ours["gradient_clipping"]["validation_accuracy_printed"]
    for preset, cell in FREEZING.items():
        assert printed[cell] == ours[preset]["validation_accuracy_printed"], preset


@pytest.mark.parametrize(
    "source_hidden, keep, new", [((300, 50, 50, 50, 50), 3, (20,)), ((300, 50, 50, 1200), 2, (1100, 7))]
)
def test_new_layers_on_an_imported_graph_get_tf1s_seeds(source_hidden, keep, new, split, tmp_path):
    """Seeded after every op of the imported graph, counted as the book's saved graph holds them:
    checked against the op sequence tf.compat.v1.layers makes under tf-keras."""
    pytest.importorskip("tf_keras", reason="tf-keras (the dev extra) builds the reference graphs")
    from bnmnist.graph import training_graph

    run_dir = runs.new_run_dir(str(tmp_path))
    train(_tiny("gradient_clipping", hidden=source_hidden), split, run_dir, out=None, dry_run=True)
    prefix = runs.resolve(run_dir)[1]
    config = PRESETS["reuse_lower_imported"].replace(
        hidden=source_hidden[:keep] + new, new_layers_from=keep, reuse_from=prefix, restore_scope=f"hidden[1-{keep}]"
    )
    ours = [seed for name, seed in op_seeds(training_graph(config).graph).items() if name.startswith("new_")]
    spec = {"imported": {"source": list(source_hidden), "keep": keep, "new": list(new)}}
    helper = os.path.join(os.path.dirname(__file__), "tf1_reference_seeds.py")
    out = subprocess.run([sys.executable, helper, json.dumps([spec])], capture_output=True, text=True, check=True)
    assert ours == json.loads(out.stdout.strip().splitlines()[-1])[0]


@pytest.mark.parametrize("preset", ["reuse_model", "reuse_lower_imported"])
def test_a_resumed_run_of_an_imported_graph_ends_bit_identical_to_an_unbroken_one(
    preset, source, reused, split, tmp_path
):
    """The resume rebuilds the network by code; its steps are the imported graph's, bit for bit."""
    config = _reusing(preset, source)
    whole = reused(preset)
    broken = runs.new_run_dir(str(tmp_path / "broken"))
    train(config.replace(epochs=1), split, broken, out=None)
    train(config, split, broken, resume=True, out=None)
    with bnmnist.restore(broken) as model:
        resumed = model.variables()
    for name in whole:
        np.testing.assert_array_equal(whole[name], resumed[name], err_msg=name)
