"""The same network in JAX: the forward pass and batch norm written out, ``jax.grad`` for the
gradients, and each epoch one compiled call, a ``lax.scan`` of the SGD step over the epoch's
batches. The compile is done ahead of the loop and reported as ``compile_s``. Its weights come
from NumPy's generator, so its table is its own.

Requirements (an environment of its own): jax jaxlib numpy
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

X_train, y_train, X_valid, y_valid = common.mnist()
np.random.seed(42)  # the shuffling
weights = np.random.default_rng(42)
layers = [
    {"W": jnp.asarray(common.he_kernel(weights, n_in, n_out)), "b": jnp.zeros(n_out),
     "gamma": jnp.ones(n_out), "beta": jnp.zeros(n_out)}
    for n_in, n_out in zip(common.SIZES[:-1], common.SIZES[1:])
]  # fmt: skip
moving = [{"mean": jnp.zeros(len(p["b"])), "var": jnp.ones(len(p["b"]))} for p in layers]
M, EPS = common.BN_MOMENTUM, common.BN_EPSILON


def forward(layers, moving, x, training):
    """The logits, and in training the moving statistics after this batch (TF's rule: the biased
    batch variance, moving = moving * 0.9 + batch * 0.1)."""
    updated = []
    for i, (p, m) in enumerate(zip(layers, moving)):
        z = x @ p["W"] + p["b"]
        if training:
            mean, var = z.mean(0), jnp.square(z - z.mean(0)).mean(0)
            updated.append({"mean": m["mean"] * M + mean * (1 - M), "var": m["var"] * M + var * (1 - M)})
        else:
            mean, var = m["mean"], m["var"]
        z = (z - mean) * jax.lax.rsqrt(var + EPS) * p["gamma"] + p["beta"]
        x = z if i == len(layers) - 1 else jax.nn.elu(z)
    return x, updated


def loss(layers, moving, x, y):
    logits, updated = forward(layers, moving, x, True)
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1).mean(), updated


def epoch(layers, moving, X, Y, batches):
    def step(carry, idx):
        layers, moving = carry
        grads, moving = jax.grad(loss, has_aux=True)(layers, moving, X[idx], Y[idx])
        return (jax.tree_util.tree_map(lambda p, g: p - common.LEARNING_RATE * g, layers, grads), moving), None

    return jax.lax.scan(step, (layers, moving), batches)[0]


def accuracy(layers, moving, X, Y):
    return (forward(layers, moving, X, False)[0].argmax(1) == Y).mean()


X, Y, Xv, Yv = (jnp.asarray(a) for a in (X_train, y_train, X_valid, y_valid))
n_batches = len(X_train) // common.BATCH
t = time.perf_counter()
train_epoch = (
    jax.jit(epoch, donate_argnums=(0, 1))
    .lower(layers, moving, X, Y, np.zeros((n_batches, common.BATCH), np.int64))
    .compile()
)
validate = jax.jit(accuracy).lower(layers, moving, Xv, Yv).compile()
compile_s = time.perf_counter() - t

accs = []
t0 = time.perf_counter()
for e in range(common.EPOCHS):
    layers, moving = train_epoch(layers, moving, X, Y, np.stack(common.epoch_batches(len(X_train))))
    accs.append(np.float32(validate(layers, moving, Xv, Yv)))
    common.log(e, "Validation accuracy:", accs[-1])
common.report("jax_scan", time.perf_counter() - t0, accs, compile_s=compile_s, jax=jax.__version__)
