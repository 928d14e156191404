"""Restoring runs: bnmnist.restore, the book's import_meta_graph recipe, the notebook, export."""

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
from bnmnist import data, runs
from bnmnist.atomic import read_json
from bnmnist.config import PRESETS
from bnmnist.errors import CheckpointError
from bnmnist.trainer import train

from helpers import ROOT, run_dir_from, run_train

tf1 = tf.compat.v1
pytestmark = pytest.mark.slow  # restores of trained runs, the recipe, the notebook and export


def printed_test_accuracy(run_dir):
    return json.load(open(os.path.join(run_dir, "results.json")))["test_accuracy"]


def test_restore_run_folder_prefix_and_latest_give_the_accuracy_the_run_printed(tiny_run, tiny_mnist):
    m = data.load(tiny_mnist)
    logdir = os.path.dirname(tiny_run)
    prefix = runs.read_state(tiny_run)[-1]
    for path in (tiny_run, prefix, prefix + ".index", "latest"):  # .index: what tab completion gives
        with bnmnist.restore(path, logdir=logdir) as model:
            assert float(model.evaluate(m.x_test, m.y_test)) == printed_test_accuracy(tiny_run)
            assert model.checkpoint.endswith("model.ckpt-1")


def test_restore_never_reads_a_meta_graph_file(tiny_run, tiny_mnist, tmp_path):
    run = tmp_path / "run-20260101000000"
    shutil.copytree(tiny_run, run)
    metas = [f for f in os.listdir(run) if f.endswith(".meta")]
    assert "graph.meta" in metas and any(f.startswith("model.ckpt-") for f in metas)
    for f in metas:  # a .meta can carry arbitrary ops: restore must not need one
        (run / f).unlink()
        (run / f).write_bytes(b"not a MetaGraphDef")
    m = data.load(tiny_mnist)
    with bnmnist.restore(str(run)) as model:
        assert float(model.evaluate(m.x_test, m.y_test)) == printed_test_accuracy(tiny_run)


def test_moving_statistics_are_restored(tiny_run):
    with bnmnist.restore(tiny_run) as model:
        values = model.variables()
    saved = tf.train.load_checkpoint(runs.read_state(tiny_run)[-1])
    for name in ("batch_normalization/moving_mean", "batch_normalization_2/moving_variance"):
        assert np.array_equal(values[name], saved.get_tensor(name))
        assert not np.all(values[name] == values[name].flat[0])  # really trained, not initial


def test_predict_takes_raw_uint8_or_scaled_floats_and_refuses_anything_else(tiny_run, tiny_mnist):
    m = data.load(tiny_mnist)
    with bnmnist.restore(tiny_run) as model:
        raw = model.predict(m.x_test[:50])
        scaled = model.predict(data.scale_images(m.x_test[:50]))
        proba = model.predict_proba(m.x_test[:50])
        assert raw.dtype == np.int64 and np.array_equal(raw, scaled)
        assert proba.shape == (50, 10) and np.allclose(proba.sum(1), 1, atol=1e-5)
        assert np.array_equal(proba.argmax(1), raw)
        for bad in (
            m.x_test[:3].astype(np.float32),
            m.x_test[:3].reshape(3, 784),
            data.scale_images(m.x_test[:3]) * 255,
            np.zeros((3, 28, 28), np.int64),
        ):
            with pytest.raises(ValueError, match="images must be"):
                model.predict(bad)
        with pytest.raises(ValueError, match="labels"):
            model.evaluate(m.x_test[:3], m.y_test[:4])
        with pytest.raises(ValueError, match="for one image pass images"):
            model.predict(m.x_test[0])
        with pytest.raises(ValueError, match="must not hold NaN"):
            model.predict(np.full((1, 784), np.nan, np.float32))
        with pytest.raises(ValueError, match="at least one image"):
            model.evaluate(m.x_test[:0], m.y_test[:0])  # the accuracy of none would be NaN
        assert model.predict(m.x_test[:0]).shape == (0,)  # predicting none is fine
        with pytest.raises(ValueError, match="digits 0-9"):
            model.evaluate(m.x_test[:3], np.array([10, 1, 2]))  # in_top_k would just say "wrong"
    with pytest.raises(RuntimeError, match="is closed; restore it again"):
        model.predict(m.x_test[:3])


def test_two_restored_runs_live_side_by_side_after_eager_tensorflow(tiny_run, tiny_mnist, tmp_path):
    assert tf.reduce_sum(tf.ones(3)).numpy() == 3.0  # a notebook that already used TF
    other = run_dir_from(run_train("--data", tiny_mnist, "--logdir", tmp_path, "--epochs", "1", "--seed", "7").stdout)
    m = data.load(tiny_mnist)
    a, b = bnmnist.restore(tiny_run), bnmnist.restore(other)
    try:
        assert a.graph is not b.graph
        assert not np.array_equal(a.predict_proba(m.x_test[:20]), b.predict_proba(m.x_test[:20]))
        assert float(a.evaluate(m.x_test, m.y_test)) == printed_test_accuracy(tiny_run)
        assert float(b.evaluate(m.x_test, m.y_test)) == printed_test_accuracy(other)
    finally:
        a.close()
        b.close()
    assert tf.reduce_sum(tf.ones(2)).numpy() == 2.0  # eager TF still works


def broken_copies(tiny_run, tmp_path):
    """(name, path, message fragments) for every checkpoint that can't be restored."""

    def copy(name):
        d = tmp_path / f"run-2026010100000{len(os.listdir(tmp_path))}"
        shutil.copytree(tiny_run, d)
        return d

    other = copy("other")
    cfg = read_json(other / "config.json")
    cfg["hidden"] = [300, 64]
    (other / "config.json").write_text(json.dumps(cfg))
    truncated = copy("truncated")
    for f in os.listdir(truncated):
        if f.startswith("model.ckpt-1.data"):
            full = truncated / f
            full.write_bytes(full.read_bytes()[:1000])
    empty = copy("empty")
    for f in os.listdir(empty):
        if f.startswith("model.ckpt") or f == "checkpoint":
            os.remove(empty / f)
    return [
        ("another architecture", str(other), ["hidden2/kernel", "[300, 100]", "[300, 64]"]),
        (
            "missing checkpoint",
            os.path.join(tiny_run, "model.ckpt-99"),
            ["model.ckpt-99", "missing", "keeps model.ckpt-0, model.ckpt-1"],
        ),
        ("truncated checkpoint", str(truncated), ["truncated or corrupt"]),
        ("no checkpoint in folder", str(empty), ["holds no checkpoint"]),
        ("not a run", str(tmp_path), ["not a bnmnist run folder"]),
    ]


def test_broken_or_foreign_checkpoints_give_one_clear_error(tiny_run, tmp_path):
    for name, path, fragments in broken_copies(tiny_run, tmp_path):
        with pytest.raises(CheckpointError) as err:
            bnmnist.restore(path)
        message = str(err.value)
        assert "\n" not in message and all(f in message for f in fragments), f"{name}: {message}"


def test_the_books_import_meta_graph_recipe_evaluates_and_keeps_training(tiny_run, tiny_mnist):
    split = data.split(data.load(tiny_mnist))
    prefix = runs.read_state(tiny_run)[-1]
    graph = tf.Graph()
    with graph.as_default():
        saver = tf1.train.import_meta_graph(prefix + ".meta")
        X, y = graph.get_tensor_by_name("X:0"), graph.get_tensor_by_name("y:0")
        training = graph.get_tensor_by_name("training:0")
        accuracy = graph.get_tensor_by_name("eval/accuracy:0")
        training_op = graph.get_operation_by_name("train/training_op")
        extra_update_ops = tf1.get_collection(tf1.GraphKeys.UPDATE_OPS)
        moving_mean = [v for v in tf1.global_variables() if v.op.name == "batch_normalization/moving_mean"][0]
        with tf1.Session() as sess:
            saver.restore(sess, prefix)
            assert float(accuracy.eval(feed_dict={X: split.X_test, y: split.y_test})) == printed_test_accuracy(tiny_run)
            before = sess.run(moving_mean)
            loss = graph.get_tensor_by_name("loss/loss:0")
            loss_before = loss.eval(feed_dict={X: split.X_train, y: split.y_train})
            for idx in np.array_split(np.random.RandomState(0).permutation(len(split.X_train)), 10):
                sess.run(
                    [training_op, extra_update_ops],
                    feed_dict={training: True, X: split.X_train[idx], y: split.y_train[idx]},
                )
            assert not np.array_equal(before, sess.run(moving_mean))
            assert loss.eval(feed_dict={X: split.X_train, y: split.y_train}) < loss_before


def test_notebook_runs_headless_and_shows_the_printed_accuracy_for_both_presets(tiny_run, tiny_mnist, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    path = os.path.join(ROOT, "notebooks", "restore_checkpoint.ipynb")
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit it without outputs"
    kinds = [c.cell_type for c in nb.cells]
    assert all(kinds[i - 1] == "markdown" for i, k in enumerate(kinds) if k == "code"), "prose before each cell"
    # as Jupyter runs it: the kernel in notebooks/, the runs in the project's tf_logs/: the book's
    # network, and the plain preset (no batch norm, no `training`), the newest, hence "latest"
    project = tmp_path / "project"
    (project / "notebooks").mkdir(parents=True)
    bn_run = str(shutil.copytree(tiny_run, project / "tf_logs" / "run-20000101000000"))
    mnist = data.load(tiny_mnist)
    info = {"source": mnist.source, "sha256": mnist.fingerprint()}
    # the run the reuse section starts from, older than the plain run that "latest" restores
    source_run = runs.new_run_dir(str(project / "tf_logs"))
    train(PRESETS["gradient_clipping"].replace(epochs=1), data.split(mnist), source_run, out=None, data_info=info)
    plain_run = runs.new_run_dir(str(project / "tf_logs"))
    train(
        PRESETS["plain"].replace(epochs=1),
        data.split(mnist),
        plain_run,
        out=None,
        data_info={"source": mnist.source, "sha256": mnist.fingerprint()},
    )
    # no BNMNIST_DATA: the data is the copy the run was trained on
    env = {k: v for k, v in os.environ.items() if k not in ("BNMNIST_RUN", "BNMNIST_DATA")}
    env.update(KERAS_HOME=str(tmp_path / "no_keras_cache"), TF_CPP_MIN_LOG_LEVEL="3")

    def execute(chosen):
        nb = nbformat.read(path, as_version=4)
        nbclient.NotebookClient(
            nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(project / "notebooks")}}
        ).execute(env=dict(env, **chosen))
        return [o for c in nb.cells for o in c.get("outputs", [])]

    from concurrent.futures import ThreadPoolExecutor

    cases = ((plain_run, {}), (bn_run, {"BNMNIST_RUN": bn_run}))
    with ThreadPoolExecutor(2) as pool:  # one kernel per core
        outputs = list(pool.map(lambda case: execute(case[1]), cases))
    for (run_dir, _), out in zip(cases, outputs):
        text = "".join(o.get("text", "") for o in out if o.get("output_type") == "stream")
        images = [o for o in out if "image/png" in o.get("data", {})]
        results = json.load(open(os.path.join(run_dir, "results.json")))
        printed = str(np.float32(results["test_accuracy"]))
        assert f"Test accuracy: {printed}\n" in text, run_dir
        assert f"Recipe test accuracy: {printed}\n" in text
        final_valid = results["validation_accuracy_printed"][-1]
        assert f"Validation accuracy before: {final_valid} after one more epoch:" in text
        assert len(images) == 2  # the digit grid and the confusion matrix
        restored = ", ".join(f"hidden{i}/{v}" for i in (1, 2, 3) for v in ("kernel", "bias"))
        assert f"Restored: {restored}\n" in text and re.search(r"^1 Validation accuracy: 0\.\d+$", text, re.M)
        noise = [o["text"] for o in out if o.get("output_type") == "stream" and o.get("name") == "stderr"]
        assert not noise, noise  # no TensorFlow start-up chatter in the cells


def test_load_data_reads_the_copy_the_run_was_trained_on_and_refuses_a_moved_or_changed_one(
    tiny_run, tiny_mnist, tmp_path, monkeypatch
):
    monkeypatch.delenv("BNMNIST_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no_keras_cache"))
    with bnmnist.restore(tiny_run) as model:
        assert model.load_data().source == os.path.realpath(tiny_mnist)
    for i, (change, needle) in enumerate(
        (({"source": str(tmp_path / "moved")}, "cannot be read now"), ({"sha256": "0" * 64}, "has changed since"))
    ):
        run = shutil.copytree(tiny_run, tmp_path / f"run{i}")
        record = read_json(run / "data.json")
        (run / "data.json").write_text(json.dumps({**record, **change}))
        with bnmnist.restore(str(run)) as model:
            with pytest.raises(bnmnist.data.DataError, match=needle) as err:
                model.load_data()
            assert record.get("source") in str(err.value) or change["source"] in str(err.value)
            assert "BNMNIST_DATA" in str(err.value)
    # BNMNIST_DATA wins over the record when it holds the same data, and is refused when not
    other = shutil.copytree(tiny_mnist, tmp_path / "other_copy")
    monkeypatch.setenv("BNMNIST_DATA", str(other))
    with bnmnist.restore(str(tmp_path / "run0")) as model:
        assert model.load_data().source == os.path.realpath(other)
    with (
        bnmnist.restore(str(tmp_path / "run1")) as model,
        pytest.raises(bnmnist.data.DataError, match="holds other data"),
    ):
        model.load_data()


# The SavedModel as a serving program uses it: a fresh eager process, no compat.v1 code.
LOAD_SAVED_MODEL = """
import sys, numpy as np, tensorflow as tf
out = tf.saved_model.load(sys.argv[1]).signatures["serving_default"](images=tf.constant(np.load(sys.argv[2])))
np.save(sys.argv[3], out["probabilities"].numpy()); np.save(sys.argv[4], out["classes"].numpy())
"""


def test_exported_saved_model_matches_the_session_on_the_whole_test_set(mnist_dir, book_runs, tmp_path):
    run_dir = run_dir_from(book_runs[0].stdout)  # the book's network, trained 20 epochs
    out = tmp_path / "saved_model"
    e = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "export.py"), run_dir, str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert e.returncode == 0, e.stderr
    m = data.load(mnist_dir)
    np.save(tmp_path / "x.npy", m.x_test)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_SAVED_MODEL,
            str(out),
            str(tmp_path / "x.npy"),
            str(tmp_path / "p.npy"),
            str(tmp_path / "c.npy"),
        ],
        check=True,
        timeout=300,
        env=env,
    )
    with bnmnist.restore(run_dir) as model:
        proba, classes = model.predict_proba(m.x_test), model.predict(m.x_test)
    exported_p, exported_c = np.load(tmp_path / "p.npy"), np.load(tmp_path / "c.npy")
    assert exported_p.shape == (10000, 10) and exported_c.dtype == np.int64
    assert np.array_equal(exported_c, classes)
    assert np.max(np.abs(exported_p - proba)) <= 1e-6


@pytest.mark.parametrize(
    "case",
    [
        "not a path",
        "not in a run",
        "not a run",
        "missing checkpoint",
        "bad config",
        "out exists",
        "out unwritable",
        "no runs for latest",
    ],
)
def test_export_refuses_a_wrong_run_or_out_dir_in_one_line_before_tensorflow(case, tiny_run, tmp_path):
    prefix = runs.read_state(tiny_run)[-1]
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("a file, in a folder that is not a run\n")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_run, broken)
    (broken / "config.json").write_text("{not json")
    args, says = {
        "not a path": ([str(tmp_path / "nope"), str(tmp_path / "out")], "nope: no such file or folder"),
        "not in a run": (
            [str(tmp_path / "taken" / "notes.txt"), str(tmp_path / "out")],
            "neither a run folder nor a checkpoint",
        ),
        "not a run": ([str(tmp_path), str(tmp_path / "out")], "is not a bnmnist run folder"),
        "missing checkpoint": ([prefix[:-1] + "7", str(tmp_path / "out")], "no such checkpoint"),
        "bad config": ([str(broken), str(tmp_path / "out")], "is not a readable bnmnist config"),
        "out exists": ([tiny_run, str(tmp_path / "taken")], "already exists; choose a new folder"),
        "out unwritable": ([tiny_run, "/proc/bnmnist/out"], "choose an OUT_DIR in a folder you can write"),
        "no runs for latest": (["latest", str(tmp_path / "out"), "--logdir", str(tmp_path / "empty")], "no runs under"),
    }[case]
    before = sorted(os.listdir(tiny_run))
    # -X importtime lists every module imported: TensorFlow must not be among them
    p = subprocess.run(
        [sys.executable, "-X", "importtime", os.path.join(ROOT, "scripts", "export.py"), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    errors = [l for l in p.stderr.splitlines() if not l.startswith("import time:")]
    assert p.returncode == 2 and len(errors) == 1 and says in errors[0], p.stderr[-2000:]
    assert errors[0].startswith("export: error: ")
    assert not any(
        l.split("|")[-1].strip() == "tensorflow" for l in p.stderr.splitlines() if l.startswith("import time:")
    )
    assert sorted(os.listdir(tiny_run)) == before and not (tmp_path / "out").exists()
