"""Shared fixtures: the real MNIST (from $BNMNIST_DATA) and a tiny synthetic MNIST in IDX form."""

import os
import shutil
import sys
import tempfile

import pytest

# the helper scripts' shared module (scripts/tooling.py), which the tests check too
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "scripts"))

from helpers import ROOT, run_dir_from, run_train, run_train_at_once, synthetic_mnist, write_idx


def pytest_configure(config):
    """The runs the tests start share an XLA compile cache and a decoded-MNIST cache of their own,
    not the user's."""
    config._bnmnist_caches = []
    for env, prefix in (("BNMNIST_COMPILE_CACHE", "bnmnist-xla-"), ("BNMNIST_DATA_CACHE", "bnmnist-mnist-")):
        if env not in os.environ:
            os.environ[env] = tempfile.mkdtemp(prefix=prefix)
            config._bnmnist_caches.append(os.environ[env])


def pytest_unconfigure(config):
    for folder in getattr(config, "_bnmnist_caches", []):
        shutil.rmtree(folder, ignore_errors=True)


# Where the copies the whole suite needs come from; the skip messages and the summary say it.
MISSING = "missing data"
MNIST_COPY = (
    "set BNMNIST_DATA to the real MNIST: a folder of its four IDX .gz files (train-images-idx3-ubyte.gz ...) "
    "or a Keras mnist.npz"
)
NOTEBOOK_COPY = (
    "set BNMNIST_REFERENCE to a folder holding chapter 11's notebook, 11_deep_learning.ipynb, from "
    "github.com/ageron/handson-ml at commit 2d5d735"
)


def skip_for_missing(what, how):
    """Skip (or, under CI, fail: CI must run everything) for want of a copy the repository lacks."""
    if os.environ.get("CI"):
        pytest.fail(f"CI must run the whole suite, but {what}: {how}")
    pytest.skip(f"{MISSING}: {what}; {how}")


def pytest_terminal_summary(terminalreporter):
    """When tests skipped for want of MNIST or the notebook, the last lines say how many and why."""
    missing = [r for r in terminalreporter.stats.get("skipped", []) if MISSING in str(r.longrepr)]
    if missing:
        terminalreporter.write_sep("=", f"{len(missing)} tests skipped for {MISSING}", yellow=True)
        terminalreporter.write_line(f"  the real MNIST: {MNIST_COPY}")
        terminalreporter.write_line(f"  the chapter's notebook: {NOTEBOOK_COPY}")
        terminalreporter.write_line("  (README.md, section 'Two commands', has the two export lines)")


def _real_mnist_dir():
    path = os.environ.get("BNMNIST_DATA")
    if path and os.path.exists(path):
        return os.path.abspath(path)  # tests run the book's code in temporary folders
    skip_for_missing(f"no MNIST copy (BNMNIST_DATA={path!r})", MNIST_COPY)


@pytest.fixture(scope="session")
def mnist_dir():
    return _real_mnist_dir()


@pytest.fixture(scope="session")
def book_notebook():
    """Chapter 11's notebook as published (11_deep_learning.ipynb), from $BNMNIST_REFERENCE."""
    folder = os.environ.get("BNMNIST_REFERENCE")
    path = os.path.join(folder, "11_deep_learning.ipynb") if folder else None
    if path and os.path.isfile(path):
        return os.path.abspath(path)
    skip_for_missing(f"no chapter notebook (BNMNIST_REFERENCE={folder!r})", NOTEBOOK_COPY)


@pytest.fixture(scope="session")
def notebook_cells(book_notebook):
    """The oracle that runs a notebook section's own cells on TF 2.x with TF1's seeds emulated,
    notebook_cells.py, which the project's reference folder holds beside the notebook."""
    path = os.path.join(os.path.dirname(book_notebook), "notebook_cells.py")
    if not os.path.isfile(path):
        skip_for_missing(
            f"no notebook_cells.py beside {book_notebook}",
            "the comparisons with the book's own code run the reference folder's oracle script",
        )
    return path


@pytest.fixture(scope="session")
def tiny_mnist(tmp_path_factory):
    """A folder holding the four IDX .gz files of a 6,000 + 1,000 image synthetic MNIST."""
    folder = tmp_path_factory.mktemp("tiny_mnist")
    x_train, y_train, x_test, y_test = synthetic_mnist()
    for name, arr in (
        ("train-images-idx3-ubyte", x_train),
        ("train-labels-idx1-ubyte", y_train),
        ("t10k-images-idx3-ubyte", x_test),
        ("t10k-labels-idx1-ubyte", y_test),
    ):
        write_idx(folder / (name + ".gz"), arr)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_run(tiny_mnist, tmp_path_factory):
    """A finished 2-epoch run on the tiny data (batch 100): a run folder to restore, resume,
    break and compare. Tests that change it work on a copy."""
    p = run_train(
        "--data", tiny_mnist, "--logdir", tmp_path_factory.mktemp("tiny_run"), "--epochs", "2", "--batch-size", "100"
    )
    assert p.returncode == 0, p.stderr
    return run_dir_from(p.stdout)


@pytest.fixture(scope="session")
def book_runs(mnist_dir, tmp_path_factory):
    """The book's full 20-epoch run on the real MNIST, twice, through the real command line;
    both at once (one per core), which the result must not depend on either."""
    logdir = tmp_path_factory.mktemp("book_logs")
    done = run_train_at_once(*[["--data", mnist_dir, "--logdir", logdir, "--quiet"]] * 2)
    for p in done:
        assert p.returncode == 0, p.stderr[-3000:]
    return done


@pytest.fixture(scope="session")
def dry_runs_at_once(tiny_mnist, tmp_path_factory):
    """Two ``--dry-run``s started at the same moment with the same --logdir: (logdir, their
    CompletedProcesses)."""
    logdir = tmp_path_factory.mktemp("dry_runs")
    done = run_train_at_once(*[["--data", tiny_mnist, "--logdir", logdir, "--dry-run"]] * 2, timeout=120)
    return logdir, done


@pytest.fixture(scope="session")
def six_epoch_run(tiny_mnist, tmp_path_factory):
    """An uninterrupted 6-epoch run on the tiny data (batch 100, 10 steps per epoch; stdout a pipe,
    no --quiet): what killed-and-resumed and extended runs must equal. Returns CompletedProcess."""
    p = run_train(
        "--data", tiny_mnist, "--logdir", tmp_path_factory.mktemp("six_epochs"), "--epochs", "6", "--batch-size", "100"
    )
    assert p.returncode == 0, p.stderr
    return p


@pytest.fixture(scope="session")
def chapter_first_epoch(mnist_dir, book_notebook, tmp_path_factory):
    """``scripts/chapter.py --epochs 1`` over every chapter preset but bn (the reuse cells from a
    one-epoch gradient_clipping run): its stdout and its Markdown."""
    import subprocess

    import tooling

    folder = tmp_path_factory.mktemp("chapter")
    markdown = folder / "chapter11.md"
    presets = [p for p in tooling.NOTEBOOK_CELLS if p != "bn"]
    p = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "chapter.py"), "--data", mnist_dir, "--epochs", "1",
         "--presets", ",".join(presets), "--logdir", str(folder / "logs"), "--notebook", book_notebook,
         "--markdown", str(markdown)],
        capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout, markdown.read_text()
