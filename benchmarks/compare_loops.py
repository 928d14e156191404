"""How far the default XLA loop's variables are from the per-step loop's after a few epochs.

    python benchmarks/compare_loops.py --data ../shared/data/mnist [--epochs 2]

Trains ``--epochs`` epochs with ``--loop xla`` and with the book's ``--loop feed_dict`` in temporary
run folders, prints both tables and, per variable of the final checkpoint, the largest absolute
difference; tests/test_training.py allows XLA_TOLERANCE.
"""

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.environ.get("BNMNIST_DATA"))
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()
    import numpy as np
    import tensorflow as tf

    from bnmnist import data, runs
    from bnmnist.config import Config
    from bnmnist.trainer import train

    split = data.split(data.load(args.data))
    logdir = tempfile.mkdtemp(prefix="bnmnist-loops-")
    tables, variables = {}, {}
    for loop in ("xla", "feed_dict"):
        result = train(Config().replace(epochs=args.epochs, loop=loop), split, runs.new_run_dir(logdir), out=None)
        tables[loop] = [str(a) for a in result.accuracies]
        reader = tf.train.load_checkpoint(result.checkpoint)
        variables[loop] = {
            name: reader.get_tensor(name)
            for name, _ in tf.train.list_variables(result.checkpoint)
            if name != "run_state"
        }
        print(f"{loop:>5}: {' '.join(tables[loop])}")
    print(f"tables equal: {tables['xla'] == tables['feed_dict']}")
    diffs = {
        name: float(np.max(np.abs(variables["xla"][name] - variables["feed_dict"][name])))
        for name in sorted(variables["xla"])
    }
    for name, d in diffs.items():
        print(f"{name:<40} max |xla - feed_dict| {d:.3g}")
    worst = max(diffs, key=diffs.get)
    print(f"largest: {diffs[worst]:.3g} ({worst})")


if __name__ == "__main__":
    main()
