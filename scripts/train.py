"""Train the book's batch-norm MNIST network: ``python scripts/train.py --help``."""

from bnmnist.cli import run

if __name__ == "__main__":
    run()
