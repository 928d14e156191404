"""Helpers the tests share (fixtures are in conftest.py): the project's paths, the book's table,
synthetic MNIST files, and running ``scripts/train.py`` as a user does."""

import contextlib
import gzip
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from bnmnist.config import BOOK_TABLE as CONFIG_BOOK_TABLE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


TRAIN_SCRIPT = os.path.join(ROOT, "scripts", "train.py")


BOOK_TABLE = [str(a) for a in CONFIG_BOOK_TABLE]  # as printed: "0.8952", ..., "0.954", ...


def write_idx(path, array, gz=True):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    with gzip.open(path, "wb") if gz else open(path, "wb") as f:
        f.write(raw)


def synthetic_mnist(n_train=6000, n_test=1000, seed=0):
    """Learnable fake digits: class k lights a 6x6 block at a class-specific spot, plus noise."""
    rng = np.random.RandomState(seed)

    def make(n):
        y = rng.randint(0, 10, n).astype(np.uint8)
        x = rng.randint(0, 90, (n, 28, 28)).astype(np.uint8)
        for k in range(10):
            r, c = 2 + (k // 5) * 12, 2 + (k % 5) * 5
            x[y == k, r : r + 6, c : c + 5] = 230
        return x, y

    return (*make(n_train), *make(n_test))


def train_env(env=None):
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", TF_CPP_MIN_LOG_LEVEL="2")
    full_env.pop("BNMNIST_DATA", None)
    full_env.update(env or {})
    return full_env


def run_train(*args, env=None, timeout=600, cwd=None):
    """Run ``python scripts/train.py ARGS`` in a fresh process; returns CompletedProcess."""
    return subprocess.run(
        [sys.executable, TRAIN_SCRIPT, *map(str, args)],
        capture_output=True,
        text=True,
        env=train_env(env),
        timeout=timeout,
        cwd=cwd or ROOT,
    )


def run_train_at_once(*arg_lists, timeout=600, envs=None, at_once=2):
    """``run_train`` for each argument list (with ``envs[i]`` added to its environment), at most
    ``at_once`` processes at a time (one per core); their CompletedProcesses in order."""
    from concurrent.futures import ThreadPoolExecutor

    envs = envs or [None] * len(arg_lists)

    def one(args, env):
        p = subprocess.Popen(
            [sys.executable, TRAIN_SCRIPT, *map(str, args)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=train_env(env),
            cwd=ROOT,
        )
        out, err = p.communicate(timeout=timeout)
        return subprocess.CompletedProcess(p.args, p.returncode, out, err)

    with ThreadPoolExecutor(at_once) as pool:
        return list(pool.map(one, arg_lists, envs))


def table_from(stdout):
    """The printed validation accuracies, as printed, in the order printed: ['0.8952', ...]."""
    return re.findall(r"^\d+ .*?Validation accuracy: ([0-9.]+)", stdout, re.M)


def run_dir_from(stdout):
    for line in stdout.splitlines():
        if line.startswith("Run folder: "):
            return line[len("Run folder: ") :].strip()
    raise AssertionError(f"no 'Run folder:' line in:\n{stdout}")


def read_events(run_dir):
    """What TensorBoard shows for a run folder: (scalars as {tag: {step: value}}, keeping the
    newest write of each step across every event file; the set of histogram tags; how many
    events carry the graph)."""
    import tensorflow as tf

    events = [
        e
        for name in sorted(os.listdir(run_dir))
        if name.startswith("events.out.tfevents")
        for e in tf.compat.v1.train.summary_iterator(os.path.join(run_dir, name))
    ]
    scalars, histograms, graphs = {}, set(), 0
    for event in sorted(events, key=lambda e: e.wall_time):
        graphs += bool(event.graph_def)
        for v in event.summary.value:
            if v.HasField("histo"):
                histograms.add(v.tag)
            else:
                scalars.setdefault(v.tag, {})[event.step] = v.simple_value
    return scalars, histograms, graphs


def final_variables(run_dir):
    """The newest checkpoint's variables, the run state left out: name -> array."""
    import tensorflow as tf

    from bnmnist import runs

    prefix = runs.read_state(run_dir)[-1]
    reader = tf.train.load_checkpoint(prefix)
    return {n: reader.get_tensor(n) for n, _ in tf.train.list_variables(prefix) if n != "run_state"}


def write_npz(path, **overrides):
    x_train, y_train, x_test, y_test = synthetic_mnist(n_train=5200, n_test=50)
    arrays = dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    arrays.update(overrides)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return str(path)


def bad_data_cases(tmp_path, tiny_mnist):
    """(name, path to load, substring the message must hold): one per kind of bad data."""

    def folder(name, mutate):
        d = tmp_path / name
        shutil.copytree(tiny_mnist, d)
        mutate(d)
        return str(d)

    train_img = "train-images-idx3-ubyte.gz"
    x_train, y_train, _, _ = synthetic_mnist(n_train=6000, n_test=10)
    cases = [
        ("missing path", str(tmp_path / "nope"), "no such file"),
        ("missing file in folder", folder("missing", lambda d: os.remove(d / train_img)), "train-images"),
        ("empty file", folder("empty", lambda d: open(d / train_img, "wb").close()), "empty"),
        (
            "truncated gzip",
            folder("trunc", lambda d: (d / train_img).write_bytes((d / train_img).read_bytes()[:5000])),
            "truncated",
        ),
        (
            "corrupt gzip",
            folder("corrupt", lambda d: (d / train_img).write_bytes(b"\x1f\x8b" + b"garbage" * 50)),
            "corrupt",
        ),
        ("wrong magic", folder("magic", lambda d: write_idx(d / train_img, y_train)), "magic"),
        (
            "truncated idx",
            folder(
                "short",
                lambda d: (d / train_img).write_bytes(
                    gzip.compress(gzip.decompress((d / train_img).read_bytes())[:-100])
                ),
            ),
            "truncated",
        ),
        (
            "wrong dims",
            folder("dims", lambda d: write_idx(d / train_img, np.zeros((6000, 28, 27), np.uint8))),
            "28, 28",
        ),
        (
            "counts disagree",
            folder("counts", lambda d: write_idx(d / "train-labels-idx1-ubyte.gz", y_train[:5999])),
            "labels",
        ),
        (
            "label out of range",
            folder("labels", lambda d: write_idx(d / "train-labels-idx1-ubyte.gz", np.full(6000, 11, np.uint8))),
            "0-9",
        ),
        ("npz missing keys", write_npz(tmp_path / "keys.npz", x_test=None), "x_test"),
        ("npz wrong dtype", write_npz(tmp_path / "dtype.npz", x_train=x_train.astype(np.float32)), "uint8"),
        ("npz wrong shape", write_npz(tmp_path / "shape.npz", x_train=x_train.reshape(6000, 784)), "28, 28"),
        (
            "npz pickled objects",
            write_npz(tmp_path / "pickle.npz", y_test=np.array([object()] * 50, dtype=object)),
            "pickle",
        ),
        ("not an npz", str(tmp_path / "junk.npz"), "readable"),
        ("a text file", str(tmp_path / "notes.txt"), "neither an .npz archive nor a folder"),
        ("a single npy array", str(tmp_path / "x.npy"), "single NumPy array"),
        ("one IDX file, not its folder", os.path.join(tiny_mnist, train_img), "pass the folder that holds all four"),
    ]
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 definitely not a zip archive")
    (tmp_path / "notes.txt").write_text("MNIST is in ../shared\n")
    np.save(tmp_path / "x.npy", x_train)
    return cases


def bad_flag_cases(tiny):
    """(name, command-line arguments, substring of the one-line refusal): one per kind of bad flag."""
    d = ["--data", tiny]
    return [
        ("epochs zero", d + ["--epochs", "0"], "positive integer"),
        ("epochs text", d + ["--epochs", "ten"], "positive integer"),
        ("epochs negative", d + ["--epochs", "-3"], "positive integer"),
        ("batch size zero", d + ["--batch-size", "0"], "positive integer"),
        ("batch size fraction", d + ["--batch-size", "2.5"], "positive integer"),
        ("batch size above training set", d + ["--batch-size", "1001"], "larger than the training set"),
        ("learning rate zero", d + ["--learning-rate", "0"], "positive finite"),
        ("learning rate negative", d + ["--learning-rate", "-0.1"], "positive finite"),
        ("learning rate nan", d + ["--learning-rate", "nan"], "positive finite"),
        ("learning rate inf", d + ["--learning-rate", "inf"], "positive finite"),
        ("learning rate text", d + ["--learning-rate", "fast"], "positive finite number"),
        ("momentum one", d + ["--momentum", "1"], "[0, 1)"),
        ("momentum negative", d + ["--momentum", "-0.1"], "[0, 1)"),
        ("seed negative", d + ["--seed", "-1"], "[0, 2**31)"),
        ("hidden text", d + ["--hidden", "300,x"], "layer sizes like 300,100"),
        ("hidden zero", d + ["--hidden", "300,0"], "each hidden layer size must be a positive integer"),
        ("unknown preset", d + ["--preset", "resnet"], "invalid choice"),
        ("unknown loop", d + ["--loop", "fast"], "invalid choice"),
        ("two loops at once", d + ["--feed-dict", "--loop", "xla"], "contradict"),
        ("unknown flag", d + ["--epoch", "3"], "unrecognized"),
        ("empty data path", ["--data", ""], "empty string"),
        ("empty log folder", d + ["--logdir", ""], "empty string"),
    ]


def start_train(*args, env=None, stderr=subprocess.PIPE):
    """``python scripts/train.py ARGS`` started in the background, its output read line by line."""
    return subprocess.Popen(
        [sys.executable, TRAIN_SCRIPT, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=train_env(env),
        cwd=ROOT,
    )


@contextlib.contextmanager
def tmpfs(mnt, size):
    """A tmpfs of ``size`` mounted at ``mnt`` (made here), unmounted afterwards; skipped where
    mounting needs root, but required in CI."""
    mnt.mkdir()
    p = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if p.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"CI must run the full-disk test, but mounting a tmpfs failed: {p.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here (it needs root): {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "--lazy", str(mnt)], check=True)  # checkpoint readers may hold files


def fill_disk(disk):
    """Take every free byte of the file system at ``disk`` with one file, ``disk/filler``."""
    with open(os.path.join(disk, "filler"), "wb") as f:
        os.posix_fallocate(f.fileno(), 0, shutil.disk_usage(disk).free)


def assert_full_disk_said_in_one_line(p, prefix):
    """Exit code 4 and one ``prefix`` error line naming the full disk, with no traceback."""
    assert p.returncode == 4, p.stderr[-2000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1 and "No space left" in errors[0] and "Traceback" not in p.stderr, p.stderr


def op_seeds(graph):
    """Variable or dropout layer -> the op seed TensorFlow gave its random op: each kernel's
    initializer, and each dropout's random op inside its cond's branch. In rising order, which
    under TF1's rule (a seed is the count of ops made before) is the order they were drawn in."""
    library = {f.signature.name: f for f in graph.as_graph_def().library.function}
    seeds = {}
    for op in graph.get_operations():
        if op.type in ("TruncatedNormal", "RandomUniform") and "/Initializer/" in op.name:
            seeds[op.name.split("/Initializer/")[0]] = op.get_attr("seed2")
        elif op.type in ("If", "StatelessIf"):
            for node in library[op.get_attr("then_branch").name].node_def:
                if node.op == "RandomUniform":
                    seeds[op.name.rsplit("/", 2)[-2]] = node.attr["seed2"].i
    return dict(sorted(seeds.items(), key=lambda item: item[1]))


def chapter_epoch_0(stdout, preset):
    """The epoch-0 value bnmnist printed for ``preset`` in ``scripts/chapter.py``'s table."""
    import tooling

    cell = tooling.NOTEBOOK_CELLS[preset][0]
    return re.search(rf"^{preset} \(cell {cell}, .*\n.*\n.*\n  bnmnist +([0-9.]+)", stdout, re.M).group(1)
