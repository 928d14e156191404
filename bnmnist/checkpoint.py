"""Reading checkpoints safely: check a checkpoint fits the graph before restoring it.

A checkpoint of another architecture, a missing or truncated one, or a folder without one gets a
:class:`CheckpointError` naming what is wrong (for a mismatch, the variable and both shapes),
never a TensorFlow stack dump. Only variables are read; no graph is ever imported from a file.
"""
from __future__ import annotations

import tensorflow as tf

from . import runs
from .errors import CheckpointError

tf1 = tf.compat.v1


def stored_shapes(prefix):
    runs.require_checkpoint(prefix)
    try:
        return dict(tf.train.list_variables(prefix))
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(f"{prefix}: unreadable checkpoint ({first_line(e)}); it may be "
                              "truncated or corrupt: use an older one from the same run") from None


def check_compatible(prefix, variables):
    shapes = stored_shapes(prefix)
    for v in variables:
        name, want = v.op.name, v.shape.as_list()
        if name not in shapes:
            raise CheckpointError(f"{prefix}: has no variable {name}; it was saved from another "
                                  "architecture (check the run's config.json)")
        if list(shapes[name]) != want:
            raise CheckpointError(f"{prefix}: variable {name} has shape {list(shapes[name])} in the "
                                  f"checkpoint but {want} in this network; it was saved from another "
                                  "architecture (check the run's config.json)")


def restore(sess, saver, prefix, variables):
    """``saver.restore`` after :func:`check_compatible`, with data errors as CheckpointError."""
    check_compatible(prefix, variables)
    try:
        saver.restore(sess, prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(f"{prefix}: could not restore ({first_line(e)}); the checkpoint may "
                              "be truncated or corrupt: use an older one from the same run") from None


def first_line(e):
    """The first line of an exception's message (TensorFlow's run to pages), for one-line errors."""
    text = getattr(e, "message", None) or getattr(e, "strerror", None) or str(e)
    return text.strip().splitlines()[0][:300] if text.strip() else type(e).__name__
