"""Runs cells of chapter 11's notebook, as published, in this process (tests only, never the package).

    python book_code.py NOTEBOOK CELLS --data MNIST --seeds tf1|tf2 [--epochs N] [--dump NPZ]

CELLS are the notebook's cell indices, comma-separated. The cells run unchanged but for three
substitutions: the MNIST download becomes bnmnist's loader on --data, ``n_epochs = ...`` becomes
--epochs, and ``init.run()`` also saves every variable to --dump. With ``--seeds tf1`` the graphs
are built under ``bnmnist.tf1_seeds``; with ``tf2``, TensorFlow 2.x's own op seeds.
"""

import argparse
import os
import re
import sys
from functools import partial

from bnmnist.atomic import read_json

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import bnmnist  # noqa: E402

p = argparse.ArgumentParser()
p.add_argument("notebook")
p.add_argument("cells")
p.add_argument("--data", required=True)
p.add_argument("--seeds", choices=("tf1", "tf2"), required=True)
p.add_argument("--epochs", type=int)
p.add_argument("--dump")
args = p.parse_args()

if args.seeds == "tf1":
    bnmnist.tf1_seeds.enable()
else:
    os.environ["TF_USE_LEGACY_KERAS"] = "1"  # the same tf.layers, TF 2.x's seeds
import numpy as np  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

tf.disable_v2_behavior()


def reset_graph(seed=42):  # the notebook's setup cell
    tf.reset_default_graph()
    tf.set_random_seed(seed)
    np.random.seed(seed)


def load_mnist():
    m = bnmnist.data.load(args.data, download=False)
    return (m.x_train, m.y_train), (m.x_test, m.y_test)


def dump():
    sess = tf.get_default_session()
    np.savez(args.dump, **{v.op.name: sess.run(v) for v in tf.global_variables()})


def leaky_relu(z, name=None):
    return tf.maximum(0.01 * z, z, name=name)


namespace = dict(
    tf=tf,
    np=np,
    partial=partial,
    reset_graph=reset_graph,
    leaky_relu=leaky_relu,
    load_mnist=load_mnist,
    dump=dump,
    learning_rate=0.01,
    n_inputs=28 * 28,
    n_hidden1=300,
    n_hidden2=100,
    n_outputs=10,
)
cells = read_json(args.notebook)["cells"]
for index in map(int, args.cells.split(",")):
    source = "".join(cells[index]["source"])
    source = source.replace("import tensorflow as tf", "pass")
    source = source.replace("tf.keras.datasets.mnist.load_data()", "load_mnist()")
    if args.epochs is not None:
        source = re.sub(r"n_epochs = \d+", f"n_epochs = {args.epochs}", source)
    if args.dump:
        source = source.replace("init.run()", "init.run(); dump()")
    exec(compile(source, f"<cell {index}>", "exec"), namespace)
