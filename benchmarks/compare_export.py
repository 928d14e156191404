"""How far an exported SavedModel's outputs are from the Session's, on the 10,000 test images.

    python benchmarks/compare_export.py tf_logs/run-20261127174003 --data ../shared/data/mnist

Exports RUN with ``scripts/export.py`` into a temporary folder, runs its ``serving_default``
signature in a fresh eager process (no compat.v1 code), and prints the largest absolute
difference of the probabilities and how many predicted classes differ from
``bnmnist.restore(RUN)``; tests/test_restore.py requires at most 1e-6 and no class changed.
"""

import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SERVE = """
import sys, numpy as np, tensorflow as tf
out = tf.saved_model.load(sys.argv[1]).signatures["serving_default"](images=tf.constant(np.load(sys.argv[2])))
np.save(sys.argv[3], out["probabilities"].numpy()); np.save(sys.argv[4], out["classes"].numpy())
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a run folder or checkpoint prefix")
    ap.add_argument("--data", default=os.environ.get("BNMNIST_DATA"))
    args = ap.parse_args()
    import numpy as np

    import bnmnist
    from bnmnist import data

    mnist = data.load(args.data)
    tmp = tempfile.mkdtemp(prefix="bnmnist-export-")
    files = [os.path.join(tmp, f) for f in ("saved_model", "x.npy", "p.npy", "c.npy")]
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "export.py"), args.run, files[0]], check=True)
    np.save(files[1], mnist.x_test)
    subprocess.run([sys.executable, "-c", SERVE, *files], check=True)
    with bnmnist.restore(args.run) as model:
        proba, classes = model.predict_proba(mnist.x_test), model.predict(mnist.x_test)
    exported_p, exported_c = np.load(files[2]), np.load(files[3])
    print(
        f"largest |SavedModel - Session| probability on {len(proba):,} test images: "
        f"{np.max(np.abs(exported_p - proba)):.3g}"
    )
    print(f"predicted classes that differ: {int(np.sum(exported_c != classes))}")


if __name__ == "__main__":
    main()
