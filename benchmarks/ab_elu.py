"""The default XLA step against the same step with XLA's own lowering of ``tf.nn.elu``, in one process.

    python benchmarks/ab_elu.py --data ../shared/data/mnist [--epochs 4]

Whole processes differ by up to a third in speed on this machine, so the two loops are built side
by side in one process, each on its own graph and Session, and run in alternating chunks of 25
steps over the same epochs (the same seed-42 batches). Prints each one's median seconds per step
and the median of the chunk-by-chunk ratio; the default computes ELU as TensorFlow's CPU kernel
does (``exp(z) - 1``), the other as XLA lowers ``tf.nn.elu`` (``expm1``).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CHUNK = 25


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("BNMNIST_DATA"))
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    import time

    import numpy as np
    from bnmnist import data, xla_loop
    from bnmnist.config import Config
    from bnmnist.trainer import batch_indices
    from profile_xla import xla_loop as build

    split = data.split(data.load(args.data))
    config = Config()
    loops = {"default (exp - 1)": build(split, config)[0]}
    default = xla_loop.XLA_ACTIVATIONS
    xla_loop.XLA_ACTIVATIONS = xla_loop.ACTIVATIONS        # tf.nn.elu, lowered by XLA
    try:
        loops["tf.nn.elu (expm1)"] = build(split, config)[0]
    finally:
        xla_loop.XLA_ACTIVATIONS = default
    names = list(loops)
    rngs = {name: np.random.RandomState(config.seed) for name in names}
    seconds = {name: [] for name in names}
    n_train = len(split.X_train)
    for _ in range(args.epochs):
        for name in names:
            loops[name].start_epoch(batch_indices(n_train, config.batch_size, rngs[name]))
        n = n_train // config.batch_size
        for k, start in enumerate(range(0, n, CHUNK)):
            stop = min(n, start + CHUNK)
            for name in (names if k % 2 == 0 else names[::-1]):      # alternate who goes first
                t = time.perf_counter()
                loops[name].run(start, stop)
                seconds[name].append((time.perf_counter() - t) / (stop - start))
    base = np.array(seconds[names[1]])
    for name in names:
        s = np.array(seconds[name])
        print(f"{name:20s} {np.median(s) * 1e3:.2f} ms per step (median of {len(s)} chunks), "
              f"{np.median(s / base):.3f} of tf.nn.elu's, chunk by chunk")


if __name__ == "__main__":
    main()
