"""The benchmark: it refuses what it could not finish with before it spends minutes measuring,
finds its peers in benchmarks/peers, leaves out one without its Python in one line, and leaves no
temporary folder behind, also when stopped."""

import importlib.util
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import ROOT

BENCH = os.path.join(ROOT, "benchmarks", "bench.py")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--markdown", "{tmp}"], "cannot write --markdown"),
        (["--baseline", "{tmp}"], "is neither a bnmnist checkout nor a commit of this repository"),
        (["--peer", "jax_scan"], "give NAME=PYTHON"),
        (["--skip", "book_tf1"], "book_tf1 is the baseline"),
    ],
)
def test_bench_refuses_an_unwritable_markdown_or_a_wrong_baseline_in_one_line_before_measuring(
    flags, message, tiny_mnist, tmp_path
):
    flags = [f.format(tmp=tmp_path) for f in flags]
    p = subprocess.run([sys.executable, BENCH, "--data", tiny_mnist, *flags], capture_output=True, text=True)
    assert p.returncode != 0 and message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert not any(tmp_path.iterdir())  # nothing measured, nothing written


def bench(tiny_mnist, tmp_path, *flags):
    """bench.py on the tiny MNIST for one short round, its temporary folders under tmp_path/tmp."""
    (tmp_path / "tmp").mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmp_path / "tmp"))
    cmd = [sys.executable, BENCH, "--data", tiny_mnist, "--rounds", "1", "--epochs", "1", *flags]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)


@pytest.mark.slow
def test_bench_runs_its_own_peers_leaves_out_one_without_its_python_and_cleans_up(tiny_mnist, tmp_path):
    p = bench(tiny_mnist, tmp_path, "--peer", f"jax_scan={tmp_path / 'no-venv' / 'python'}", "--skip", "torch_eager",
              "--skip", "keras3_fit")  # fmt: skip
    out, err = p.communicate(timeout=600)
    assert p.returncode == 0, err[-2000:]
    notes = [line for line in out.splitlines() if line.startswith("bench: leaving out")]
    assert len(notes) == 1 and "jax_scan: no Python at" in notes[0] and "pip install jax jaxlib numpy" in notes[0]
    rows = {line.split(" | ")[0].lstrip("| ") for line in out.splitlines() if line.startswith("| ")}
    assert {"bnmnist (default)", "bnmnist --feed-dict", "book_tf1"} <= rows and "jax_scan" not in rows
    assert "round 1: book_tf1: loop" in out  # the book's own cell, from benchmarks/peers
    assert os.listdir(tmp_path / "tmp") == []


@pytest.mark.slow
@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_bench_exits_128_plus_the_signal_and_leaves_no_temporary_folder(signum, code, tiny_mnist, tmp_path):
    worktrees = subprocess.run(["git", "-C", ROOT, "worktree", "list"], capture_output=True, text=True).stdout
    p = bench(tiny_mnist, tmp_path, "--baseline", "HEAD", "--skip", "torch_eager", "--skip", "jax_scan")
    for line in p.stdout:
        if line.startswith("round 1: "):  # mid-measurement, a run of the baseline's worktree ahead
            break
    time.sleep(1)
    p.send_signal(signum)
    _, err = p.communicate(timeout=120)
    assert p.returncode == code, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "nothing was written, and its temporary folders are removed" in lines[0], err
    assert os.listdir(tmp_path / "tmp") == []
    assert subprocess.run(["git", "-C", ROOT, "worktree", "list"], capture_output=True, text=True).stdout == worktrees


def test_rounds_rotate_so_each_contender_runs_once_in_every_position():
    spec = importlib.util.spec_from_file_location("bench", BENCH)
    bench_module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench_module)
    names = ["bnmnist (default)", "bnmnist --feed-dict", "bnmnist (baseline)", "book_tf1"]
    orders = [bench_module.round_order(names, r) for r in range(len(names))]
    assert orders[0] == names  # round 1 as listed: bnmnist's default first, into empty caches
    assert all(sorted(order) == sorted(names) for order in orders)
    assert all({order[i] for order in orders} == set(names) for i in range(len(names)))
    assert bench_module.round_order(names, len(names)) == names
