"""Runs that survive kills and bad input: crash-safe checkpoints, exact resume, clear errors."""

import errno
import glob
import hashlib
import io
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from bnmnist import atomic, data, runs
from bnmnist.atomic import read_json
from bnmnist.config import Config
from bnmnist.errors import NumericalError, RunFolderError
from bnmnist.trainer import train

from helpers import (
    ROOT,
    TRAIN_SCRIPT,
    bad_data_cases,
    bad_flag_cases,
    fill_disk,
    final_variables,
    read_events,
    run_dir_from,
    run_train,
    start_train,
    table_from,
    tmpfs,
    train_env,
)
from kill_stress import newest_checkpoint_epochs

pytestmark = pytest.mark.slow  # whole runs killed, resumed and refused, in processes

# A driver that runs the CLI in-process and reports whether TensorFlow was imported.
DRIVER = (
    "import sys, time; t = time.perf_counter(); sys.path.insert(0, sys.argv[1]);"
    "from bnmnist.cli import main; rc = main(sys.argv[2:]);"
    "print('TF_IMPORTED' if 'tensorflow' in sys.modules else 'NO_TF', round(time.perf_counter() - t, 3));"
    "sys.exit(rc)"
)


def folder_digest(path):
    h = hashlib.sha256()
    for root, _, files in sorted(os.walk(path)):
        for f in sorted(files):
            full = os.path.join(root, f)
            h.update(full.encode())
            h.update(open(full, "rb").read())
    return h.hexdigest()


def _bad_folder_cases(tmp_path, tiny, tiny_run):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    empty_run = tmp_path / "run-20260101000000"
    empty_run.mkdir()
    (empty_run / "config.json").write_text(json.dumps(Config().to_json()))
    no_data_json = tmp_path / "run-20260101000001"
    shutil.copytree(tiny_run, no_data_json)
    os.remove(no_data_json / "data.json")
    broken_config = tmp_path / "run-20260101000002"
    shutil.copytree(tiny_run, broken_config)
    (broken_config / "config.json").write_text("{not json")
    dry_run = tmp_path / "run-20260101000003"
    shutil.copytree(tiny_run, dry_run)
    results = read_json(dry_run / "results.json")
    (dry_run / "results.json").write_text(json.dumps(dict(results, dry_run=True)))
    garbled_state = tmp_path / "run-20260101000004"
    shutil.copytree(tiny_run, garbled_state)
    (garbled_state / "checkpoint").write_text("garbage\n")
    d = ["--data", tiny]
    more = ["--epochs", "3"]  # tiny_run finished its 2 epochs: extend it to get further
    return [
        ("logdir is a file", d + ["--logdir", str(a_file)], "not a folder"),
        ("logdir under a file", d + ["--logdir", str(a_file / "sub")], "cannot create log folder"),
        ("logdir not creatable", d + ["--logdir", "/proc/bnmnist-logs"], "cannot create log folder"),
        ("resume a non-run", d + ["--resume", str(tmp_path)], "is not a bnmnist run folder"),
        ("resume a run without checkpoints", d + ["--resume", str(empty_run)], "no completed epoch"),
        ("resume with a changed flag", d + ["--resume", tiny_run, "--learning-rate", "0.1"], "drop --learning-rate"),
        ("resume a finished run", d + ["--resume", tiny_run], "already finished its 2 epochs"),
        (
            "resume a finished run's last checkpoint",
            d + ["--resume", os.path.join(tiny_run, "model.ckpt-1.index")],
            "already finished its 2 epochs",
        ),
        (
            "resume a checkpoint the run no longer keeps",
            d + ["--resume", os.path.join(tiny_run, "model.ckpt-7")],
            "no such checkpoint (" + os.path.join(tiny_run, "model.ckpt-7") + ".index is missing; the folder "
            "keeps model.ckpt-0, model.ckpt-1)",
        ),
        (
            "resume a checkpoint outside a run",
            d + ["--resume", str(tmp_path / "nope" / "model.ckpt-1")],
            "model.ckpt-1: no such file or folder",
        ),
        (
            "resume with a garbled state file",
            d + ["--resume", str(garbled_state)],
            f"names no checkpoint, but model.ckpt-1 is there; resume from it: python scripts/train.py "
            f"--resume {garbled_state / 'model.ckpt-1'}",
        ),
        ("resume to fewer epochs", d + ["--resume", tiny_run, "--epochs", "1"], "would not extend it"),
        ("resume a dry run", d + ["--resume", str(dry_run), "--epochs", "5"], "was a --dry-run"),
        (
            "resume on other data",
            ["--data", str(tmp_path / "other.npz"), "--resume", tiny_run] + more,
            "holds other data than",
        ),
        ("resume without data.json", d + ["--resume", str(no_data_json)] + more, "cannot read data.json"),
        ("resume with a broken config", d + ["--resume", str(broken_config)], "not a readable bnmnist config"),
    ]


def test_every_bad_input_is_refused_in_one_line_before_tensorflow(tmp_path, tiny_mnist, tiny_run):
    from helpers import write_npz

    write_npz(tmp_path / "other.npz")
    logdir = tmp_path / "logs"
    cases = (
        bad_flag_cases(tiny_mnist)
        + _bad_folder_cases(tmp_path, tiny_mnist, tiny_run)
        + [
            (name, ["--data", path, "--logdir", str(logdir)], needle)
            for name, path, needle in bad_data_cases(tmp_path / "bad", tiny_mnist)
        ]
    )
    before = folder_digest(tiny_run)
    cases = [
        (name, args if "--logdir" in args else args + ["--logdir", str(logdir / f"case{i}")], needle)
        for i, (name, args, needle) in enumerate(cases)
    ]

    def refuse(args):
        return subprocess.run(
            [sys.executable, "-c", DRIVER, ROOT, *args], capture_output=True, text=True, timeout=60, cwd=str(tmp_path)
        )

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(2) as pool:  # two at once: each is a short process of its own
        done = list(pool.map(refuse, [args for _, args, _ in cases]))
    for (name, args, needle), p in zip(cases, done):
        assert p.returncode == 2, f"{name}: rc {p.returncode}\n{p.stderr}"
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bnmnist-train: error: "), f"{name}: {p.stderr}"
        assert needle in lines[0], f"{name}: {lines[0]}"
        assert p.stdout.split()[0] == "NO_TF", (
            f"{name}: TensorFlow was imported"
        )  # seconds: benchmarks/error_latency.py
        used = args[args.index("--logdir") + 1]
        assert not os.path.isdir(used) or os.listdir(used) == [], f"{name}: a run folder was made"
    assert folder_digest(tiny_run) == before


def test_resume_of_another_architecture_names_the_variable_and_both_shapes(tiny_run, tmp_path, tiny_mnist):
    other = tmp_path / "run-20260101000000"
    shutil.copytree(tiny_run, other)
    cfg = read_json(other / "config.json")
    cfg["hidden"] = [50, 100]
    (other / "config.json").write_text(json.dumps(cfg))
    before = folder_digest(other)
    p = run_train("--resume", other, "--data", tiny_mnist, "--epochs", "3")
    assert p.returncode == 2, p.stderr
    err = [l for l in p.stderr.splitlines() if l.startswith("bnmnist-train")]
    assert len(err) == 1 and "hidden1/kernel" in err[0] and "[784, 300]" in err[0] and "[784, 50]" in err[0]
    assert "Traceback" not in p.stderr
    assert folder_digest(other) == before


def test_a_corrupt_newest_checkpoint_names_the_older_one_and_a_resume_from_it_ends_identical(
    tiny_run, tiny_mnist, tmp_path, capsys
):
    from bnmnist import cli

    damaged = tmp_path / "run-20260101000000"
    shutil.copytree(tiny_run, damaged)
    data_file = next(damaged.glob("model.ckpt-1.data-*"))
    data_file.write_bytes(data_file.read_bytes()[:1000])  # a disk that lost the end
    before = folder_digest(damaged)
    args = ["--data", tiny_mnist, "--quiet"]
    assert cli.main(["--resume", str(damaged), "--epochs", "3"] + args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "model.ckpt-1: could not restore (" in lines[0], lines
    assert f"use an older one, {damaged / 'model.ckpt-0'} (pass it to --resume" in lines[0]
    assert folder_digest(damaged) == before
    os.remove(damaged / "results.json")  # so the table compared below is the resumed run's
    assert cli.main(["--resume", str(damaged / "model.ckpt-0")] + args) == 0  # epoch 1 again
    assert printed_table(str(damaged)) == printed_table(tiny_run)
    assert [os.path.basename(p) for p in runs.read_state(str(damaged))] == ["model.ckpt-0", "model.ckpt-1"]
    a, b = final_variables(str(damaged)), final_variables(tiny_run)
    assert all(a[n].tobytes() == b[n].tobytes() for n in a)


def printed_table(run_dir):
    return json.load(open(os.path.join(run_dir, "results.json")))["validation_accuracy_printed"]


def _kill_after_epochs(args, n_lines):
    """Start ``scripts/train.py ARGS``; SIGKILL it from outside once it has printed ``n_lines``
    epoch lines (the next epoch is under way). Returns (run folder, epoch lines seen)."""
    p = start_train(*args, stderr=subprocess.DEVNULL)
    run_dir, seen = None, 0
    for line in p.stdout:
        if line.startswith("Run folder: "):
            run_dir = line.split(": ", 1)[1].strip()
        seen += " Validation accuracy: " in line
        if seen == n_lines:
            p.kill()
            break
    p.wait()
    assert p.returncode == -signal.SIGKILL, "the run ended before it was killed"
    return run_dir, seen


def test_killed_mid_epoch_twice_and_resumed_ends_bit_identical(tiny_mnist, tmp_path, six_epoch_run):
    common = ["--data", tiny_mnist, "--batch-size", "100"]  # 10 steps per epoch
    whole = six_epoch_run
    run_dir, _ = _kill_after_epochs([*common, "--epochs", "6", "--logdir", tmp_path / "killed"], 2)
    first = newest_checkpoint_epochs(run_dir)
    assert 2 <= first < 6
    _kill_after_epochs(["--resume", run_dir], first + 2)  # its own lines repeat the saved ones
    second = newest_checkpoint_epochs(run_dir)
    assert first <= second < 6
    last = run_train("--resume", run_dir)
    assert last.returncode == 0, last.stderr
    assert table_from(last.stdout) == table_from(whole.stdout)
    # the time printed and saved is this process's: the epochs it trained
    assert (f" s for epochs {second}-5 (resumed) (" if second < 5 else " s for epoch 5 (resumed) (") in last.stdout
    assert runs.read_results(run_dir)["train_seconds_from_epoch"] == second
    assert runs.read_results(run_dir_from(whole.stdout))["train_seconds_from_epoch"] == 0
    a, b = final_variables(run_dir_from(whole.stdout)), final_variables(run_dir)
    assert all(a[n].tobytes() == b[n].tobytes() for n in a)
    # TensorBoard, over the three processes' event files, has every epoch's accuracy, including
    # one whose validation a kill cut short and the resume recomputed
    assert tensorboard_accuracies(run_dir) == table_from(whole.stdout)


def tensorboard_accuracies(run_dir):
    """validation_accuracy per epoch as TensorBoard shows it (the newest write of each step)."""
    accuracies = read_events(run_dir)[0]["validation_accuracy"]
    return [str(np.float32(accuracies[step])) for step in sorted(accuracies)]


def test_sigkill_at_random_moments_always_leaves_a_restorable_newest_checkpoint(tiny_mnist, tmp_path):
    # scripts/kill_stress.py as a user runs it: 20 kills in two chains of 10, side by side
    script = os.path.join(ROOT, "scripts", "kill_stress.py")
    chains = [
        subprocess.Popen(
            [
                sys.executable,
                script,
                "--data",
                tiny_mnist,
                "--logdir",
                tmp_path / f"chain{seed}",
                "--kills",
                "10",
                "--seed",
                str(seed),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=train_env(),
        )  # fmt: skip
        for seed in (1, 2)
    ]
    for seed, p in zip((1, 2), chains):
        out, err = p.communicate(timeout=600)
        assert p.returncode == 0, err[-2000:]
        saved = [int(line.split(", ")[-1].split()[0]) for line in out.splitlines() if line.startswith("kill ")]
        assert len(os.listdir(tmp_path / f"chain{seed}")) == 1
        assert len(saved) == 10 and saved == sorted(saved) and saved[-1] >= 10  # every resume moved on
        assert "10 kills, every newest checkpoint complete and restorable" in out


def test_ctrl_c_keeps_the_last_epoch_prints_how_to_resume_and_exits_130(tiny_mnist, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    p = subprocess.Popen(
        [sys.executable, TRAIN_SCRIPT, "--data", tiny_mnist, "--logdir", str(tmp_path), "--epochs", "100000"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    printed = []
    for line in p.stdout:
        if "(epoch " in line:
            printed.append(line)
            if len(printed) == 3:
                p.send_signal(signal.SIGINT)
                break
    out, err = p.communicate(timeout=60)
    printed += [l for l in out.splitlines() if "Validation accuracy" in l]
    assert p.returncode == 130, err
    assert "Resume with: python scripts/train.py --resume" in err and "Traceback" not in err
    run_dir = [d for d in (tmp_path / n for n in os.listdir(tmp_path))][0]
    assert newest_checkpoint_epochs(str(run_dir)) == len(printed)


def _resume_as_printed(err, env):
    """The ``Resume with:`` command a stopped command printed last, run as printed."""
    assert "Traceback" not in err, err
    command = [l for l in err.splitlines() if l.startswith("Resume with: ")][-1].split("Resume with: ", 1)[1]
    return _run_printed_command(command, env)


def test_sigterm_keeps_the_last_epoch_prints_how_to_resume_and_exits_143(tiny_mnist, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    p = start_train("--data", tiny_mnist, "--logdir", tmp_path, "--epochs", "60", env=env)
    printed = []
    for line in p.stdout:
        if "(epoch " in line:
            printed.append(line)
            if len(printed) == 2:
                p.send_signal(signal.SIGTERM)  # kill -TERM PID
                break
    out, err = p.communicate(timeout=60)
    printed += [l for l in out.splitlines() if "Validation accuracy" in l]
    assert p.returncode == 143, err
    assert "Stopped by SIGTERM: " in err
    run_dir = str(tmp_path / os.listdir(tmp_path)[0])
    assert newest_checkpoint_epochs(run_dir) == len(printed)
    resumed = _resume_as_printed(err, env)
    assert resumed.returncode == 0, resumed.stderr
    assert len(table_from(resumed.stdout)) == 60


def test_sigterm_before_the_first_epoch_ends_says_so_and_prints_no_resume_command(mnist_dir, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    # the per-step loop on the real MNIST: its first epoch takes seconds, so the signal lands in it
    p = start_train("--data", mnist_dir, "--logdir", tmp_path, "--feed-dict", "--quiet", env=env)
    for line in p.stdout:
        if line.startswith("Run folder: "):
            p.send_signal(signal.SIGTERM)
            break
    out, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert not table_from(out) and "Traceback" not in err
    assert "bnmnist-train: stopped by SIGTERM before the first epoch finished" in err
    assert "Resume with" not in err  # nothing to resume: the command would be refused


# The CLI in-process, with the signal sent to itself at the moment TensorFlow's import starts.
SIGNAL_DURING_IMPORT = (
    "import os, signal, sys; sys.path.insert(0, sys.argv[1]); import bnmnist.cli as cli;"
    "cli._import_tensorflow_without_keras = lambda: os.kill(os.getpid(), int(sys.argv[2]));"
    "sys.exit(cli.main(sys.argv[3:]))"
)


@pytest.mark.parametrize("signum, said", [(signal.SIGTERM, "stopped by SIGTERM"), (signal.SIGINT, "interrupted")])
def test_a_stop_signal_while_tensorflow_loads_gives_one_line_and_no_run(signum, said, tiny_mnist, tmp_path):
    argv = ["--data", tiny_mnist, "--logdir", str(tmp_path / "logs")]
    p = subprocess.run(
        [sys.executable, "-c", SIGNAL_DURING_IMPORT, ROOT, str(int(signum)), *argv],
        capture_output=True,
        text=True,
        env=train_env(),
        timeout=60,
    )
    assert p.returncode == 128 + signum, p.stderr
    assert p.stderr.strip() == f"bnmnist-train: {said} before the first epoch finished", p.stderr
    assert not os.listdir(tmp_path / "logs")  # no run folder was made


def test_a_run_under_timeout_stops_cleanly_and_resumes_as_printed(tiny_mnist, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")

    def under_timeout(argv):  # 40 s: start-up and a first epoch on the tiny data, even on a loaded machine
        return subprocess.run(
            ["timeout", "--preserve-status", "40", *argv], capture_output=True, text=True, env=env, cwd=ROOT
        )

    p = under_timeout([sys.executable, TRAIN_SCRIPT, "--data", tiny_mnist, "--logdir", tmp_path, "--epochs", "100000"])
    assert p.returncode == 143, p.stderr
    assert "Stopped by SIGTERM: " in p.stderr and "Traceback" not in p.stderr
    done = len(table_from(p.stdout))
    assert done and newest_checkpoint_epochs(run_dir_from(p.stdout)) == done
    command = shlex.split([l for l in p.stderr.splitlines() if l.startswith("Resume with: ")][-1][13:])
    assert command[:2] == ["python", "scripts/train.py"]
    again = under_timeout([sys.executable, *command[1:]])  # the printed command, under timeout again
    assert again.returncode == 143, again.stderr
    assert again.stdout.count("(from checkpoint)") == done  # it went on from where the first stopped
    assert len(table_from(again.stdout)) > done


@pytest.mark.parametrize("script", ["seeds", "chapter"])
def test_sigterm_to_a_helper_script_stops_its_runs_and_prints_each_resume_command(
    script, tiny_mnist, book_notebook, tmp_path
):
    """kill -TERM reaches only the script: it passes the signal on, and every run keeps its epochs."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    logdir = tmp_path / "logs"
    flags = {"seeds": ["--seeds", "1"], "chapter": ["--presets", "bn,plain", "--notebook", book_notebook]}[script]
    p = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, "scripts", f"{script}.py"), "--data", tiny_mnist, "--logdir", logdir,
         "--epochs", "100000", *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while len(glob.glob(str(logdir / "*" / "checkpoint"))) < 2:  # both runs have saved an epoch
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1]
        time.sleep(0.5)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    lines = err.strip().splitlines()
    assert lines[0].startswith(f"{script}: stopped by SIGTERM after 0 finished") and "Traceback" not in err
    commands = [l.split("Resume with: ", 1)[1] for l in lines[1:]]
    assert len(commands) == 2 and len(lines) == 3, err
    for command in commands:
        run_dir = shlex.split(command)[-1]
        assert runs.epochs_done(run_dir) >= 1
    run_dir = shlex.split(commands[-1])[-1]
    done = runs.epochs_done(run_dir)
    resumed = _run_printed_command(f"{commands[-1]} --epochs {done + 1}", env)  # not the 100,000 epochs
    assert resumed.returncode == 0, resumed.stderr
    assert len(runs.read_results(run_dir)["validation_accuracy"]) == done + 1


def test_seeds_under_timeout_stops_every_run_cleanly_and_prints_their_resume_commands(tiny_mnist, tmp_path):
    """timeout sends SIGTERM to the whole process group: the script and its runs at once."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    logdir = tmp_path / "logs"
    p = subprocess.run(
        ["timeout", "--preserve-status", "60", sys.executable, os.path.join(ROOT, "scripts", "seeds.py"), "--data",
         tiny_mnist, "--logdir", logdir, "--epochs", "100000", "--seeds", "1"],
        capture_output=True, text=True, env=env, cwd=ROOT,
    )  # fmt: skip
    assert p.returncode == 143, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith("seeds: stopped by SIGTERM after 0 finished") and "Traceback" not in p.stderr
    commands = [l.split("Resume with: ", 1)[1] for l in lines[1:]]
    assert len(commands) == 2 and len(lines) == 3, p.stderr
    assert all(runs.epochs_done(shlex.split(c)[-1]) >= 1 for c in commands)


def _offline_env(tmp_path):
    """No --data fallback of any kind: BNMNIST_DATA unset, an empty Keras cache, and a proxy that
    refuses every connection, so a download attempt fails at once instead of reaching a network."""
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="3",
        PYTHONUNBUFFERED="1",
        KERAS_HOME=str(tmp_path / "empty_keras_home"),
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
    )
    env.pop("BNMNIST_DATA", None)
    return env


def _run_printed_command(command, env):
    """Run a command exactly as bnmnist printed it (``python scripts/train.py ...``), from the
    project folder, with this interpreter as ``python``."""
    argv = shlex.split(command)
    assert argv[:2] == ["python", "scripts/train.py"], command
    return subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_a_stopped_run_resumes_offline_from_its_own_folder(tiny_mnist, tmp_path):
    data_copy = shutil.copytree(tiny_mnist, tmp_path / "mnist_copy")
    env = _offline_env(tmp_path)

    def start(logdir, stderr):
        return start_train("--data", data_copy, "--logdir", tmp_path / logdir, "--epochs", "60", env=env, stderr=stderr)

    # stopped by Ctrl-C: the printed resume command, as printed, finishes the run
    p = start("ctrl_c", subprocess.PIPE)
    for line in p.stdout:
        if "Validation accuracy" in line:
            p.send_signal(signal.SIGINT)
            break
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    command = err.strip().splitlines()[-1].split("Resume with: ", 1)[1]
    resumed = _run_printed_command(command, env)
    assert resumed.returncode == 0, resumed.stderr
    assert "Downloading" not in resumed.stdout + resumed.stderr
    assert len(table_from(resumed.stdout)) == 60
    # stopped by kill -9: --resume RUN finishes it too
    p = start("killed", subprocess.DEVNULL)
    for line in p.stdout:
        if line.startswith("Run folder: "):
            killed_run = line.split(": ", 1)[1].strip()
        if "Validation accuracy" in line:
            p.kill()
            break
    p.wait()
    assert p.returncode == -signal.SIGKILL
    resumed = _run_printed_command(f"python scripts/train.py --resume {killed_run}", env)
    assert resumed.returncode == 0, resumed.stderr
    assert len(table_from(resumed.stdout)) == 60
    # the recorded copy moved: one line naming where it was and what to pass
    shutil.move(str(data_copy), str(tmp_path / "moved"))
    refused = _run_printed_command(f"python scripts/train.py --resume {killed_run} --epochs 61", env)
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and f"the MNIST copy at {os.path.realpath(data_copy)}" in lines[0], lines
    assert "pass that copy with --data PATH" in lines[0]
    # passing it where it is now works
    again = _run_printed_command(
        f"python scripts/train.py --resume {killed_run} --epochs 61 --data {tmp_path / 'moved'}", env
    )
    assert again.returncode == 0, again.stderr


def test_nan_loss_stops_at_once_with_exit_3_and_no_checkpoint(tiny_mnist, tmp_path):
    p = run_train("--data", tiny_mnist, "--logdir", tmp_path, "--learning-rate", "1e11")
    assert p.returncode == 3
    assert "became nan at epoch 0, step" in p.stderr and "Traceback" not in p.stderr
    assert runs.read_state(run_dir_from(p.stdout)) == []


def test_divergence_after_good_epochs_leaves_the_last_good_checkpoint_newest(tiny_mnist, tmp_path):
    split = data.split(data.load(tiny_mnist))
    run_dir = runs.new_run_dir(str(tmp_path))
    train(Config(epochs=2, batch_size=100), split, run_dir, out=None)
    with pytest.raises(NumericalError, match="epoch 2"):
        train(Config(epochs=4, batch_size=100, learning_rate=1e11), split, run_dir, resume=True, out=None)
    assert os.path.basename(runs.read_state(run_dir)[-1]) == "model.ckpt-1"
    assert newest_checkpoint_epochs(run_dir) == 2


def test_two_runs_started_at_once_write_different_folders(dry_runs_at_once):
    logdir, procs = dry_runs_at_once
    assert all(p.returncode == 0 for p in procs), [p.stderr[-2000:] for p in procs]
    folders = {run_dir_from(p.stdout) for p in procs}
    assert len(folders) == 2 and len(os.listdir(logdir)) == 2


def test_a_resume_while_the_run_still_trains_is_refused_before_tensorflow(tiny_mnist, tmp_path):
    mnist = data.load(tiny_mnist)
    info = {"source": mnist.source, "sha256": mnist.fingerprint()}  # as the command line saves it
    run_dir = runs.new_run_dir(str(tmp_path))
    attempts = []

    class ResumeFromAnotherProcess(io.StringIO):
        """The training's output: after the first epoch's line (its checkpoint is saved), another
        process tries to resume the run while this one still trains it."""

        def write(self, text):
            written = super().write(text)
            if "\n" in text and "0 Validation accuracy" in self.getvalue() and not attempts:
                attempts.append(
                    subprocess.run(
                        [sys.executable, "-c", DRIVER, ROOT, "--resume", run_dir, "--data", tiny_mnist],
                        capture_output=True,
                        text=True,
                        timeout=60,
                    )
                )
            return written

    train(Config(epochs=2, batch_size=100), data.split(mnist), run_dir, out=ResumeFromAnotherProcess(), data_info=info)
    assert len(attempts) == 1 and attempts[0].returncode == 2, attempts
    lines = attempts[0].stderr.strip().splitlines()
    assert len(lines) == 1 and "is being trained by another process" in lines[0], attempts[0].stderr
    assert attempts[0].stdout.split()[0] == "NO_TF"
    assert len(runs.read_state(run_dir)) == 2  # the run went on, undisturbed
    with runs.run_lock(run_dir) as took:  # and let go of the run when it ended
        assert took


def test_extending_a_finished_run_with_epochs_equals_a_longer_run(tiny_run, tiny_mnist, tmp_path, six_epoch_run):
    extended = tmp_path / "run-20260101000000"
    shutil.copytree(tiny_run, extended)  # 2 epochs, batch 100: the start of the 6-epoch run
    p = run_train("--resume", extended, "--data", tiny_mnist, "--epochs", "6")
    assert p.returncode == 0, p.stderr
    longer = six_epoch_run
    assert len(table_from(longer.stdout)) == 6 and table_from(p.stdout) == table_from(longer.stdout)
    a, b = final_variables(str(extended)), final_variables(run_dir_from(longer.stdout))
    assert all(a[n].tobytes() == b[n].tobytes() for n in a)
    assert read_json(extended / "config.json")["epochs"] == 6  # the run is now 6 epochs long
    results = read_json(extended / "results.json")
    assert len(results["validation_accuracy"]) == 6 and results["checkpoint"] == "model.ckpt-5"


def test_log_folder_precheck_creates_nothing_and_refuses_a_file_on_the_path(tmp_path):
    runs.check_logdir(str(tmp_path / "a" / "b"), create=False)
    assert os.listdir(tmp_path) == []
    (tmp_path / "f").write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        runs.check_logdir(str(tmp_path / "f" / "x" / "y"), create=False)
    if os.geteuid() != 0:  # root may write anywhere
        (tmp_path / "ro").mkdir(mode=0o555)
        with pytest.raises(RunFolderError, match="no write permission"):
            runs.check_logdir(str(tmp_path / "ro" / "logs"), create=False)


def test_a_checkpoint_that_cannot_be_written_stops_with_exit_4_keeping_the_last_one(
    tiny_mnist, tmp_path, monkeypatch, capsys
):
    from bnmnist import cli

    commit = runs.commit_checkpoint

    def disk_full_at_epoch_1(run_dir, prefix, keep):
        if prefix.endswith("model.ckpt-1"):
            raise OSError(errno.ENOSPC, "No space left on device")
        return commit(run_dir, prefix, keep)

    monkeypatch.setattr(runs, "commit_checkpoint", disk_full_at_epoch_1)
    args = ["--data", tiny_mnist, "--logdir", str(tmp_path), "--batch-size", "100", "--quiet"]
    assert cli.main(args + ["--epochs", "3"]) == 4
    out, err = capsys.readouterr()
    run_dir = run_dir_from(out)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "could not write the checkpoint of epoch 1" in lines[0], err
    assert "No space left on device" in lines[0] and "still model.ckpt-0" in lines[0]
    assert f"--resume {run_dir}" in lines[0]
    assert [os.path.basename(p) for p in runs.read_state(run_dir)] == ["model.ckpt-0"]
    monkeypatch.setattr(runs, "commit_checkpoint", commit)  # room again: the run goes on
    assert cli.main(["--resume", run_dir, "--data", tiny_mnist, "--quiet"]) == 0
    assert runs.read_state(run_dir)[-1].endswith("model.ckpt-2")
    assert len(json.load(open(os.path.join(run_dir, "results.json")))["validation_accuracy"]) == 3


def test_a_run_folder_removed_mid_run_stops_with_exit_4_in_one_line(tiny_mnist, tmp_path):
    p = start_train("--data", tiny_mnist, "--logdir", tmp_path, "--epochs", "100000", "--quiet")
    for line in p.stdout:
        if line.startswith("Run folder: "):
            run_dir = line.split(": ", 1)[1].strip()
        if line.startswith("1 Validation accuracy"):
            shutil.rmtree(run_dir)
            break
    _, err = p.communicate(timeout=60)
    lines = [l for l in err.splitlines() if l.startswith("bnmnist-train")]
    assert p.returncode == 4, err
    assert len(lines) == 1 and f"the run folder {run_dir} is gone" in lines[0] and "Traceback" not in err


def test_closed_stdout_stops_quietly_with_exit_141_and_a_resumable_run(tiny_mnist, tmp_path):
    # python scripts/train.py | head -1: the reader goes away; no BrokenPipeError traceback
    p = start_train("--data", tiny_mnist, "--logdir", tmp_path, "--epochs", "100000", "--quiet")
    run_dir = p.stdout.readline().split(": ", 1)[1].strip()
    p.stdout.close()
    err = p.stderr.read()
    assert p.wait(timeout=60) == 141, err
    lines = [l for l in err.splitlines() if l.startswith("bnmnist-train")]
    assert len(lines) == 1 and "standard output was closed" in lines[0], err
    assert f"--resume {run_dir}" in lines[0] and "Traceback" not in err and "Exception ignored" not in err


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (room for two checkpoints of the book's network), unmounted afterwards."""
    with tmpfs(tmp_path / "small_disk", "3m") as mnt:
        yield mnt


def test_a_compile_cache_on_a_disk_short_of_room_is_not_used_and_the_run_trains(small_disk, tiny_mnist, tmp_path):
    args = ["--data", tiny_mnist, "--epochs", "1", "--batch-size", "100", "--logdir", tmp_path / "logs", "--quiet"]
    p = run_train(*args, env={"BNMNIST_COMPILE_CACHE": str(small_disk / "cache")})
    assert p.returncode == 0, p.stderr[-2000:]
    assert not (small_disk / "cache").exists()


@pytest.mark.slow
def test_a_compile_cache_disk_filling_up_before_the_write_stops_with_one_line_and_the_next_run_trains(
    tiny_mnist, tmp_path
):
    with tmpfs(tmp_path / "cache_disk", f"{atomic.CACHE_MIN_FREE_BYTES // 2**20 + 8}m") as mnt:
        env = {"BNMNIST_COMPILE_CACHE": str(mnt / "cache")}
        args = ["--data", tiny_mnist, "--epochs", "1", "--batch-size", "100", "--logdir", tmp_path / "logs"]
        p = start_train(*args, env=env)
        # the cache's check of the room is done before TensorFlow is imported, and XLA compiles
        # after the run folder is made: fill the disk in between
        assert p.stdout.readline().startswith("Run folder:")
        fill_disk(mnt)
        out, err = p.communicate(timeout=300)
        assert p.returncode == 4, err[-2000:]
        lines = [line for line in err.splitlines() if line.startswith("bnmnist-train")]
        assert len(lines) == 1 and "compile cache" in lines[0] and "No space left" in lines[0], err
        assert "Traceback" not in err
        assert not glob.glob(str(mnt / "cache" / "*" / "*.pb")) and not glob.glob(str(mnt / "cache" / "*" / ".run-*"))
        again = run_train(*args, "--quiet", env=env)  # the disk is short of room now: no cache
        assert again.returncode == 0, again.stderr[-2000:]


def test_a_real_full_disk_stops_with_exit_4_loses_nothing_and_the_printed_resume_finishes_the_run(
    small_disk, tiny_mnist, six_epoch_run
):
    p = run_train("--data", tiny_mnist, "--logdir", small_disk, "--epochs", "6", "--batch-size", "100")
    assert p.returncode == 4, p.stderr[-2000:]
    lines = [line for line in p.stderr.splitlines() if line.startswith("bnmnist-train")]
    assert len(lines) == 1 and "No space left on device" in lines[0] and "Traceback" not in p.stderr, p.stderr
    run_dir = run_dir_from(p.stdout)
    # the newest checkpoint the state file names is complete and loads, and so is every other one
    saved = runs.read_state(run_dir)
    assert saved, "not even one checkpoint fitted: make the disk larger"
    epochs = newest_checkpoint_epochs(run_dir)
    assert epochs == len(saved) < 6
    for prefix in saved:
        reader = tf.train.load_checkpoint(prefix)
        values = [reader.get_tensor(n) for n, _ in tf.train.list_variables(prefix) if n != "run_state"]
        assert len(values) == 18 and all(np.all(np.isfinite(v)) for v in values)
    # once there is room, the printed command finishes the run bit-identical to one never stopped
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)
    command = lines[0].split("resume with: ", 1)[1]
    resumed = _run_printed_command(command, train_env())
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert table_from(resumed.stdout) == table_from(six_epoch_run.stdout)
    a, b = final_variables(run_dir_from(six_epoch_run.stdout)), final_variables(run_dir)
    assert all(a[n].tobytes() == b[n].tobytes() for n in a)
    assert not [f for f in os.listdir(run_dir) if ".tmp" in f or "tempstate" in f]  # no partial file left


def _full_disk(*args):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("what", ["results.json", "TensorBoard's event file"])
def test_a_full_disk_for_the_results_or_tensorboard_keeps_every_checkpoint_and_says_how_to_go_on(
    what, tiny_mnist, tmp_path, monkeypatch, capsys
):
    from bnmnist import atomic, cli, training_session

    if what == "results.json":
        write = atomic.write_json_atomic
        monkeypatch.setattr(
            atomic,
            "write_json_atomic",
            lambda path, obj: (_full_disk if path.endswith("results.json") else write)(path, obj),
        )
    else:
        monkeypatch.setattr(training_session.tf1.summary.FileWriter, "flush", lambda self: _full_disk())
    args = ["--data", tiny_mnist, "--logdir", str(tmp_path), "--batch-size", "100", "--epochs", "3", "--quiet"]
    assert cli.main(args) == 4
    out, err = capsys.readouterr()
    run_dir = run_dir_from(out)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"could not write {what} in {run_dir} (" in lines[0], err
    assert "No space left on device" in lines[0] and "still model.ckpt-" in lines[0]
    assert f"then resume with: python scripts/train.py --resume {run_dir}" in lines[0]
    saved = runs.read_state(run_dir)
    assert saved and newest_checkpoint_epochs(run_dir) == len(saved)
    monkeypatch.undo()  # room again: the resume finishes the run
    assert cli.main(["--resume", run_dir, "--data", tiny_mnist, "--quiet"]) == 0
    assert len(json.load(open(os.path.join(run_dir, "results.json")))["validation_accuracy"]) == 3
