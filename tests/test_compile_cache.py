"""XLA's compile of the epoch loop kept between runs (bnmnist/compile_cache.py): only whole,
checked entries reach TensorFlow, a loaded compile trains bit-identical to a fresh one, and a
damaged entry or a full disk never costs more than one line."""

import glob
import hashlib
import json
import os
import re
import subprocess
import sys
import time

import pytest

from bnmnist import atomic, compile_cache

from helpers import ROOT, final_variables, run_dir_from, run_train, table_from

ENABLE = (
    "import os, sys; sys.path.insert(0, {root!r}); from bnmnist import compile_cache as c; "
    "print(c.enable()); print(os.environ.get('TF_XLA_FLAGS', ''))"
)


def enable_in_fresh_process(cache, **env):
    """compile_cache.enable() where TensorFlow is not imported yet: (shared folder, TF_XLA_FLAGS)."""
    p = subprocess.run(
        [sys.executable, "-c", ENABLE.format(root=ROOT)],
        capture_output=True,
        text=True,
        env={**os.environ, "BNMNIST_COMPILE_CACHE": str(cache), **env},
    )
    assert p.returncode == 0, p.stderr
    folder, flags = p.stdout.splitlines()
    return (None if folder == "None" else folder), flags


def private_folder(flags):
    return flags.split(f"{compile_cache.FLAG}=")[1].split()[0]


def write_entry(folder, name, data, digest=None):
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        f.write(data)
    with open(path + ".json", "w") as f:
        json.dump({"sha256": digest or hashlib.sha256(data).hexdigest()}, f)


def intact(entry):
    """The entry's file has the SHA-256 its record holds."""
    folder, name = os.path.split(entry)
    return atomic.CacheFolder(folder).record(name)["sha256"] == atomic.sha256_file(entry)


def compiled_here(body=b"an entry", *extra):
    """Entry bytes as XLA writes them on this machine: its target features recorded in one list."""
    features = ",".join([*(f"+{f}" for f in sorted(compile_cache.host_features())), *extra]).encode()
    return body + b"\x12" + features + b"\x1a"


def test_only_entries_whose_recorded_sha256_matches_reach_tensorflow(tmp_path):
    folder, _ = enable_in_fresh_process(tmp_path)
    write_entry(folder, "whole.pb", compiled_here())
    write_entry(folder, "truncated.pb", compiled_here()[:-5], digest=hashlib.sha256(compiled_here()).hexdigest())
    with open(os.path.join(folder, "unrecorded.pb"), "wb") as f:  # its digest was never written
        f.write(b"half")
    again, flags = enable_in_fresh_process(tmp_path)
    assert again == folder
    assert sorted(os.listdir(private_folder(flags))) == ["whole.pb"]


def test_the_cache_stays_off_when_asked_or_when_the_user_set_tensorflows_flag(tmp_path):
    assert enable_in_fresh_process(tmp_path, BNMNIST_COMPILE_CACHE="off") == (None, "")
    mine = f"{compile_cache.FLAG}=/somewhere/else"
    assert enable_in_fresh_process(tmp_path, TF_XLA_FLAGS=mine) == (None, mine)


def test_the_cache_stays_off_in_a_process_that_already_imported_tensorflow(tmp_path, monkeypatch):
    import tensorflow  # noqa: F401  (TensorFlow has read its flags by now)

    monkeypatch.setenv("BNMNIST_COMPILE_CACHE", str(tmp_path))
    assert compile_cache.enable() is None and not os.listdir(tmp_path)


def test_the_folder_is_keyed_by_what_changes_xlas_machine_code(monkeypatch):
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    key = compile_cache.machine_key()
    assert compile_cache.machine_key() == key
    monkeypatch.setenv("XLA_FLAGS", "--xla_cpu_max_isa=AVX2")
    capped = compile_cache.machine_key()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "SSE41")
    assert len({key, capped, compile_cache.machine_key()}) == 3
    monkeypatch.setenv("BNMNIST_DATA", "/elsewhere")  # not about the code: same key
    assert compile_cache.machine_key() == compile_cache.machine_key()


def test_an_entry_joins_the_shared_folder_only_whole_with_its_sha256(tmp_path):
    folder, private = tmp_path / "shared", tmp_path / "private"
    folder.mkdir()
    private.mkdir()
    write_entry(str(private), "loaded.pb", b"was linked in")
    cache = compile_cache._Cache(atomic.CacheFolder(str(folder)), str(private), {"loaded.pb"})
    (private / "new.pb").write_bytes(b"compiled by this run")
    assert cache.publish() == 1
    assert sorted(os.listdir(folder)) == ["new.pb", "new.pb.json"]
    assert intact(str(folder / "new.pb"))
    assert cache.publish() == 0  # nothing new since
    cache.close()
    assert not private.exists()


def test_private_folders_of_killed_processes_are_removed_once_stale(tmp_path):
    stale, fresh = tmp_path / ".run-stale", tmp_path / ".run-fresh"
    stale.mkdir()
    fresh.mkdir()
    old = time.time() - compile_cache.STALE_SECONDS - 60
    os.utime(stale, (old, old))
    compile_cache._remove_stale(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [".run-fresh"]


def test_an_entry_is_loaded_only_when_this_cpu_has_every_instruction_set_it_records(tmp_path):
    lacking = next(f for f in ("amx-tile", "avx10.2", "avx512fp16", "xop") if f not in compile_cache.host_features())
    folder, _ = enable_in_fresh_process(tmp_path)
    write_entry(folder, "here.pb", compiled_here(b"entry", "+prefer-no-scatter", "+prefer-no-gather", "-amx-int8"))
    write_entry(folder, "elsewhere.pb", compiled_here(b"entry", f"+{lacking}"))
    write_entry(folder, "unrecorded.pb", b"an entry that names no target features")
    _, flags = enable_in_fresh_process(tmp_path)
    assert sorted(os.listdir(private_folder(flags))) == ["here.pb"]
    assert compile_cache.missing_instruction_sets(compiled_here(b"", f"+{lacking}"), set()) != []


# What XLA's loader prints about an entry compiled on AMD Zen 4 and later, on the machine that wrote it
HINT_WARNING = (
    "E0000 00:00:1796359795.587855    8786 cpu_aot_loader.cc:220] Loading XLA:CPU AOT result. Target machine "
    "feature +prefer-no-scatter is not  supported on the host machine. Machine type used for XLA:CPU compilation "
    "doesn't match the machine type for execution. This could lead to execution errors such as SIGILL.\n"
)


def test_the_loaders_warning_about_a_tuning_hint_is_dropped_and_one_about_an_instruction_set_kept(capfd):
    isa_warning = HINT_WARNING.replace("+prefer-no-scatter", "+avx512f")
    with compile_cache._without_read_noise():
        os.write(2, HINT_WARNING.encode())
        os.write(2, HINT_WARNING.replace("scatter", "gather").encode())
        os.write(2, isa_warning.encode())
    assert capfd.readouterr().err == isa_warning


def test_tensorflows_failed_text_read_of_an_entry_is_dropped_and_other_stderr_kept(capfd):
    with compile_cache._without_read_noise():
        os.write(2, f"E0000 text_format.cc:378] {compile_cache._READ_NOISE}: 2:1: Expected identifier\n".encode())
        os.write(2, b"W0000 something TensorFlow had to say\n")
    err = capfd.readouterr().err
    assert err == "W0000 something TensorFlow had to say\n"


@pytest.mark.slow
def test_a_second_run_loads_the_compiled_loop_and_trains_bit_identical(tiny_mnist, tmp_path):
    env = {"BNMNIST_COMPILE_CACHE": str(tmp_path / "cache")}
    args = ["--data", tiny_mnist, "--epochs", "2", "--batch-size", "100", "--logdir", tmp_path / "logs"]
    cold = run_train(*args, env=env)
    warm = run_train(*args, env=env)
    assert cold.returncode == 0 and warm.returncode == 0, cold.stderr + warm.stderr
    assert "loaded from its cache" not in cold.stdout and "loaded from its cache" in warm.stdout
    assert table_from(cold.stdout) == table_from(warm.stdout)
    a, b = final_variables(run_dir_from(cold.stdout)), final_variables(run_dir_from(warm.stdout))
    assert a.keys() == b.keys() and all(a[n].tobytes() == b[n].tobytes() for n in a)
    assert "XlaSerializedCacheEntry" not in warm.stderr
    assert "cpu_aot_loader" not in warm.stderr  # nothing alarming on the machine that wrote the entry
    (entry,) = glob.glob(str(tmp_path / "cache" / "*" / "*.pb"))
    # an entry that records an instruction set this CPU lacks (as if compiled on another) is not loaded
    with open(entry, "rb") as f:
        data = f.read()
    host = compile_cache.host_features()
    lacking = next(
        (f for f in re.findall(rb"-([a-z0-9.\-]+)", data) if f.decode() not in host and f.startswith((b"amx", b"avx"))),
        None,
    )
    assert lacking, "the entry records no instruction set this CPU lacks"
    write_entry(os.path.dirname(entry), os.path.basename(entry), data.replace(b"-" + lacking, b"+" + lacking, 1))
    foreign = run_train(*args, env=env)
    assert foreign.returncode == 0, foreign.stderr
    assert "loaded from its cache" not in foreign.stdout and "cpu_aot_loader" not in foreign.stderr
    assert table_from(foreign.stdout) == table_from(cold.stdout)
    # a damaged entry is compiled again, not failed on, and replaced by a whole one
    with open(entry, "r+b") as f:
        f.truncate(1000)
    damaged = run_train(*args, env=env)
    assert damaged.returncode == 0, damaged.stderr
    assert "loaded from its cache" not in damaged.stdout and table_from(damaged.stdout) == table_from(cold.stdout)
    assert intact(entry)
    assert not glob.glob(str(tmp_path / "cache" / "*" / ".run-*"))  # no private folder left behind


@pytest.mark.slow
def test_an_entry_xla_refuses_is_removed_and_the_one_line_error_says_to_run_again(tiny_mnist, tmp_path):
    env = {"BNMNIST_COMPILE_CACHE": str(tmp_path / "cache")}
    runs = {}
    for batch_size in ("100", "120"):  # two loops, two entries
        args = ["--data", tiny_mnist, "--epochs", "1", "--batch-size", batch_size, "--logdir", tmp_path / "logs"]
        p = run_train(*args, "--quiet", env=env)
        assert p.returncode == 0, p.stderr[-2000:]
        (runs[batch_size],) = set(glob.glob(str(tmp_path / "cache" / "*" / "*.pb"))) - set(runs.values())
    # the entry of one loop, whole and recorded, under the other's name: its key does not match
    with open(runs["120"], "rb") as f:
        data = f.read()
    write_entry(os.path.dirname(runs["100"]), os.path.basename(runs["100"]), data)
    args = ["--data", tiny_mnist, "--epochs", "1", "--batch-size", "100", "--logdir", tmp_path / "logs"]
    p = run_train(*args, env=env)
    assert p.returncode == 2, p.stderr[-2000:]
    lines = [line for line in p.stderr.splitlines() if line.startswith("bnmnist-train")]
    assert len(lines) == 1 and "compile cache" in lines[0] and "run the command again" in lines[0], p.stderr
    assert "Traceback" not in p.stderr and not os.path.exists(runs["100"])
    again = run_train(*args, env=env)
    assert again.returncode == 0 and "loaded from its cache" not in again.stdout, again.stderr[-2000:]
