"""The helper scripts and their scripts/tooling.py: plain preset, plots, many seeds, the bar, TensorBoard."""

import contextlib
import csv
import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import tooling
from helpers import (
    ROOT,
    TRAIN_SCRIPT,
    assert_full_disk_said_in_one_line,
    fill_disk,
    read_events,
    run_dir_from,
    run_train_at_once,
    table_from,
    tmpfs,
)

pytestmark = pytest.mark.slow  # presets, plots, seeds and the progress bar, as whole commands


@pytest.fixture(scope="module")
def two_runs(tiny_mnist, tmp_path_factory):
    logdir = tmp_path_factory.mktemp("next_logs")
    out = run_train_at_once(
        *[["--data", tiny_mnist, "--logdir", logdir, "--preset", preset, "--epochs", "3"] for preset in ("bn", "plain")]
    )
    for p in out:
        assert p.returncode == 0, p.stderr
    return out


def test_plain_preset_is_the_chapters_leaky_relu_network_and_flags_override_it(two_runs):
    bn, plain = (json.load(open(os.path.join(run_dir_from(p.stdout), "config.json"))) for p in two_runs)
    assert bn["preset"] == "bn" and bn["batch_norm"] and bn["batch_size"] == 200
    assert plain["preset"] == "plain" and not plain["batch_norm"] and plain["activation"] == "leaky_relu"
    assert plain["initializer"] == "glorot_uniform" and plain["batch_size"] == 50 and plain["seed"] == 42
    assert plain["epochs"] == 3  # --epochs overrides the preset's 40
    results = json.load(open(os.path.join(run_dir_from(two_runs[1].stdout), "results.json")))
    assert len(results["validation_accuracy"]) == 3
    # the cell prints every fifth epoch with its last batch's accuracy: here epoch 0 only
    assert re.findall(r"^\d+ Batch accuracy: [0-9.]+ Validation accuracy: ([0-9.]+)", two_runs[1].stdout, re.M) == [
        results["validation_accuracy_printed"][0]
    ]


def png_size(path):
    head = open(path, "rb").read(24)
    assert head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR"
    return struct.unpack(">II", head[16:24])


def test_plot_runs_writes_a_real_png_into_the_first_run(two_runs, tmp_path):
    dirs = [run_dir_from(p.stdout) for p in two_runs]
    p = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "plot_runs.py"), *dirs, "--book"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    png = os.path.join(dirs[0], "validation_accuracy.png")
    assert os.path.getsize(png) > 10_000 and png_size(png) == (800, 500)
    out = tmp_path / "elsewhere.png"
    p = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "plot_runs.py"), dirs[1], "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0 and png_size(out) == (800, 500)


def test_plot_runs_refuses_an_unfinished_run_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    p = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "plot_runs.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 2 and "has not finished" in p.stderr and "Traceback" not in p.stderr


def seeds_command(*args):
    """``python scripts/seeds.py ARGS`` as an argument list."""
    return [sys.executable, os.path.join(ROOT, "scripts", "seeds.py"), *map(str, args)]


def test_seeds_script_on_a_full_disk_says_so_in_one_line_and_leaves_its_markdown_whole(tiny_mnist, tmp_path):
    with tmpfs(tmp_path / "disk", "1m") as disk:
        doc = disk / "seeds.md"
        tooling.write_markdown_section(str(doc), "seeds:bn", "the old table")
        before = doc.read_text()
        fill_disk(disk)
        p = subprocess.run(
            seeds_command("--seeds", "0", "--epochs", "1", "--data", tiny_mnist, "--logdir", tmp_path / "logs",
                          "--csv", tmp_path / "s.csv", "--markdown", doc),
            capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert_full_disk_said_in_one_line(p, "seeds: error:")
        assert doc.read_text() == before and sorted(os.listdir(disk)) == ["filler", "seeds.md"]
        assert (tmp_path / "s.csv").exists()


def test_seeds_script_summarises_every_seed_and_marks_seed_42(tiny_mnist, tmp_path):
    p = subprocess.run(
        seeds_command(
            "--seeds",
            "0",
            "--epochs",
            "2",
            "--data",
            tiny_mnist,
            "--logdir",
            str(tmp_path),
            "--csv",
            str(tmp_path / "s.csv"),
        ),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    assert "seeds [0, 42]" in p.stdout and "Seed 42 ranks" in p.stdout
    rows = list(csv.reader(open(tmp_path / "s.csv")))
    assert rows[0] == ["epoch", "mean", "std", "min", "max", "seed_42"]
    per_seed = [r for r in rows if r and r[0].isdigit() and len(r) == 4]
    assert [r[0] for r in per_seed] == ["0", "42"]
    finals = [json.load(open(os.path.join(r[3], "results.json")))["validation_accuracy"] for r in per_seed]
    assert float(rows[2][1]) == pytest.approx(np.mean([f[1] for f in finals]), abs=1e-6)
    assert float(rows[2][4]) == pytest.approx(max(f[1] for f in finals), abs=1e-4)
    assert os.path.getsize(tmp_path / "s.png") > 10_000


@pytest.mark.parametrize(
    "script, args, says",
    [
        ("seeds.py", ["--seeds", "5-2"], "--seeds range 5-2 goes down"),
        ("seeds.py", ["--seeds", "0-1", "--epochs", "0"], "--epochs: must be a positive integer"),
        ("seeds.py", ["--seeds", "0-1", "--jobs", "two"], "--jobs: must be a positive integer"),
        ("seeds.py", ["--seeds", "0-1", "--data", "{tmp}/missing"], "no such file or folder"),
        ("seeds.py", ["--seeds", "0-100000000"], "pass at most 1,000 seeds"),
        ("seeds.py", ["--seeds", "2147483648"], "seeds in [0, 2**31)"),
        ("seeds.py", ["--seeds", "0-1", "--csv", "{tmp}"], "is a folder; give a file name"),
        ("seeds.py", ["--seeds", "0-1", "--csv", "/proc/bnmnist/s.csv"], "choose a --csv path"),
        ("plot_runs.py", [], "the following arguments are required: RUN"),
        ("plot_runs.py", ["{run}", "--out", "/proc/bnmnist/plot.png"], "cannot write the plot"),
        ("plot_runs.py", ["{run}", "--out", "{tmp}/plot.txt"], "cannot tell the image format"),
        ("export.py", ["{run}"], "the following arguments are required: out_dir"),
        ("export.py", ["{run}", ""], "must be a path, got an empty string"),
    ],
)
def test_helper_scripts_refuse_bad_input_in_one_line_with_exit_2(script, args, says, two_runs, tmp_path):
    args = [a.format(tmp=tmp_path, run=run_dir_from(two_runs[0].stdout)) for a in args]
    p = subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", script), *args, "--logdir", str(tmp_path / "logs")]
        if script == "seeds.py"
        else [sys.executable, os.path.join(ROOT, "scripts", script), *args],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and len(lines) == 1 and says in lines[0], p.stderr[-2000:]
    assert not os.path.exists(tmp_path / "logs") or os.listdir(tmp_path / "logs") == []  # nothing trained


def child_pids(pid):
    children = []
    for stat in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{stat}/stat").read_text(encoding="utf-8").rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[1] == str(pid):  # the field after the state is the parent's pid
            children.append(int(stat))
    return children


# "group": Ctrl-C in a terminal, to seeds.py and its runs; "runs": only the runs get it (seeds.py
# started in the background by a script, where SIGINT is ignored), so the workers must stop alone
@pytest.mark.parametrize("who", ["group", "runs"])
def test_ctrl_c_on_seeds_starts_no_more_runs_exits_130_and_prints_each_resume_command(who, tiny_mnist, tmp_path):
    logdir = tmp_path / "logs"
    p = subprocess.Popen(
        seeds_command(
            "--seeds", "0-5", "--epochs", "100000", "--jobs", "2", "--data", tiny_mnist, "--logdir", str(logdir)
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # both first runs have saved an epoch
        saved = [d for d in logdir.glob("run-*") if (d / "checkpoint").exists()] if logdir.exists() else []
        if len(saved) == 2:
            break
        time.sleep(0.2)
    if who == "group":
        os.killpg(p.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole group
    else:
        for child in child_pids(p.pid):
            os.kill(child, signal.SIGINT)
    try:
        _, err = p.communicate(timeout=120)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)  # no runs left behind, even when the test fails
    assert p.returncode == 130, err
    lines = err.strip().splitlines()
    assert lines[0].startswith("seeds: interrupted after 0 finished seed(s)") and "Traceback" not in err, err
    started = sorted(str(d) for d in logdir.glob("run-*"))
    assert len(started) == 2  # seeds 2-5 and 42 never started
    assert sorted(lines[1:]) == [f"Resume with: python scripts/train.py --resume {d}" for d in started]


def _run_on_terminal(args, tmp_path, name, hide_tqdm=False):
    """train.py with stdout on a pseudo-terminal; returns what the terminal and stderr got."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a 100-column terminal
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    if hide_tqdm:  # as if the 'progress' extra were not installed
        shadow = tmp_path / f"{name}-no-tqdm"
        shadow.mkdir()
        (shadow / "tqdm.py").write_text("raise ImportError('No module named tqdm')\n")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(shadow), env.get("PYTHONPATH")]))
    err_path = tmp_path / f"{name}.stderr"
    with open(err_path, "wb") as err:
        p = subprocess.Popen([sys.executable, TRAIN_SCRIPT, *args], stdout=slave, stderr=err, env=env)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    p.wait(timeout=120)
    os.close(master)
    assert p.returncode == 0, err_path.read_text()
    return b"".join(chunks).decode(errors="replace"), err_path.read_text()


def _has_bar(text):
    return "step/s" in text or "s/step" in text


def test_progress_bar_only_on_a_terminal_and_not_with_quiet(tiny_mnist, tmp_path, six_epoch_run):
    args = ["--data", tiny_mnist, "--logdir", str(tmp_path / "logs"), "--epochs", "2", "--batch-size", "20"]
    with ThreadPoolExecutor(2) as pool:  # both at once, each on its own terminal
        (on_tty, _), (quiet, _) = pool.map(
            _run_on_terminal, [args, args + ["--quiet"]], [tmp_path] * 2, ["tty", "quiet"]
        )
    assert _has_bar(on_tty) and "1 Validation accuracy:" in on_tty, on_tty
    assert not _has_bar(quiet) and "1 Validation accuracy:" in quiet, quiet
    piped = six_epoch_run.stdout  # stdout a pipe, no --quiet
    assert not _has_bar(piped) and "1 Validation accuracy:" in piped


def test_without_tqdm_a_terminal_run_trains_the_same_and_says_once_how_to_get_the_bar(tiny_mnist, tmp_path):
    args = ["--data", tiny_mnist, "--logdir", str(tmp_path / "logs"), "--epochs", "2", "--batch-size", "20"]
    with ThreadPoolExecutor(2) as pool:
        (shown, err), (_, quiet_err) = pool.map(
            lambda a, name: _run_on_terminal(a, tmp_path, name, hide_tqdm=True),
            [args, args + ["--quiet"]],
            ["bare", "bare-quiet"],
        )
    assert not _has_bar(shown) and "1 Validation accuracy:" in shown, shown
    notes = [line for line in err.splitlines() if "tqdm" in line]
    assert len(notes) == 1 and "no progress bar" in notes[0] and "[progress]" in notes[0], err
    assert "tqdm" not in quiet_err, quiet_err


def test_tensorboard_events_hold_the_printed_scalars_histograms_and_graph(two_runs):
    run_dir = run_dir_from(two_runs[0].stdout)
    printed = table_from(two_runs[0].stdout)
    results = json.load(open(os.path.join(run_dir, "results.json")))
    scalars, histograms, graphs = read_events(run_dir)
    assert graphs == 1
    assert [str(np.float32(scalars["validation_accuracy"][e])) for e in range(3)] == printed
    assert [scalars["training_loss"][e] for e in range(3)] == pytest.approx(results["training_loss"], rel=1e-6)
    assert [scalars["epoch_seconds"][e] for e in range(3)] == pytest.approx(results["epoch_seconds"], rel=1e-6)
    assert {
        "histograms/hidden1/kernel",
        "histograms/outputs/bias",
        "histograms/batch_normalization/moving_mean",
        "histograms/batch_normalization_2/moving_variance",
    } <= histograms
