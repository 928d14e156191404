"""Crash-safety stress: SIGKILL a real training run at many random moments, resuming after each.

After every kill the newest checkpoint that the run's ``checkpoint`` state file names must be
complete and restorable (every tensor readable, finite, and the epoch it claims). The test suite
runs 20 kills; run more by hand:

    python scripts/kill_stress.py --data ../shared/data/mnist --kills 200
"""

import json
import os
import random
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TRAIN_SCRIPT = os.path.join(HERE, "train.py")


def newest_checkpoint_epochs(run_dir, n_variables=18):
    """Epochs saved in the newest checkpoint the run's state file names (None when it names none),
    after reading every tensor in it (the book's network has 18 variables). Raises
    :class:`CheckpointError` if that checkpoint is incomplete, unreadable, not finite, or not the
    epoch its run state says: what a crash must never leave behind."""
    import numpy as np
    import tensorflow as tf

    from bnmnist.errors import CheckpointError
    from bnmnist.runs import checkpoint_epoch, first_line, read_state

    prefixes = read_state(run_dir)
    if not prefixes:
        return None
    prefix = prefixes[-1]
    try:
        reader = tf.train.load_checkpoint(prefix)
        values = {n: reader.get_tensor(n) for n, _ in tf.train.list_variables(prefix)}
        state = json.loads(values.pop("run_state"))
    except (tf.errors.OpError, ValueError, KeyError) as e:
        raise CheckpointError(f"{prefix}: unreadable checkpoint ({first_line(e)})") from None
    problems = [n for n, v in values.items() if not np.all(np.isfinite(v))]
    if n_variables is not None and len(values) != n_variables:
        problems.append(f"{len(values)} variables, expected {n_variables}")
    if checkpoint_epoch(prefix) != state["epoch"] - 1:
        problems.append(f"its run state says epoch {state['epoch'] - 1}")
    if not os.path.exists(prefix + ".meta"):
        problems.append("no .meta file")
    if problems:
        raise CheckpointError(f"{prefix}: {'; '.join(problems)}")
    return state["epoch"]


def kill_at_random_moments(data, logdir, n_kills, seed=0, max_delay=0.8, log=None):
    """Start a long run, SIGKILL it at a random moment once training is under way, check the
    newest checkpoint, resume, repeat. Returns the epochs saved at each kill."""
    rnd = random.Random(seed)
    run_dir, saved = None, []
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONUNBUFFERED="1")
    for i in range(n_kills):
        args = ["--resume", run_dir] if run_dir else ["--logdir", str(logdir), "--epochs", "100000"]
        p = subprocess.Popen(
            [sys.executable, TRAIN_SCRIPT, "--data", str(data), "--quiet", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        epochs_seen = 0
        for line in p.stdout:  # wait until training is under way and one epoch is saved
            if line.startswith("Run folder: "):
                run_dir = line.split(": ", 1)[1].strip()
            epochs_seen += "(epoch " in line
            if epochs_seen == (1 if saved else 2):
                break
        time.sleep(rnd.uniform(0, max_delay))
        p.kill()
        p.wait()
        p.stdout.close()
        saved.append(newest_checkpoint_epochs(run_dir))
        if log:
            print(f"kill {i + 1}/{n_kills}: newest checkpoint restorable, {saved[-1]} epochs", file=log)
    return saved


def main():
    from bnmnist.cli import path_arg

    from tooling import ScriptParser, positive_int

    ap = ScriptParser(prog="kill_stress", description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=path_arg, help="MNIST (mnist.npz or the IDX folder)")
    ap.add_argument(
        "--logdir", default="tf_logs/kill_stress", type=path_arg, help="where the run goes (default: %(default)s)"
    )
    ap.add_argument("--kills", type=positive_int, default=100, help="how many kills (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="random moments seed (default: %(default)s)")
    args = ap.parse_args()
    from bnmnist import data, runs
    from bnmnist.errors import BnmnistError

    try:
        data.load(args.data, download=False)  # refused here, not as a run that never starts
        runs.check_logdir(args.logdir)
    except BnmnistError as e:
        print(f"kill_stress: error: {e}", file=sys.stderr)
        return 2
    saved = kill_at_random_moments(args.data, args.logdir, args.kills, args.seed, log=sys.stdout)
    print(f"{len(saved)} kills, every newest checkpoint complete and restorable; final epoch {saved[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
