"""bnmnist: the batch-norm MNIST network of Hands-On ML (1st ed., ch. 11) as TF1 code on TF 2.x.

Importing the package does not import TensorFlow; ``bnmnist.restore`` does, when first used.
"""
__version__ = "0.1.0"


def restore(path="latest", logdir="tf_logs"):
    """Open a trained run in its own graph and session; see :mod:`bnmnist.restored`."""
    from .restored import restore as _restore
    return _restore(path, logdir)
