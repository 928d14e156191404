"""The same network in PyTorch, eager, on the CPU: ``nn.Sequential`` of Linear, BatchNorm1d and
ELU, ``optim.SGD``, each batch gathered with ``index_select``. Its weights come from NumPy's
generator, so its table is its own.

Requirements (an environment of its own): torch==2.13.0 numpy
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

X_train, y_train, X_valid, y_valid = common.mnist()
np.random.seed(42)  # the shuffling
torch.manual_seed(42)
weights = np.random.default_rng(42)


def dense(n_in, n_out):
    layer = nn.Linear(n_in, n_out)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(common.he_kernel(weights, n_in, n_out).T))
        layer.bias.zero_()
    return layer


def batch_norm(n):  # PyTorch's momentum is the new batch's weight: TF's 0.9 is its 0.1
    return nn.BatchNorm1d(n, momentum=1 - common.BN_MOMENTUM, eps=common.BN_EPSILON)


model = nn.Sequential(
    dense(784, 300), batch_norm(300), nn.ELU(), dense(300, 100), batch_norm(100), nn.ELU(),
    dense(100, 10), batch_norm(10),
)  # fmt: skip
optimizer = torch.optim.SGD(model.parameters(), lr=common.LEARNING_RATE)
X, Y = torch.from_numpy(X_train), torch.from_numpy(y_train.astype(np.int64))
Xv, Yv = torch.from_numpy(X_valid), torch.from_numpy(y_valid.astype(np.int64))

accs = []
t0 = time.perf_counter()
for epoch in range(common.EPOCHS):
    for idx in common.epoch_batches(len(X_train)):
        idx = torch.from_numpy(idx)
        loss = F.cross_entropy(model(X.index_select(0, idx)), Y.index_select(0, idx))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        accs.append((model(Xv).argmax(1) == Yv).float().mean().item())
    model.train()
    common.log(epoch, "Validation accuracy:", np.float32(accs[-1]))
common.report("torch_eager", time.perf_counter() - t0, accs, torch=torch.__version__, threads=torch.get_num_threads())
