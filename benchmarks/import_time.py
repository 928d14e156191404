"""What TensorFlow's import costs with and without the Keras import it makes at load time.

    python benchmarks/import_time.py [--rounds 5]

TensorFlow's ``__init__`` imports Keras's optimizers eagerly; ``bnmnist-train`` never uses Keras,
so it has that import skipped (``bnmnist.cli._import_tensorflow_without_keras``). Each round runs,
in alternating order, a fresh process that imports TensorFlow as usual and one that imports it as
bnmnist's command line does, and times the import inside the process and the whole process.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TIMED = (
    "import sys, time; sys.path.insert(0, {root!r}); t = time.perf_counter(); {stmt}; "
    "print(time.perf_counter() - t, 'keras' in sys.modules)"
)
VARIANTS = {
    "import tensorflow": "import tensorflow",
    "bnmnist's CLI (Keras skipped)": "from bnmnist.cli import _import_tensorflow_without_keras as f; f()",
}


def run(stmt):
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", TIMED.format(root=ROOT, stmt=stmt)],
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )
    seconds, keras = p.stdout.split()
    return float(seconds), time.perf_counter() - t, keras == "True"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    times = {name: [] for name in VARIANTS}
    for r in range(args.rounds):
        order = list(VARIANTS) if r % 2 == 0 else list(reversed(VARIANTS))
        for name in order:
            times[name].append(run(VARIANTS[name]))
    base = statistics.median(t[0] for t in times["import tensorflow"])
    print(f"{args.rounds} rounds, Python {sys.version.split()[0]}")
    print(f"{'':32} {'import s median':>15} {'min-max':>11} {'ratio':>6} {'process s':>9} {'Keras loaded':>12}")
    for name, ts in times.items():
        imports = [t[0] for t in ts]
        med = statistics.median(imports)
        print(
            f"{name:32} {med:15.2f} {min(imports):5.2f}-{max(imports):<5.2f} {med / base:6.2f} "
            f"{statistics.median(t[1] for t in ts):9.2f} {'yes' if all(t[2] for t in ts) else 'no':>12}"
        )


if __name__ == "__main__":
    main()
