"""bnmnist: the batch-norm MNIST network of Hands-On ML (1st ed., ch. 11) as TF1 code on TF 2.x.

Importing the package does not import TensorFlow; ``restore``, ``build_graph`` and ``train`` do,
when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from . import data
from .config import PRESETS, Config
from .seeds import tf1_seeds

if TYPE_CHECKING:
    from .restored import RestoredModel

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


def restore(path: str = "latest", logdir: str = "tf_logs") -> RestoredModel:
    """Open a trained run in its own graph and session; see :mod:`bnmnist.restored`."""
    from .restored import restore as _restore

    return _restore(path, logdir)


def checkpoint_path(run: str = "latest", logdir: str = "tf_logs") -> str:
    """The checkpoint prefix (``.../model.ckpt-N``) of a run folder, a checkpoint or ``"latest"``:
    what the book's ``import_meta_graph`` recipe and ``saver.restore`` take."""
    from .runs import resolve

    return resolve(run, logdir)[1]


def __getattr__(name):  # the parts that need TensorFlow, imported on first use
    if name == "build_graph":
        from .graph import build_graph

        return build_graph
    if name == "train":
        from .trainer import train

        return train
    raise AttributeError(f"module 'bnmnist' has no attribute {name!r}")
