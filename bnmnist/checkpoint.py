"""Reading checkpoints safely: check a checkpoint fits the graph before restoring it.

A checkpoint of another architecture, a missing or truncated one, or a folder without one gets a
:class:`CheckpointError` naming what is wrong (for a mismatch, the variable and both shapes),
never a TensorFlow stack dump. Only variables are read; no graph is ever imported from a file.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow as tf

from . import checkpoint_files
from .errors import CheckpointError

tf1 = tf.compat.v1


def stored_shapes(prefix):
    checkpoint_files.require_checkpoint(prefix)
    try:
        return dict(tf.train.list_variables(prefix))
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(
            f"{prefix}: unreadable checkpoint ({first_line(e)}); it may be truncated or corrupt: {_older(prefix)}"
        ) from None


def _older(prefix):
    """What to do about a broken checkpoint: name the run's newest older one, if there is one."""
    epoch = checkpoint_files.checkpoint_epoch(prefix)
    if epoch is None:
        return "use an older one from the same run"
    older = [
        p
        for p in checkpoint_files.saved_checkpoints(os.path.dirname(prefix) or ".")
        if checkpoint_files.checkpoint_epoch(p) < epoch
    ]
    if not older:
        return "no older checkpoint of this run is left; start a new run"
    return (
        f"use an older one, {older[-1]} (pass it to --resume or bnmnist.restore; a resume "
        "from it trains the later epochs again, to the same result)"
    )


def check_compatible(prefix, variables):
    shapes = stored_shapes(prefix)
    for v in variables:
        name, want = v.op.name, v.shape.as_list()
        if name not in shapes:
            raise CheckpointError(
                f"{prefix}: has no variable {name}; it was saved from another "
                "architecture (check the run's config.json)"
            )
        if list(shapes[name]) != want:
            raise CheckpointError(
                f"{prefix}: variable {name} has shape {list(shapes[name])} in the "
                f"checkpoint but {want} in this network; it was saved from another "
                "architecture (check the run's config.json)"
            )


def restore(sess, saver, prefix, variables):
    """``saver.restore`` after :func:`check_compatible`, with data errors as CheckpointError."""
    check_compatible(prefix, variables)
    try:
        saver.restore(sess, prefix)
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(
            f"{prefix}: could not restore ({first_line(e)}); the checkpoint may "
            f"be truncated or corrupt: {_older(prefix)}"
        ) from None


_TF_NOISE = ("Graph execution error", "Detected at node", "Node:")


def first_line(e):
    """The line of an exception's message that says what went wrong, for one-line errors.
    TensorFlow's run to pages: "Graph execution error:", where the node was defined (indented),
    then the cause ("Read less bytes than requested"); the cause is the line wanted."""
    text = getattr(e, "message", None) or getattr(e, "strerror", None) or str(e)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    causes = [
        line.strip()
        for line in text.splitlines()
        if line.strip() and not line[0].isspace() and not line.startswith(_TF_NOISE)
    ]
    return (causes or lines or [type(e).__name__])[0][:300]


def verify_newest(run_dir, n_variables=None):
    """Epochs saved in the newest checkpoint the run's state file names (None when it names
    none), after reading every tensor in it. Raises :class:`CheckpointError` if that checkpoint
    is incomplete, unreadable, not finite, or not the epoch its run state says: what a crash must
    never leave behind."""
    prefixes = checkpoint_files.read_state(run_dir)
    if not prefixes:
        return None
    prefix = prefixes[-1]
    try:
        reader = tf.train.load_checkpoint(prefix)
        values = {n: reader.get_tensor(n) for n, _ in tf.train.list_variables(prefix)}
        state = json.loads(values.pop("run_state"))
    except (tf.errors.OpError, ValueError, KeyError) as e:
        raise CheckpointError(f"{prefix}: unreadable checkpoint ({first_line(e)})") from None
    problems = [n for n, v in values.items() if not np.all(np.isfinite(v))]
    if n_variables is not None and len(values) != n_variables:
        problems.append(f"{len(values)} variables, expected {n_variables}")
    if checkpoint_files.checkpoint_epoch(prefix) != state["epoch"] - 1:
        problems.append(f"its run state says epoch {state['epoch'] - 1}")
    if not os.path.exists(prefix + ".meta"):
        problems.append("no .meta file")
    if problems:
        raise CheckpointError(f"{prefix}: {'; '.join(problems)}")
    return state["epoch"]
