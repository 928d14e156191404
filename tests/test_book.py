"""bnmnist.book: the first edition's notebooks on TF 2.x. Each piece in a fresh interpreter (they
change TensorFlow's and NumPy's global state), the refusals in one line, and chapter 11's own
notebook, Run All, against the published values and bnmnist's presets (slow)."""

import json
import os
import re
import subprocess
import sys
import textwrap

import pytest

from bnmnist import book
from bnmnist.config import PRESETS

import book_notebooks
import tooling
from helpers import ROOT, chapter_epoch_0, run_train, table_from

# scripts/train.py, with the SELU cell's selu() as its source has it: scale and alpha swapped
SELU_AS_WRITTEN = """import functools, sys
from bnmnist import cli, network
network.selu = functools.partial(network.selu, scale=network.SELU_ALPHA, alpha=network.SELU_SCALE)
"""


def python(code, cwd, env=None, timeout=300):
    """Run ``code`` in a fresh interpreter in ``cwd``; returns the CompletedProcess."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", **(env or {}))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


def test_only_import_tensorflow_as_tf_lines_are_rebound():
    source = (
        "import tensorflow as tf\n  import tensorflow as tf  # indented\nimport tensorflow\nimport tensorflow as tfx\n"
    )
    assert book.tf1_source(source) == (
        "import tensorflow.compat.v1 as tf\n  import tensorflow.compat.v1 as tf  # indented\n"
        "import tensorflow\nimport tensorflow as tfx\n"
    )
    assert book.tf1_source("x = 'import tensorflow as tf'\n") == "x = 'import tensorflow as tf'\n"


def test_the_book_extra_installs_what_the_chapters_import():
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        extras = tomllib.load(f)["project"]["optional-dependencies"]
    names = {re.split(r"[<>=\[ ]", spec)[0] for spec in extras["book"] + extras["notebook"]}
    assert {"tf-keras", "scipy", "scikit-learn", "matplotlib", "jupyterlab", "nbclient", "ipykernel"} <= names
    assert "bnmnist[notebook]" in extras["book"] and "bnmnist[book,progress]" in extras["dev"]


def test_a_printed_line_matches_the_published_one_to_the_digits_published():
    same = book_notebooks.same_values
    assert same(
        "0 Train accuracy: 0.973333 Test accuracy: 0.9334", "0 Train accuracy: 0.97333336 Test accuracy: 0.9334"
    )
    assert not same("0\tValidation loss: 0.674618\tAccuracy: 80.67%", "0\tValidation loss: 0.674608\tAccuracy: 80.67%")
    assert not same("0 Validation accuracy: 0.8952", None) and not same("0 MSE: 1.5", "0 MSE: 1.5 2")


def test_the_notebook_copy_gets_the_one_line_and_only_the_shortening_asked_for():
    nb = {
        "cells": [
            {"cell_type": "code", "source": "n_epochs = 20\nfit(n_epochs=1000, n_iter=50)", "outputs": [1]},
            {"cell_type": "markdown", "source": "# Exercise solutions"},
            {"cell_type": "code", "source": "n_epochs = 1000", "outputs": []},
        ]
    }
    full = book_notebooks.prepared(nb)
    assert full["cells"][0]["source"] == "%load_ext bnmnist.book" and full["cells"][1]["outputs"] == []
    assert full["cells"][1]["source"] == nb["cells"][0]["source"] and len(full["cells"]) == 4
    short = book_notebooks.prepared(nb, epochs=1, until="# Exercise")
    assert [c["source"] for c in short["cells"]] == [
        "%load_ext bnmnist.book",
        "n_epochs = 1\nfit(n_epochs=1, n_iter=1)",
    ]


def test_the_float_order_table_flags_only_cells_whose_epoch_0_moves():
    def run(*printed):
        return [{"cell": c, "error": None, "published": f"0 Accuracy: {c}", "printed": v} for c, v in printed]

    runs = {
        "as run": run((3, "0 Accuracy: 0.5379"), (7, "0 Loss: 1.5 Accuracy: 0.9"), (9, None)),
        "oneDNN off": run((3, "0 Accuracy: 0.9687"), (7, "0 Loss: 1.5 Accuracy: 0.9"), (9, None)),
    }
    table = book_notebooks.float_order_report("11", runs)
    assert "1 of 3 training cells print another epoch 0 under another float order." in table
    assert "| cell | published | as run | oneDNN off | moves |" in table
    assert "| 3 | 3 | 0.5379 | 0.9687 | yes |" in table
    assert "| 7 | 7 | 1.5 0.9 | 1.5 0.9 | no |" in table
    assert "| 9 | 9 | - | - | no |" in table


@pytest.mark.slow
def test_a_float_order_reaches_the_notebooks_kernel(tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    (reference / book_notebooks.HELPER).write_text("")
    cell = 'import os\nprint("0 oneDNN:", os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1"))'
    code = {"cell_type": "code", "id": "probe", "metadata": {}, "source": cell, "outputs": [], "execution_count": None}
    nb = {"cells": [code], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    (reference / "probe.ipynb").write_text(json.dumps(nb))
    env = book_notebooks.FLOAT_ORDERS["oneDNN off"]
    rows, _ = book_notebooks.run_notebook(str(reference / "probe.ipynb"), env=env)
    assert [r["printed"] for r in rows] == ["0 oneDNN: 0"]


def test_importing_the_module_changes_nothing():
    p = python(
        """
        import sys, numpy as np
        finders = list(sys.meta_path)
        import bnmnist.book
        assert sys.meta_path == finders and "tensorflow" not in sys.modules and not hasattr(np, "infty")
        print(bnmnist.book.status())
        """,
        cwd=ROOT,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str({piece: "off" for piece in book.PIECES})


@pytest.mark.parametrize(
    "version, message",
    [("2.15.1", "TensorFlow 2.15.1 is not supported (it needs 2.20 or 2.21); pip install 'bnmnist[book]'")],
)
def test_an_unsupported_tensorflow_is_refused_in_one_line(version, message, monkeypatch):
    monkeypatch.setattr(book.importlib.metadata, "version", lambda name: version)
    with pytest.raises(book.BookError) as e:
        book.enable(ipython=None)
    assert str(e.value) == message
    assert e.value._render_traceback_() == [f"bnmnist.book: {message}"]  # what IPython shows


def test_tensorflow_imported_before_the_extension_is_refused_in_one_line(monkeypatch):
    tf = object()  # stands for the TF 2 module a cell bound to `tf`
    monkeypatch.setitem(sys.modules, "tensorflow", tf)
    with pytest.raises(book.BookError, match="imported before bnmnist.book.*restart the kernel"):
        book._check_tensorflow({"tf": tf})


def test_a_missing_data_copy_and_an_unknown_piece_are_refused_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("BNMNIST_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(book.BookError, match=r"nowhere \(BNMNIST_DATA\) does not exist; point it at"):
        book._mnist_path(None)
    with pytest.raises(book.BookError, match="no piece named tf2; the pieces are tf1_seeds, tf1_import"):
        book.disable("tf2")


@pytest.mark.slow
def test_every_piece_is_on_after_enable_and_off_after_disable(tiny_mnist, tmp_path):
    (tmp_path / "helper.py").write_text("import tensorflow as tf\n")
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("import tensorflow as tf\n")
    p = python(
        """
        import sys, numpy as np
        import bnmnist.book as book
        from bnmnist import data
        book.enable()
        import tensorflow as tf1  # what the book's `import tensorflow as tf` gets
        tf1 = tf1.compat.v1
        import helper, pkg.mod, colorsys  # the folder's modules, and one from elsewhere
        assert helper.tf is tf1 and pkg.mod.tf is tf1 and not tf1.executing_eagerly()
        assert type(colorsys.__spec__.loader).__name__ == "SourceFileLoader"
        assert all(state != "off" for state in book.status().values()), book.status()
        assert np.infty is np.inf and np.NaN is np.nan and np.float_ is np.float64 and np.int is int
        with tf1.Graph().as_default() as g:
            w = tf1.constant([[1.0, -2.0], [3.0, -4.0]])
            before = len(g.get_operations())
            penalty = tf1.contrib.layers.l1_regularizer(0.5)(w)
            assert len(g.get_operations()) - before == 5  # TF 1.x's five ops, which the op seeds count
            l2 = tf1.contrib.layers.l2_regularizer(0.5)(w)
            init = tf1.contrib.layers.variance_scaling_initializer()([300, 100])
            with tf1.Session() as s:
                assert s.run(penalty) == 5.0 and s.run(l2) == 0.5 * 15.0
                assert abs(s.run(init).std() - (1.3 * 2 / 300) ** 0.5 * 0.8796) < 0.01  # truncated at 2 sd
        (x_train, y_train), (x_test, y_test) = tf1.keras.datasets.mnist.load_data()
        mnist = data.load()
        for ours, theirs in ((x_train, mnist.x_train), (y_train, mnist.y_train), (x_test, mnist.x_test)):
            assert ours.dtype == theirs.dtype == np.uint8 and (ours == theirs).all()
        from tensorflow.examples.tutorials.mnist import input_data  # TF 1.x's reader, gone from TF 2
        sets = input_data.read_data_sets("/tmp/no-such-folder/")
        assert [len(sets.train.images), len(sets.validation.images), len(sets.test.labels)] == [1000, 5000, 1000]
        assert sets.train.images.dtype == np.float32 and sets.train.images.shape[1] == 784
        expected = mnist.x_train[5000:].reshape(-1, 784).astype(np.float32) * np.float32(1 / 255)
        np.testing.assert_array_equal(sets.train.images, expected)
        np.random.seed(7)
        perm = np.arange(1000)
        np.random.shuffle(perm)  # the first epoch's order, then the next epoch's for the wrap-around
        np.random.seed(7)
        first = [sets.train.next_batch(300)[1] for _ in range(3)]
        np.testing.assert_array_equal(np.concatenate(first), mnist.y_train[5000:][perm[:900]])
        wrapped = sets.train.next_batch(300)[1]
        assert len(wrapped) == 300 and (wrapped[:100] == mnist.y_train[5000:][perm[900:]]).all()
        assert sets.train.epochs_completed == 1
        kept = book.disable()
        assert all(state == "off" for state in book.status().values()), book.status()
        assert not hasattr(np, "infty") and not hasattr(tf1, "contrib")
        assert "tensorflow.examples.tutorials.mnist" not in sys.modules
        assert tf1.keras.datasets.mnist.load_data.__module__.endswith("datasets.mnist")
        assert not any(type(f).__name__ == "_TF1Finder" for f in sys.meta_path)
        print(len(kept))
        """,
        cwd=tmp_path,
        env={"BNMNIST_DATA": tiny_mnist},
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "3"
    said = [line for line in p.stderr.splitlines() if line.startswith("bnmnist.book: ")]
    assert len(said) == 3 and "graph mode stays on" in said[1] and "stay tensorflow.compat.v1" in said[2], p.stderr

    assert not os.path.exists(tmp_path / "__pycache__"), "the rewritten module must not be cached"


@pytest.mark.slow
def test_disable_before_any_graph_ran_gives_back_tf2s_eager_mode(tmp_path):
    p = python(
        """
        import bnmnist.book as book
        book.enable(mnist=False)
        import tensorflow as tf
        assert not tf.executing_eagerly() and book.status()["mnist"] == "off"
        book.disable()
        print(tf.executing_eagerly())
        """,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert p.stdout.strip() == "True" and "graph mode stays on" not in p.stderr


@pytest.mark.slow
def test_load_ext_in_ipython_rebinds_cells_and_refuses_a_late_load_in_one_line(tmp_path):
    p = python(
        """
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_cell("%load_ext bnmnist.book")
        ip.run_cell("import tensorflow as tf\\nprint('bound', tf.__name__, tf.executing_eagerly())")
        ip.run_cell("print('placeholder', tf.placeholder(tf.float32, [None, 2]).op.type)")
        """,
        cwd=tmp_path,
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert "WARNING:tensorflow" not in p.stdout + p.stderr  # nothing a reader would take for a fault
    assert "bound tensorflow.compat.v1 False" in p.stdout and "placeholder Placeholder" in p.stdout
    bad = python(
        """
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_cell("import bnmnist; bnmnist.data.load('no/such/mnist')")
        """,
        cwd=tmp_path,
    )
    assert bad.returncode == 0 and "Traceback" not in bad.stdout + bad.stderr, bad.stdout
    assert "DataError: no/such/mnist: no such file or folder; " in bad.stdout  # one line, as Jupyter shows it
    late = python(
        """
        from IPython.core.interactiveshell import InteractiveShell
        ip = InteractiveShell.instance()
        ip.run_cell("import tensorflow as tf")
        ip.run_cell("%load_ext bnmnist.book")
        """,
        cwd=tmp_path,
    )
    assert late.returncode == 0, late.stderr[-3000:]
    said = (late.stdout + late.stderr).strip().splitlines()
    assert [line for line in said if "bnmnist.book:" in line] == [
        "bnmnist.book: TensorFlow was imported before bnmnist.book, with TF 2's API; restart the kernel and "
        "make %load_ext bnmnist.book (or bnmnist.book.enable()) the first line"
    ]
    assert "Traceback" not in late.stdout + late.stderr


@pytest.fixture(scope="module")
def chapter_notebook_run(mnist_dir, book_notebook, tmp_path_factory):
    """Chapter 11's notebook, Run All in a handson-ml checkout's layout, `n_epochs` shortened to 1
    on the copy: per code cell, what it raised and its epoch-0 line, published and printed."""
    folder = tmp_path_factory.mktemp("handson-ml")
    rows, _ = book_notebooks.run_notebook(book_notebook, 1, keep=str(folder))
    return rows


@pytest.mark.slow
def test_chapter_11_runs_all_with_only_load_ext_prepended(chapter_notebook_run, book_notebook):
    assert len(chapter_notebook_run) == 182
    assert [r for r in chapter_notebook_run if r["error"]] == []


@pytest.mark.slow
def test_bn_and_both_l1_cells_print_the_published_epoch_0(chapter_notebook_run):
    cells = {r["cell"]: r for r in chapter_notebook_run}
    for preset in ("bn", "l1", "l1_regularizer"):
        r = cells[tooling.NOTEBOOK_CELLS[preset][0]]
        assert r["printed"] == r["published"], preset


@pytest.mark.slow
def test_every_other_training_cell_prints_what_its_preset_prints_here(
    chapter_notebook_run, chapter_first_epoch, mnist_dir, tmp_path
):
    """On the same machine the notebook's cells and bnmnist's presets start from the same weights
    and print the same epoch 0, the reuse cells from a gradient_clipping base of the same length.
    A preset that runs the XLA loop is compared in the book's per-step loop and TensorFlow's
    default threads, the notebook's own: XLA orders some float sums its way. The SELU preset
    computes the published table, with selu()'s scale and alpha in their places; the cell's
    source swaps them (docs/chapter11.md), so the preset runs here with them swapped."""
    cells = {r["cell"]: r for r in chapter_notebook_run}
    differ = {}
    for preset, (cell, _) in tooling.NOTEBOOK_CELLS.items():
        if preset in ("bn", "l1", "l1_regularizer"):
            continue
        if PRESETS[preset].run.loop == "xla":
            # the notebook's own loop and Session threads (TensorFlow's defaults), as the cell runs
            flags = ["--feed-dict", "--threads", "0,0", "--epochs", "1", "--data", mnist_dir, "--logdir", tmp_path]
            if preset == "selu":
                p = python(SELU_AS_WRITTEN + f"sys.exit(cli.main({['--preset', 'selu', *map(str, flags)]!r}))", ROOT)
            else:
                p = run_train("--preset", preset, *flags)
            assert p.returncode == 0, p.stderr[-2000:]
            ours = table_from(p.stdout)[0]
        else:
            ours = chapter_epoch_0(chapter_first_epoch[0], preset)
        printed = book_notebooks.last_number(cells[cell]["printed"])
        if printed != float(ours):
            differ[preset] = (printed, ours)
    assert differ == {}
