"""``python -m bnmnist``: the same program as ``bnmnist-train`` and ``python scripts/train.py``."""

from .cli import run

run()
