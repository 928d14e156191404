"""Train the book's batch-norm MNIST network: ``python scripts/train.py --help``."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from bnmnist.cli import run  # noqa: E402

if __name__ == "__main__":
    run()
