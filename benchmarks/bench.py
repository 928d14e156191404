"""Speed benchmark: bnmnist's default (XLA) loop, its --feed-dict loop, the book's own code and
other frameworks, each a process of its own, in interleaved rounds.

    python benchmarks/bench.py --data ../shared/data/mnist [--rounds 3] [--epochs 20]
        [--baseline COMMIT] [--peer NAME=PYTHON] [--skip NAME] [--markdown docs/performance.md]

For each it reports the median and min-max of the training loop (per-epoch validation included,
imports and start-up excluded; for bnmnist the "Training took" figure, for the peers their own
``train_s``), its ratio to the book's own code (``peers/book_tf1.py``), the fraction of this
machine's matmul floor (measured in the same run with NumPy on every matrix shape of the
workload), whether its table equals the book's, the whole-process wall time and peak resident
memory (``wait4``), for bnmnist the start-up before the first step, and for those that compile
before the loop (bnmnist's XLA loop, the JAX peer) that compile and their ratio to the book with
it added back. bnmnist's compile and data caches start empty in a folder of the benchmark's own:
round 1 compiles and decodes (its process time is reported apart), later rounds load both.

The peers are the scripts in ``benchmarks/peers/``, each naming its requirements in its
docstring. ``book_tf1`` and ``keras3_fit`` run with this Python (bnmnist's dev environment has
what they need); ``jax_scan`` and ``torch_eager`` with ``benchmarks/peers/venvs/NAME/bin/python``,
or the Python ``--peer NAME=PYTHON`` names. A peer without its Python is left out with a one-line
note saying how to make it. ``--baseline`` runs an earlier commit of bnmnist (a temporary git
worktree) or another checkout in the same rounds. Every temporary folder is removed at the end,
also after Ctrl-C or SIGTERM (exit 130 or 143).
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from bnmnist import runs
from bnmnist.atomic import read_json
from bnmnist.cli import stopped_by
from bnmnist.config import BOOK_TABLE
from bnmnist.errors import BnmnistError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))  # tooling.py, the scripts' shared module
PEERS_DIR = os.path.join(ROOT, "benchmarks", "peers")
BOOK = [str(a) for a in BOOK_TABLE]  # as printed
CACHES = ("BNMNIST_COMPILE_CACHE", "BNMNIST_DATA_CACHE")
BOOK_PEER = "book_tf1"  # the book's own cell: the baseline of every ratio
# peer -> whether it runs with this Python (bnmnist's dev environment has what it needs)
PEERS = {"book_tf1": True, "keras3_fit": True, "jax_scan": False, "torch_eager": False}


class Stopped(KeyboardInterrupt):
    """Ctrl-C or SIGTERM: the benchmark stops, its child and temporary folders go."""


def _stop(signum, _frame):
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # once: the clean-up must not be broken into
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Stopped(signum)


def run_measured(cmd, env):
    """(stdout, wall seconds, peak RSS MiB, return code) of one process; a stop signal ends it too."""
    t = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        out = p.stdout.read()
        _, status, usage = os.wait4(p.pid, 0)
    except Stopped:
        p.terminate()  # a bnmnist run saves nothing worth keeping here: its folder is ours
        p.wait()
        raise
    p.returncode = os.waitstatus_to_exitcode(status)
    return out, time.perf_counter() - t, usage.ru_maxrss / 1024, p.returncode


def peer_python(name, given):
    """The Python a peer runs with, or None (with a one-line note) when it is not there."""
    python = given.get(name) or (
        sys.executable if PEERS[name] else os.path.join(PEERS_DIR, "venvs", name, "bin", "python")
    )
    if os.path.isfile(python) and os.access(python, os.X_OK):
        return python
    requirements = peer_requirements(name)
    venv = os.path.relpath(os.path.join(PEERS_DIR, "venvs", name))
    print(
        f"bench: leaving out {name}: no Python at {python}; make one with: python3 -m venv {venv} && "
        f"{venv}/bin/pip install {requirements} (or pass --peer {name}=PYTHON)",
        flush=True,
    )
    return None


def peer_requirements(name):
    """The requirements a peer's docstring names ("Requirements (...): jax jaxlib numpy")."""
    with open(os.path.join(PEERS_DIR, f"{name}.py"), encoding="utf-8") as f:
        line = next(l for l in f if l.startswith("Requirements"))
    return line.split(":", 1)[1].strip()


def baseline_checkout(spec, scratch):
    """--baseline: a checkout folder as it is, or a commit checked out into a temporary worktree.
    Returns (folder, commit or None)."""
    if os.path.isfile(os.path.join(spec, "scripts", "train.py")):
        return spec, baseline_commit(spec)
    folder = os.path.join(scratch, "baseline")
    p = subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", folder, spec], capture_output=True, text=True)
    if p.returncode != 0:
        last = (p.stderr.strip().splitlines() or ["git failed"])[-1]
        raise BnmnistError(f"--baseline {spec} is neither a bnmnist checkout nor a commit of this repository ({last})")
    return folder, baseline_commit(folder)


def remove_scratch(scratch):
    """The benchmark's temporary folder, and the baseline's worktree if it made one."""
    if os.path.isdir(os.path.join(scratch, "baseline")):
        subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", os.path.join(scratch, "baseline")],
                       capture_output=True)  # fmt: skip
    shutil.rmtree(scratch, ignore_errors=True)


def parse_bnmnist(out):
    table = [l.split()[3] for l in out.splitlines() if " Validation accuracy: " in l]
    run_dir = next(l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("Run folder: "))
    res = read_json(os.path.join(run_dir, "results.json"))
    line = next(l for l in out.splitlines() if l.startswith("Start-up"))
    startup = float(line.split(": ")[1].split()[0])
    compile_s = float(line.split("XLA compile ")[1].split()[0]) if "XLA compile " in line else None
    parts = {  # the start-up line's parts: flags and data, TensorFlow import, graph and session
        name: float(line.split(name + " ")[1].split()[0])
        for name in ("flags and data", "TensorFlow import", "graph and session")
        if name + " " in line
    }
    return res["train_seconds"], table, (startup, parts), compile_s


def parse_peer(out):
    res = json.loads(next(l for l in out.splitlines() if l.startswith("RESULT "))[7:])
    return res["train_s"], res["accs"], None, res.get("compile_s")


def matmul_floor(epochs, n_train=55000, batch=200, n_valid=5000, reps=30):
    """Seconds the workload's matmuls take at NumPy's best throughput here (all cores)."""
    import numpy as np

    sizes = (784, 300, 100, 10)
    rng = np.random.default_rng(0)

    def best(m, k, n):
        a = rng.random((m, k), dtype=np.float32)
        b = rng.random((k, n), dtype=np.float32)
        for _ in range(3):
            a @ b
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        return min(times)

    step = 0.0
    for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        step += best(batch, k, n)  # forward
        step += best(k, batch, n)  # weight gradient
        if i > 0:
            step += best(batch, n, k)  # input gradient (none for the first layer)
    valid = sum(best(n_valid, k, n) for k, n in zip(sizes[:-1], sizes[1:]))
    flops = sum(2 * batch * k * n * (3 if i else 2) for i, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])))
    return epochs * (n_train // batch * step + valid), flops


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("BNMNIST_DATA"), help="MNIST IDX folder (default: $BNMNIST_DATA)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=20, help="(default: %(default)s)")
    ap.add_argument(
        "--peer",
        action="append",
        default=[],
        metavar="NAME=PYTHON",
        help=f"the Python a peer runs with ({', '.join(PEERS)}); by default this one for book_tf1 and "
        "keras3_fit, benchmarks/peers/venvs/NAME/bin/python for the others",
    )
    ap.add_argument("--skip", action="append", default=[], metavar="NAME", help="leave a peer out")
    ap.add_argument(
        "--baseline",
        metavar="COMMIT|CHECKOUT",
        help="also run an earlier bnmnist as 'bnmnist (baseline)': a commit of this repository (checked out "
        "into a temporary git worktree) or a checkout's folder",
    )
    ap.add_argument("--markdown", metavar="FILE", help="also write the table, with the machine and versions, to FILE")
    ap.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="FLAGS",
        help='also run bnmnist with these flags, e.g. --extra="--threads 2,1"',
    )
    args = ap.parse_args()
    if not args.data or not os.path.isdir(args.data):
        sys.exit("bench: pass the MNIST IDX folder with --data or BNMNIST_DATA")
    given = {}
    for spec in args.peer:
        name, _, python = spec.partition("=")
        if name not in PEERS or not python:
            sys.exit(f"bench: --peer {spec}: give NAME=PYTHON with NAME one of {', '.join(PEERS)}")
        given[name] = python
    unknown = [name for name in args.skip if name not in PEERS]
    if unknown or BOOK_PEER in args.skip:
        sys.exit(f"bench: --skip takes {', '.join(p for p in PEERS if p != BOOK_PEER)}; {BOOK_PEER} is the baseline")
    if args.markdown:  # checked as chapter.py checks it, before minutes of measuring
        if os.path.isdir(args.markdown):
            sys.exit(f"bench: cannot write --markdown {args.markdown}: it is a folder; give a Markdown file's name")
        try:
            folder = os.path.dirname(os.path.abspath(args.markdown))
            runs.make_writable(folder, "the folder of --markdown", "choose a file you can write")
        except BnmnistError as e:
            sys.exit(f"bench: cannot write --markdown {args.markdown}: {e}")
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    scratch = tempfile.mkdtemp(prefix="bnmnist-bench-")
    try:
        return measure(args, given, scratch)
    except Stopped as e:
        print(
            f"bench: {stopped_by(e.args[0])}; nothing was written, and its temporary folders are removed",
            file=sys.stderr,
        )
        return 128 + e.args[0]
    except BnmnistError as e:
        print(f"bench: {e}", file=sys.stderr)
        return 2
    finally:
        remove_scratch(scratch)


def measure(args, given, scratch):
    logdir = os.path.join(scratch, "runs")
    os.makedirs(logdir)
    baseline, commit = baseline_checkout(args.baseline, scratch) if args.baseline else (None, None)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", MNIST_DIR=os.path.abspath(args.data), N_EPOCHS=str(args.epochs))
    env.pop("TF_USE_LEGACY_KERAS", None)
    # bnmnist keeps XLA's compile and the decoded MNIST between runs: start from empty caches, so
    # that round 1 compiles and decodes (its process time is reported apart) and later rounds load
    # them, as a user's do
    env["BNMNIST_COMPILE_CACHE"] = os.path.join(scratch, "xla-cache")
    env["BNMNIST_DATA_CACHE"] = os.path.join(scratch, "mnist-cache")
    train = [os.path.join(ROOT, "scripts", "train.py"), "--data", args.data, "--logdir", logdir,
             "--epochs", str(args.epochs), "--quiet"]  # fmt: skip
    contenders = {
        "bnmnist (default)": ([sys.executable, *train], parse_bnmnist),
        "bnmnist --feed-dict": ([sys.executable, *train, "--feed-dict"], parse_bnmnist),
    }
    if baseline:
        contenders["bnmnist (baseline)"] = ([sys.executable, os.path.join(baseline, "scripts", "train.py"), *train[1:]],
                                            parse_bnmnist)  # fmt: skip
    for flags in args.extra:
        contenders[f"bnmnist {flags}"] = ([sys.executable, *train, *flags.split()], parse_bnmnist)
    for name in PEERS:
        python = None if name in args.skip else peer_python(name, given)
        if python:
            contenders[name] = ([python, os.path.join(PEERS_DIR, f"{name}.py")], parse_peer)

    floor, step_flops = matmul_floor(args.epochs)
    print(f"matmul floor for {args.epochs} epochs: {floor:.2f} s ({step_flops / 1e6:.2f} MFLOP per step)", flush=True)
    samples = {name: [] for name in contenders}
    for r in range(args.rounds):
        for name in round_order(list(contenders), r):
            cmd, parse = contenders[name]
            # the baseline keeps caches of its own: another version's entries are not its to read
            own = {k: v + "-baseline" for k, v in env.items() if k in CACHES} if name == "bnmnist (baseline)" else {}
            out, wall, rss, rc = run_measured(cmd, {**env, **own})
            if rc != 0:
                print(f"round {r + 1}: {name} failed (exit {rc}); left out", flush=True)
                continue
            train_s, table, startup, compile_s = parse(out)
            loaded = ("loaded from its cache" in out) if parse is parse_bnmnist and compile_s is not None else None
            samples[name].append((train_s, wall, rss, table, startup, compile_s, loaded))
            print(
                f"round {r + 1}: {name}: loop {train_s:.2f} s, process {wall:.2f} s, peak {rss:.0f} MiB"
                + (f", start-up {startup[0]:.1f} s ({_parts(startup[1])})" if startup is not None else "")
                + (f", compile {compile_s:.2f} s" if compile_s is not None else "")
                + (" (loaded from the cache)" if loaded else ""),
                flush=True,
            )
    if not samples[BOOK_PEER]:
        raise BnmnistError(f"{BOOK_PEER}, the baseline of every ratio, failed in every round; nothing to compare")
    floor2, _ = matmul_floor(args.epochs)
    floor = min(floor, floor2)
    lines = summary(samples, args, floor)
    first = samples["bnmnist (default)"][:1]
    if first and first[0][6] is False:
        note = f"bnmnist (default) in round 1, compiling and decoding into empty caches: process {first[0][1]:.1f} s."
        lines += ["", note]
    print("\n" + "\n".join(lines))
    if args.markdown:
        try:
            write_markdown(args.markdown, lines, sys.argv[1:], commit)
        except OSError as e:  # sections are written whole or not at all
            print(f"bench: could not write {args.markdown} ({e.strerror}); it is unchanged: make room and run again",
                  file=sys.stderr)  # fmt: skip
            return 4
        print(f"\nwritten to {args.markdown}")
    return 0


def round_order(names, r):
    """The order of round ``r`` (from 0): each round starts one contender later, so that over as
    many rounds as contenders each runs once in every position, and none always runs after the
    same neighbour or at the same point of a round."""
    k = r % len(names)
    return names[k:] + names[:k]


def baseline_commit(checkout):
    """The commit a --baseline checkout is at, for the record (None without git or a checkout)."""
    if not checkout:
        return None
    p = subprocess.run(["git", "-C", checkout, "log", "-1", "--format=%h"], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    return p.stdout.strip() or None


def _parts(parts):
    return ", ".join(f"{name} {value:.1f}" for name, value in parts.items())


def summary(samples, args, floor):
    """The table of medians, as Markdown lines."""
    book = statistics.median(s[0] for s in samples[BOOK_PEER])
    book_process = statistics.median(s[1] for s in samples[BOOK_PEER])
    lines = [
        f"{args.rounds} interleaved rounds (each starting one contender later), {args.epochs} epochs; "
        f"matmul floor {floor:.2f} s (min of two measurements). Medians; peak is the largest of the rounds.",
        "",
        "| implementation | loop s | min-max | loop / book | floor / loop | table = book | process s "
        "| process / book | peak MiB | start-up s (parts) | compile s | loop + compile / book |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, rows in samples.items():
        if not rows:
            lines.append(f"| {name} | failed | | | | | | | | | | |")
            continue
        loops = [r[0] for r in rows]
        med = statistics.median(loops)
        tables = {tuple(r[3]) for r in rows}
        agree = (
            "yes"
            if tables == {tuple(BOOK[: args.epochs])}
            else (
                f"{sum(a == b for a, b in zip(rows[0][3], BOOK))}/{args.epochs}"
                + (" (varies)" if len(tables) > 1 else "")
            )
        )
        startups = [r[4] for r in rows if r[4] is not None]
        startup = "-"
        if startups:
            parts = {k: statistics.median(p[1][k] for p in startups) for k in startups[0][1]}
            startup = f"{statistics.median(p[0] for p in startups):.1f} ({_parts(parts)})"
        compiles = [r[5] for r in rows if r[5] is not None]
        compiled = "- | -"
        if compiles:  # the ahead-of-time compile added back into each round's loop
            with_compile = statistics.median(r[0] + r[5] for r in rows if r[5] is not None)
            compiled = f"{statistics.median(compiles):.2f} | {with_compile / book:.2f}"
        process = statistics.median(r[1] for r in rows)
        lines.append(
            f"| {name} | {med:.2f} | {min(loops):.2f}-{max(loops):.2f} | {med / book:.2f} | "
            f"{floor / med:.2f} | {agree} | {process:.1f} | {process / book_process:.2f} | "
            f"{max(r[2] for r in rows):.0f} | {startup} | {compiled} |"
        )
    return lines


def write_markdown(path, lines, argv, baseline=None):
    from tooling import measured_on, write_markdown_section

    command = " ".join(["python benchmarks/bench.py", *argv])
    text = "\n".join(
        [
            "## Speed and memory",
            "",
            f"Measured {measured_on()}, by `{command}`.",
            *(["", f"The baseline is commit {baseline}."] if baseline else []),
            "",
            *lines,
            "",
            "*Loop*: the 20-epoch training loop, per-epoch validation included, imports, data loading and "
            "compiles excluded (bnmnist's `Training took`, the peers' `train_s`). *Process*: the whole "
            "command, start to exit; bnmnist's compile and data caches start empty, so round 1 compiles and "
            "decodes, and the later rounds load both, as a user's later runs do. *Peak*: the largest resident "
            "memory of the process. *Floor*: the "
            "workload's matrix products alone at NumPy's best throughput on this machine. Every figure "
            "comes from the same run; the machine's speed drifts by a third from hour to hour, so compare "
            "ratios, not seconds across runs.",
        ]
    )
    write_markdown_section(path, "bench", text)


if __name__ == "__main__":
    sys.exit(main())
