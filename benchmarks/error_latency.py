"""How fast bad input is refused: whole-process seconds of ``scripts/train.py`` for wrong flags,
data and folders, against importing TensorFlow, measured in the same run.

    python benchmarks/error_latency.py --data ../shared/data/mnist [--repeats 5]

Issue 4 asks that flag, data and folder errors arrive "in well under a second", before TensorFlow
is imported. The tests check they come before TensorFlow (and in one line, exit code 2); the
seconds are measured here, not in the test suite. Each case runs ``--repeats`` times, interleaved
with the baseline (``python -c "import tensorflow"``, the cost every error avoids); the table gives
medians, min-max and the ratio to the baseline.
"""

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
TRAIN = os.path.join(ROOT, "scripts", "train.py")


def cases(data, tmp):
    """(name, argv) of wrong inputs; the data cases are made in ``tmp`` from the real files."""
    truncated = os.path.join(tmp, "truncated")
    shutil.copytree(data, truncated)
    images = os.path.join(truncated, "train-images-idx3-ubyte.gz")
    with open(images, "rb") as f:
        blob = f.read()
    with open(images, "wb") as f:
        f.write(blob[: len(blob) // 2])
    bad_labels = os.path.join(tmp, "bad_labels")
    shutil.copytree(data, bad_labels)
    labels = os.path.join(bad_labels, "t10k-labels-idx1-ubyte.gz")
    with gzip.open(labels) as f:
        raw = bytearray(f.read())
    raw[8] = 11  # a label outside 0-9
    with gzip.open(labels, "wb") as f:
        f.write(bytes(raw))
    a_file = os.path.join(tmp, "a_file")
    open(a_file, "w").close()
    d = ["--data", data]
    return [
        ("flag: --epochs 0", d + ["--epochs", "0"]),
        ("flag: --learning-rate nan", d + ["--learning-rate", "nan"]),
        ("flag: --batch-size 55001 (needs the data)", d + ["--batch-size", "55001"]),
        ("data: a missing folder", ["--data", os.path.join(tmp, "missing")]),
        ("data: truncated training images", ["--data", truncated]),
        ("data: a label outside 0-9", ["--data", bad_labels]),
        ("folder: --logdir under a file", d + ["--logdir", os.path.join(a_file, "logs")]),
        ("folder: --resume of a non-run", d + ["--resume", tmp]),
    ]


def timed(argv, expect_rc):
    t = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    seconds = time.perf_counter() - t
    if p.returncode != expect_rc:
        sys.exit(f"error_latency: {' '.join(argv)} exited {p.returncode}, expected {expect_rc}:\n{p.stderr}")
    return seconds


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("BNMNIST_DATA"), help="MNIST IDX folder (default: $BNMNIST_DATA)")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    if not args.data or not os.path.isdir(args.data):
        sys.exit("error_latency: pass the MNIST IDX folder with --data (or set BNMNIST_DATA)")
    with tempfile.TemporaryDirectory() as tmp:
        todo = cases(os.path.abspath(args.data), tmp)
        baseline, times = [], {name: [] for name, _ in todo}
        for r in range(args.repeats):
            baseline.append(timed([sys.executable, "-c", "import tensorflow"], 0))
            for name, argv in todo:
                times[name].append(timed([sys.executable, TRAIN, "--logdir", os.path.join(tmp, "logs"), *argv], 2))
            print(f"round {r + 1}: import tensorflow {baseline[-1]:.2f} s", flush=True)
    base = statistics.median(baseline)
    print(f"\n{args.repeats} rounds; whole-process seconds, python {sys.version.split()[0]}")
    print("| case | median s | min-max | ratio to importing TensorFlow |")
    print("| --- | --- | --- | --- |")
    print(f'| baseline: python -c "import tensorflow" | {base:.2f} | {min(baseline):.2f}-{max(baseline):.2f} | 1.00 |')
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.2f} | {min(ts):.2f}-{max(ts):.2f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
