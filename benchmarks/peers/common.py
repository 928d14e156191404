"""What every peer shares, NumPy only so that each peer's own environment can import it.

The workload is the book's batch-norm cell: 784-300-100-10, batch norm (momentum 0.9, epsilon
0.001) before ELU on every layer, logits included; plain SGD at 0.01; 20 epochs of 275 batches of
200, shuffled with ``np.random.permutation`` and cut with ``np.array_split`` as the book's
``shuffle_batch``; validation on the first 5,000 training images after each epoch. Each peer
prints one line ``RESULT {json}`` with ``train_s`` (the epoch loop, validation included, no
imports, data loading or ahead-of-time compile) and ``accs`` (the validation accuracy per epoch,
as float32 prints it).
"""

import gzip
import json
import os
import sys

import numpy as np

MNIST_DIR = os.environ.get("MNIST_DIR", "")
EPOCHS = int(os.environ.get("N_EPOCHS", "20"))
SIZES = (784, 300, 100, 10)
BATCH, LEARNING_RATE, BN_MOMENTUM, BN_EPSILON = 200, 0.01, 0.9, 1e-3
N_VALID = 5000


def read_idx(name):
    """One of MNIST's IDX files, as a uint8 array of its stated shape."""
    with gzip.open(os.path.join(MNIST_DIR, name + ".gz")) as f:
        raw = f.read()
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def mnist():
    """X_train, y_train, X_valid, y_valid as the book splits and scales them."""
    if not os.path.isdir(MNIST_DIR):
        sys.exit(f"set MNIST_DIR to a folder of MNIST's four IDX .gz files (got {MNIST_DIR!r})")
    X = read_idx("train-images-idx3-ubyte").reshape(-1, 784).astype(np.float32) / 255.0
    y = read_idx("train-labels-idx1-ubyte").astype(np.int32)
    return X[N_VALID:], y[N_VALID:], X[:N_VALID], y[:N_VALID]


def epoch_batches(n):
    """The book's shuffle_batch, as index arrays: np.random's permutation, split in n // BATCH."""
    return np.array_split(np.random.permutation(n), n // BATCH)


def he_kernel(rng, fan_in, fan_out):
    """A kernel of tf.variance_scaling_initializer()'s law: a normal of standard deviation
    sqrt(1 / fan_in) / 0.8796..., truncated at two of them by redrawing what falls outside."""
    std = np.sqrt(1.0 / fan_in) / 0.87962566103423978
    w = rng.normal(0.0, std, size=(fan_in, fan_out))
    outside = np.abs(w) > 2 * std
    while outside.any():
        w[outside] = rng.normal(0.0, std, size=outside.sum())
        outside = np.abs(w) > 2 * std
    return w.astype(np.float32)


def report(name, train_s, accs, **extra):
    """The one line bench.py reads; the accuracies as the book's table prints them. Over 5,000
    images an accuracy has at most four decimals: rounding to them undoes a framework's
    mean that multiplies by 1/5000 instead of dividing."""
    accs = [str(np.float32(round(float(a), 4))) for a in accs]
    print("RESULT " + json.dumps({"peer": name, "train_s": train_s, "accs": accs, **extra}), flush=True)


def log(*values):
    print(*values, file=sys.stderr, flush=True)
