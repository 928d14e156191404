"""The trainer: the book's batches, the published table on real MNIST, determinism, run folders."""

import datetime
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from bnmnist import data, runs, trainer
from bnmnist.config import Config
from bnmnist.errors import RunFolderError
from bnmnist.graph import build_graph
from bnmnist.trainer import batch_indices, shuffle_batch, train
from bnmnist.training_session import EpochEnd, session_config

from helpers import BOOK_TABLE, ROOT, TRAIN_SCRIPT, final_variables, read_events, run_dir_from, table_from


def book_shuffle_batch(X, y, batch_size):
    """Verbatim from the book's chapter 11 notebook."""
    rnd_idx = np.random.permutation(len(X))
    n_batches = len(X) // batch_size
    for batch_idx in np.array_split(rnd_idx, n_batches):
        X_batch, y_batch = X[batch_idx], y[batch_idx]
        yield X_batch, y_batch


def test_shuffle_batch_gives_the_books_batches():
    X, y = np.arange(1037 * 2).reshape(1037, 2), np.arange(1037)
    np.random.seed(42)
    book = [yb for _, yb in book_shuffle_batch(X, y, 200)] + [yb for _, yb in book_shuffle_batch(X, y, 200)]
    rng = np.random.RandomState(42)
    ours = [yb for _, yb in shuffle_batch(X, y, 200, rng)] + [yb for _, yb in shuffle_batch(X, y, 200, rng)]
    assert len(ours) == 10 and all(np.array_equal(a, b) for a, b in zip(book, ours))
    assert sorted(len(b) for b in batch_indices(1037, 200, np.random.RandomState(0))) == [207, 207, 207, 208, 208]


@pytest.mark.slow
def test_train_script_prints_the_books_seed_42_table(book_runs):
    out = book_runs[0].stdout
    assert table_from(out) == BOOK_TABLE, out
    lines = [l for l in out.splitlines() if "Validation accuracy" in l]
    assert lines[0].startswith("0 Validation accuracy: 0.8952 ")
    assert any(l.startswith("Test accuracy: 0.97") for l in out.splitlines())


@pytest.mark.slow
def test_same_command_twice_gives_bit_identical_table_and_variables(book_runs):
    a, b = (run_dir_from(p.stdout) for p in book_runs)
    assert a != b
    assert table_from(book_runs[0].stdout) == table_from(book_runs[1].stdout)
    va, vb = final_variables(a), final_variables(b)
    assert sorted(va) == sorted(vb) and len(va) == 18
    for name in va:
        assert va[name].tobytes() == vb[name].tobytes(), name


@pytest.mark.slow
def test_run_folder_holds_config_checkpoints_and_events(book_runs):
    run_dir = run_dir_from(book_runs[0].stdout)
    assert os.path.basename(run_dir).startswith("run-")
    cfg = json.load(open(os.path.join(run_dir, "config.json")))
    assert cfg["epochs"] == 20 and cfg["batch_size"] == 200 and cfg["seed"] == 42
    prefixes = runs.read_state(run_dir)
    assert [os.path.basename(p) for p in prefixes] == [f"model.ckpt-{e}" for e in range(15, 20)]
    for p in prefixes:
        assert os.path.exists(p + ".index") and os.path.exists(p + ".meta")
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(run_dir))
    names = dict(tf.train.list_variables(prefixes[-1]))
    assert names["batch_normalization_2/moving_mean"] == [10]
    results = json.load(open(os.path.join(run_dir, "results.json")))
    assert results["validation_accuracy_printed"] == BOOK_TABLE


# Largest |difference| between any variable of the XLA loop and of the per-step loops after 2
# epochs on real MNIST, as `python benchmarks/compare_loops.py` prints it: 5.96e-07
# (batch_normalization_2/moving_variance); allowed: 5e-6.
XLA_TOLERANCE = 5e-6


@pytest.mark.slow
def test_xla_loop_and_per_step_loops_print_the_same_table(mnist_dir, tmp_path):
    split = data.split(data.load(mnist_dir))

    def two_epochs(**kwargs):
        trainer.STEPS_PER_CALL = kwargs.pop("steps_per_call", None)
        run_dir = runs.new_run_dir(str(tmp_path))
        try:
            result = train(Config().replace(epochs=2, **kwargs), split, run_dir, out=None)
        finally:
            trainer.STEPS_PER_CALL = None
        return [str(a) for a in result.accuracies], final_variables(run_dir)

    table, xla = two_epochs()
    assert table == BOOK_TABLE[:2]
    # the XLA loop: bit-identical under other thread settings and in smaller Session calls
    for kwargs in ({"threads": (2, 1)}, {"steps_per_call": 40}):
        other_table, other = two_epochs(**kwargs)
        assert other_table == table, kwargs
        for name in xla:
            assert xla[name].tobytes() == other[name].tobytes(), (kwargs, name)
    # the book's per-step feed_dict loop: within XLA_TOLERANCE of the XLA loop (XLA fuses and
    # orders floats its way)
    feed_table, feed = two_epochs(loop="feed_dict")
    assert feed_table == table
    for name in xla:
        np.testing.assert_allclose(xla[name], feed[name], rtol=0, atol=XLA_TOLERANCE, err_msg=name)
    assert any(xla[name].tobytes() != feed[name].tobytes() for name in xla)  # really two paths
    # the XLA loop leaves out the pixels that are 0 in every training image: their kernel rows
    # keep the initial values exactly, as the book's loop leaves them (its gradient there is 0)
    unused = ~(split.X_train != 0).any(axis=0)
    assert unused.sum() == 69
    h = build_graph(Config())
    with tf.compat.v1.Session(graph=h.graph) as sess:
        sess.run(h.init)
        initial = sess.run(next(v for v in h.model_variables if v.op.name == "hidden1/kernel"))
    for variables in (xla, feed):
        assert variables["hidden1/kernel"][unused].tobytes() == initial[unused].tobytes()


@pytest.mark.slow
def test_xla_loop_handles_batches_of_two_sizes_and_a_partial_epoch(tiny_mnist, tmp_path, monkeypatch):
    split = data.split(data.load(tiny_mnist))
    n = len(split.X_train)
    config = Config(epochs=2, batch_size=n // 3 - 1)  # np.array_split: 3 batches, two sizes
    assert len({len(b) for b in batch_indices(n, config.batch_size, np.random.RandomState(0))}) == 2
    results = {}
    for loop, steps_per_call in (("xla", None), ("xla", 2), ("feed_dict", None)):
        run_dir = runs.new_run_dir(str(tmp_path))
        monkeypatch.setattr(trainer, "STEPS_PER_CALL", steps_per_call)
        result = train(config.replace(loop=loop), split, run_dir, out=None)
        results[loop, steps_per_call] = result.losses, final_variables(run_dir)
    (losses, xla), (chunked_losses, chunked), (step_losses, step) = results.values()
    assert losses == chunked_losses and len(losses) == 2
    np.testing.assert_allclose(losses, step_losses, rtol=1e-5)
    for name in xla:
        assert xla[name].tobytes() == chunked[name].tobytes(), name
        np.testing.assert_allclose(xla[name], step[name], rtol=0, atol=XLA_TOLERANCE, err_msg=name)


@pytest.mark.slow
def test_dry_run_trains_a_couple_of_steps_and_saves_a_checkpoint(dry_runs_at_once):
    p = dry_runs_at_once[1][0]
    assert p.returncode == 0, p.stderr
    assert len(table_from(p.stdout)) == 1
    run_dir = run_dir_from(p.stdout)
    assert len(runs.read_state(run_dir)) == 1
    assert "Training took" in p.stdout and "examples/s" in p.stdout
    assert "Start-up before the first step:" in p.stdout and "TensorFlow import" in p.stdout
    assert " s)" in table_lines(p.stdout)[0]  # each epoch says how long it took


def table_lines(stdout):
    return [line for line in stdout.splitlines() if " Validation accuracy: " in line]


def test_importing_the_package_and_cli_does_not_import_tensorflow():
    code = (
        "import sys, bnmnist, bnmnist.cli, bnmnist.data, bnmnist.config, bnmnist.runs; "
        "print('tensorflow' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT).stdout
    assert out.strip() == "False"


@pytest.mark.slow
def test_the_command_line_loads_tensorflow_without_keras_and_keras_still_imports_after():
    load = "from bnmnist.cli import _import_tensorflow_without_keras as load; load(); "
    codes = [  # as train.py does; and after a download through Keras's get_file had imported Keras
        "import sys; " + load + "print('tensorflow' in sys.modules, 'keras' in sys.modules); "
        "import keras; print(keras.utils.get_file.__name__)",
        "import sys, keras; " + load + "print('tensorflow' in sys.modules, sys.modules['keras'] is keras)",
    ]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env
        )
        for code in codes
    ]
    (fresh, err1), (after, err2) = [p.communicate(timeout=120) for p in procs]
    assert fresh.split() == ["True", "False", "get_file"], err1
    assert after.split() == ["True", "True"], err2


# Runs the command in-process, recording whether Python's cyclic collector is on during
# TensorFlow's import and when the first epoch starts, and whether anything was frozen by then.
COLLECTOR_DRIVER = """
import gc, sys
from bnmnist import cli, trainer
from bnmnist.errors import CheckpointError
seen = {}
load, run_epoch = cli._import_tensorflow_without_keras, trainer.run_epoch
def import_tf():
    seen["import"] = gc.isenabled()
    load()
def first_epoch(*args, **kwargs):
    seen.setdefault("loop", (gc.isenabled(), gc.get_freeze_count() > 0))
    return run_epoch(*args, **kwargs)
def refused(*args, **kwargs):
    raise CheckpointError("refused after the import")
cli._import_tensorflow_without_keras, trainer.run_epoch = import_tf, first_epoch
if sys.argv[1] == "refused":
    trainer.train = refused
rc = cli.main(sys.argv[2:])
print(rc, seen.get("import"), *seen.get("loop", ("-", "-")), gc.isenabled(), gc.get_freeze_count() > 0)
"""


@pytest.mark.slow
def test_the_collector_is_off_only_from_the_import_to_the_first_step(tiny_mnist, tmp_path):
    """The command keeps the start-up's objects out of the cyclic collector's scans, and gives the
    loop, and a run refused before its first step, the collector back on."""
    out = {}
    for case in ("trains", "refused"):
        args = ["--data", tiny_mnist, "--logdir", str(tmp_path / case), "--epochs", "1", "--quiet"]
        p = subprocess.run(
            [sys.executable, "-c", COLLECTOR_DRIVER, case, *args],
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
            timeout=300,
        )
        out[case] = p.stdout.split()[-6:]
        assert p.returncode == 0, p.stderr[-2000:]
    # return code, off during the import, on and frozen at the first epoch, on at the end
    assert out["trains"] == ["0", "False", "True", "True", "True", "True"]
    assert out["refused"] == ["2", "False", "-", "-", "True", "False"]


def test_runs_started_in_the_same_second_get_their_own_folders(tmp_path):
    now = datetime.datetime(2026, 11, 27, 8, 0, 0, tzinfo=datetime.timezone.utc)
    folders = [runs.new_run_dir(str(tmp_path), now=now) for _ in range(3)]
    assert [os.path.basename(f) for f in folders] == [
        "run-20261127080000",
        "run-20261127080000-1",
        "run-20261127080000-2",
    ]
    for f in folders:
        open(os.path.join(f, "config.json"), "w").write("{}")
        runs.write_state(f, [os.path.join(f, "model.ckpt-0")])
    assert runs.latest_run(str(tmp_path)) == folders[-1]


def test_latest_passes_over_run_folders_that_hold_no_checkpoint_yet(tmp_path):
    older, newer = (
        runs.new_run_dir(str(tmp_path), now=datetime.datetime(2026, 11, 27, h, tzinfo=datetime.timezone.utc))
        for h in (8, 9)
    )
    for f in (older, newer):  # both runs; only the older finished an epoch
        open(os.path.join(f, "config.json"), "w").write("{}")
    with pytest.raises(RunFolderError, match=r"none of the 2 run folder\(s\) under .* holds a checkpoint yet"):
        runs.latest_run(str(tmp_path))
    runs.write_state(older, [os.path.join(older, "model.ckpt-0")])
    assert runs.latest_run(str(tmp_path)) == older


@pytest.mark.slow
def test_console_script_is_the_same_entry_point(tiny_mnist, tmp_path):
    # the same help and the same refusal (before TensorFlow, so quick) from both: one program
    exe = os.path.join(os.path.dirname(sys.executable), "bnmnist-train")
    if not os.path.exists(exe):
        pytest.skip("bnmnist-train is not installed (pip install -e .)")
    for args in (["--help"], ["--data", tiny_mnist, "--logdir", str(tmp_path), "--batch-size", "99999"]):
        script = subprocess.run([sys.executable, TRAIN_SCRIPT, *args], capture_output=True, text=True, timeout=60)
        console = subprocess.run([exe, *args], capture_output=True, text=True, timeout=60)
        assert (console.returncode, console.stdout, console.stderr) == (script.returncode, script.stdout, script.stderr)
    assert console.returncode == 2 and "larger than the training set (1000 images)" in console.stderr


def test_state_file_with_only_the_newest_path_still_names_it(tmp_path):
    (tmp_path / "checkpoint").write_text('model_checkpoint_path: "model.ckpt-3"\n')
    assert runs.read_state(str(tmp_path)) == [str(tmp_path / "model.ckpt-3")]
    (tmp_path / "checkpoint").write_text('all_model_checkpoint_paths: "model.ckpt-2"\n')
    assert runs.read_state(str(tmp_path)) == [str(tmp_path / "model.ckpt-2")]


@pytest.mark.slow
def test_epoch_end_copy_validates_exactly_as_the_training_graph_and_logs_it(tiny_mnist, tmp_path):
    split = data.split(data.load(tiny_mnist))
    config = Config(epochs=1)
    h = build_graph(config)
    sess = tf.compat.v1.Session(graph=h.graph)
    sess.run(h.init)
    for idx in batch_indices(len(split.X_train), 200, np.random.RandomState(0))[:5]:  # moving stats move
        sess.run(
            [h.training_op, h.extra_update_ops], {h.X: split.X_train[idx], h.y: split.y_train[idx], h.training: True}
        )
    values = sess.run(h.model_variables)
    accuracy = sess.run(h.accuracy, {h.X: split.X_valid, h.y: split.y_valid})
    out = io.StringIO()
    with h.graph.as_default():
        writer = tf.compat.v1.summary.FileWriter(str(tmp_path))
    end = EpochEnd(config, split, writer, out, session_config())
    end.prepare()
    end.submit(0, values, 0.25, 1.5)
    validated = end.wait()
    end.close()
    writer.close()
    assert validated == accuracy
    assert out.getvalue() == f"0 Validation accuracy: {str(accuracy)} (epoch 1.50 s)\n"
    scalars, histograms, _ = read_events(str(tmp_path))
    assert scalars == {"validation_accuracy": {0: accuracy}, "training_loss": {0: 0.25}, "epoch_seconds": {0: 1.5}}
    assert len(histograms) == len(h.model_variables)
