"""The default XLA step against itself without each of its two step-level speed-ups, in one process.

    python benchmarks/ab_step.py --data ../shared/data/mnist [--epochs 4]

Whole processes differ by up to a third in speed on this machine, so the loops are built side by
side in one process, each on its own graph and Session, and run in turns, 25 steps at a time,
over the same epochs (the same seed-42 batches). The variants: the default; ELU through XLA's own
lowering of ``tf.nn.elu`` (``expm1``) instead of TensorFlow's kernel formula (``exp(z) - 1``);
all 784 inputs instead of leaving out the pixels that are 0 in every training image. Prints each
one's median seconds per step and the median, chunk by chunk, of its time over the default's.
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CHUNK = 25


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("BNMNIST_DATA"))
    ap.add_argument("--epochs", type=int, default=4)
    args = ap.parse_args()
    import time

    import numpy as np
    from profile_xla import xla_loop as build_loop

    from bnmnist import data
    from bnmnist.config import Config
    from bnmnist.trainer import batch_indices

    split = data.split(data.load(args.data))
    config = Config()

    def build(**options):
        return build_loop(split, config, **options)[0]

    loops = {
        "default": build(),
        "all 784 inputs": build(drop_unused_inputs=False),
        "tf.nn.elu (expm1)": build(elu_as_cpu_kernel=False),
    }  # as XLA lowers it
    names = list(loops)
    rngs = {name: np.random.RandomState(config.seed) for name in names}
    seconds = {name: [] for name in names}
    n_train = split.n_train
    n = n_train // config.batch_size
    for _ in range(args.epochs):
        for name in names:
            loops[name].start_epoch(batch_indices(n_train, config.batch_size, rngs[name]))
        for k, start in enumerate(range(0, n, CHUNK)):
            stop = min(n, start + CHUNK)
            for name in names[k % len(names) :] + names[: k % len(names)]:  # who goes first rotates
                t = time.perf_counter()
                loops[name].run(start, stop)
                seconds[name].append((time.perf_counter() - t) / (stop - start))
    base = np.array(seconds["default"])
    for name in names:
        s = np.array(seconds[name])
        print(
            f"{name:20s} {np.median(s) * 1e3:.2f} ms per step (median of {len(s)} chunks), "
            f"{np.median(s / base):.3f} of the default's, chunk by chunk"
        )


if __name__ == "__main__":
    main()
