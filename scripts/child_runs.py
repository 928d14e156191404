"""Training runs started by the helper scripts (seeds.py, chapter.py), each a ``scripts/train.py``
process of its own, and how Ctrl-C and SIGTERM stop them.

Each run has a process group of its own, so Ctrl-C, ``timeout`` and ``kill -TERM`` reach the
script alone, which passes the signal on once to every run still training; each run saves its
last complete epoch and prints how to resume, and the script repeats those commands and exits
with 128 + the signal's number (130, 143), as a run does.
"""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time

from bnmnist.cli import stopped_by
from bnmnist.errors import BnmnistError

import tooling

HERE = os.path.dirname(os.path.abspath(__file__))
STOP_EXIT_CODES = {128 + signal.SIGINT: signal.SIGINT, 128 + signal.SIGTERM: signal.SIGTERM}


class Interrupted(KeyboardInterrupt):
    """A stop signal reached the script or one of its runs. ``signum``: which; ``resume``: the
    ``Resume with:`` command of the run that stopped (empty for the script itself)."""

    def __init__(self, signum, resume=""):
        super().__init__(signum)
        self.signum, self.resume = signum, resume


class _Children:
    """The runs still training, and whether a stop signal has come."""

    def __init__(self):
        self.lock = threading.Lock()
        self.running = set()
        self.signum = 0

    def start(self, cmd, env):
        with self.lock:
            if self.signum:
                raise Interrupted(self.signum)
            # a process group of its own: a stop signal reaches the run once, from this script,
            # whether it came from a terminal's Ctrl-C, `timeout` or `kill -TERM` (a second one
            # could break into the run while it saves and says how to resume)
            p = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
            )
            self.running.add(p)
        return p

    def done(self, p):
        with self.lock:
            self.running.discard(p)

    def stop(self, signum, _frame):
        """The signal handler: pass the signal on, and stop the script's main thread once."""
        with self.lock:
            first = not self.signum
            self.signum = self.signum or signum
            for p in self.running:
                with contextlib.suppress(OSError):
                    p.send_signal(signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)
        if first:
            raise Interrupted(signum)


CHILDREN = _Children()


def stop_runs_on_signals():
    """Ctrl-C and SIGTERM from here on stop every run cleanly and raise :class:`Interrupted` in the
    main thread (also when the script was started in the background, where Ctrl-C is ignored)."""
    for signum in STOP_EXIT_CODES.values():
        signal.signal(signum, CHILDREN.stop)


def train_run(flags, args, what):
    """``scripts/train.py`` with ``flags`` (and ``args.epochs``, ``args.data``, ``args.logdir``) in
    a process of its own; returns its ``results.json`` with ``run_dir`` and ``seconds`` (the whole
    process) added. Raises :class:`Interrupted` if a stop signal reached it, BnmnistError if it
    failed."""
    cmd = [sys.executable, os.path.join(HERE, "train.py"), *flags, "--logdir", args.logdir, "--quiet"]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    if args.data:
        cmd += ["--data", args.data]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    t0 = time.perf_counter()
    p = CHILDREN.start(cmd, env)
    try:
        out, err = p.communicate()
    finally:
        CHILDREN.done(p)
    if p.returncode in STOP_EXIT_CODES or -p.returncode in STOP_EXIT_CODES.values():
        resume = [line.split("Resume with: ", 1)[1] for line in err.splitlines() if "Resume with: " in line]
        raise Interrupted(STOP_EXIT_CODES.get(p.returncode, -p.returncode), resume[-1] if resume else "")
    if p.returncode != 0:
        last = (err.strip().splitlines() or ["(nothing on stderr)"])[-1]
        raise BnmnistError(f"{what} failed (exit {p.returncode}): {last}")
    run_dir = next(l.split(": ", 1)[1] for l in out.splitlines() if l.startswith("Run folder: "))
    results = tooling.load_results(run_dir)
    results["run_dir"] = run_dir
    results["seconds"] = time.perf_counter() - t0
    return results


def report_interrupted(prog, futures, signum, finished):
    """Once every run has ended: one line saying the script stopped, then each stopped run's
    resume command. Returns the exit code, 128 + the first signal's number."""
    resume = []
    for future in futures:
        if future.done() and not future.cancelled() and isinstance(future.exception(), Interrupted):
            signum = signum or future.exception().signum
            if future.exception().resume:
                resume.append(future.exception().resume)
    signum = CHILDREN.signum or signum or signal.SIGINT
    print(f"{prog}: {stopped_by(signum)} after {finished}", file=sys.stderr)
    for command in resume:
        print(f"Resume with: {command}", file=sys.stderr)
    return 128 + signum
