"""bnmnist: the batch-norm MNIST network of Hands-On ML (1st ed., ch. 11) as TF1 code on TF 2.x.
Importing it does not import TensorFlow; ``restore``, ``build_graph`` and ``train`` do.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from . import data
from .config import PRESETS, Config
from .seeds import tf1_seeds

if TYPE_CHECKING:
    from .graph import build_graph
    from .restored import restore
    from .trainer import train

__version__ = "0.1.0"
__all__ = [
    "Config",
    "PRESETS",
    "build_graph",
    "checkpoint_path",
    "data",
    "restore",
    "tf1_seeds",
    "train",
    "__version__",
]


def checkpoint_path(run: str = "latest", logdir: str = "tf_logs") -> str:
    """The checkpoint prefix (``.../model.ckpt-N``) of a run folder, a checkpoint or ``"latest"``:
    what the book's ``import_meta_graph`` recipe and ``saver.restore`` take."""
    from .runs import resolve

    return resolve(run, logdir)[1]


_NEED_TENSORFLOW = {"build_graph": "graph", "restore": "restored", "train": "trainer"}


def __getattr__(name):  # the parts that need TensorFlow, imported on first use
    if name not in _NEED_TENSORFLOW:
        raise AttributeError(f"module 'bnmnist' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_NEED_TENSORFLOW[name]}", __name__), name)
