"""The README's examples, run as a reader runs them, so that the README and the code can't part.

Shell lines run in a project folder laid out as the README assumes (``../shared/data/mnist``
beside it, here a tiny synthetic MNIST), with ``python`` this interpreter and neither
``BNMNIST_DATA`` nor ``BNMNIST_REFERENCE`` set, as on a fresh clone; each Python block runs as its
own program there, in the README's order. Only installs, the test command itself and the
interactive servers (JupyterLab, TensorBoard) are left out.
"""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bnmnist.atomic import read_json

from helpers import BOOK_TABLE, ROOT, table_from, train_env

pytestmark = pytest.mark.slow  # whole commands, the book's cell on the real MNIST
README = os.path.join(ROOT, "README.md")
NOT_RUN = ("python3 -m venv", "pip install", "python -m pytest", "jupyter lab", "tensorboard")
BOOK_SECTION = "Running the book's own code"


def readme_blocks():
    """(section heading, language, code) of every fenced block, in order."""
    blocks, heading, lang, lines = [], None, None, None
    for line in Path(README).read_text(encoding="utf-8").splitlines():
        if lines is None and line.startswith("## "):
            heading = line[3:].strip()
        elif lines is None and line.startswith("```"):
            lang, lines = line[3:].strip(), []
        elif lines is not None and line.startswith("```"):
            blocks.append((heading, lang, "\n".join(lines) + "\n"))
            lines = None
        elif lines is not None:
            lines.append(line)
    return blocks


def reader_project(root, mnist):
    """A folder holding the project's scripts and notebook, with ../shared/data/mnist beside it."""
    (root / "shared" / "data").mkdir(parents=True)
    os.symlink(mnist, root / "shared" / "data" / "mnist")
    project = root / "bnmnist"
    project.mkdir()
    os.symlink(os.path.join(ROOT, "scripts"), project / "scripts")
    shutil.copytree(os.path.join(ROOT, "notebooks"), project / "notebooks")
    return project


@pytest.fixture(scope="module")
def project(tiny_mnist, tmp_path_factory):
    return reader_project(tmp_path_factory.mktemp("reader"), tiny_mnist)


def reader_env(tmp_path):
    # a reader's first run: no Keras cache, and XLA's compile cache empty (the sample is a first run)
    env = train_env({"KERAS_HOME": str(tmp_path / "empty_keras_home"), "BNMNIST_COMPILE_CACHE": str(tmp_path / "xla")})
    env.pop("BNMNIST_REFERENCE", None)  # train_env drops BNMNIST_DATA
    env.pop("TF_USE_LEGACY_KERAS", None)
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env["PATH"]  # `python` is ours
    return env


def test_every_shell_and_python_example_runs_as_written(project, tmp_path):
    env, ran = reader_env(tmp_path), []
    for heading, lang, code in readme_blocks():
        if heading == BOOK_SECTION:
            continue
        if lang == "bash":
            for line in code.splitlines():
                if line.strip() and not line.startswith(NOT_RUN):
                    p = subprocess.run(["bash", "-c", line], cwd=project, env=env, capture_output=True, text=True)
                    assert p.returncode == 0, (line, p.stderr[-2000:])
                    ran.append((line, p.stdout))
        elif lang == "python":
            p = subprocess.run([sys.executable, "-c", code], cwd=project, env=env, capture_output=True, text=True)
            assert p.returncode == 0, (heading, p.stderr[-2000:])
            ran.append((heading, p.stdout))
    commands = [what for what, _ in ran]
    assert "python scripts/train.py --data ../shared/data/mnist" in commands
    assert sum(c.startswith("export BNMNIST_") for c in commands) == 3  # the test section's two, the book's one
    assert any(c.startswith("jupyter nbconvert --to notebook --execute") for c in commands)
    assert {"Restore", "The book's recipe", "Export", "The book's notebooks, Run All"} <= set(commands)
    book = next(out for what, out in ran if what == "The book's notebooks, Run All")
    assert book.splitlines() == ["keras.datasets.mnist.load_data() reads ../shared/data/mnist", "[]"]
    assert (project / "notebooks" / "restore_checkpoint.executed.ipynb").exists()
    # the README's sample output has the shape of what the current code prints
    train_output = next(out for what, out in ran if what.startswith("python scripts/train.py"))
    sample = next(code for heading, lang, code in readme_blocks() if heading == "What a run prints" and not lang)
    assert table_from(sample) == BOOK_TABLE
    assert [shape(line) for line in sample.splitlines()] == [shape(line) for line in train_output.splitlines()]


def shape(line):
    """A printed line with its figures and names blanked: what must not change between runs."""
    return re.sub(r"run-\d+(-\d+)?", "run-#", re.sub(r"\d[\d,.]*", "#", line))


def test_the_books_own_bn_cell_in_the_readme_is_the_notebooks_and_prints_its_table(book_notebook, mnist_dir, tmp_path):
    (code,) = [code for heading, lang, code in readme_blocks() if heading == BOOK_SECTION and lang == "python"]
    cells = read_json(book_notebook)["cells"]
    for index in (60, 62, 63):  # the network, its epochs, its training loop
        cell = "\n".join(line.rstrip() for line in "".join(cells[index]["source"]).splitlines())
        assert cell in code, f"the README's copy of notebook cell {index} differs from the notebook"
    project = reader_project(tmp_path / "reader", mnist_dir)  # the real MNIST at ../shared/data/mnist
    p = subprocess.run(
        [sys.executable, "-c", code], cwd=project, env=reader_env(tmp_path), capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr[-3000:]
    assert table_from(p.stdout) == BOOK_TABLE
