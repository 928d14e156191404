"""A run's checkpoints: their names, the ``checkpoint`` state file, the crash-safe order they are
written in, rotation, and reading one back safely. TensorFlow is imported only to read tensors.

Invariant: the state file names complete checkpoints only. A checkpoint's files are all written
(TensorFlow writes to a temporary name and renames; the ``.meta`` is a link of the run's
``graph.meta``) before the state file, replaced atomically, names it; old checkpoints are deleted
only after it has stopped naming them (:func:`commit_checkpoint`). A checkpoint of another
architecture, or a missing or truncated one, is a :class:`CheckpointError` naming what is wrong.
"""

from __future__ import annotations

import json
import os
import re

import numpy as np

from .atomic import link_or_copy, write_bytes_atomic
from .errors import CheckpointError

STATE_FILE = "checkpoint"
GRAPH_META = "graph.meta"
CKPT_BASENAME = "model.ckpt"


def newest_prefix(run_dir):
    """The newest checkpoint prefix the run's state file names."""
    prefixes = read_state(run_dir)
    if not prefixes:
        raise CheckpointError(
            f"{run_dir} holds no checkpoint (no '{STATE_FILE}' file naming "
            "one); train at least one epoch, or pass a checkpoint prefix"
        )
    return prefixes[-1]


def checkpoint_epoch(prefix):
    """The epoch of ``.../model.ckpt-<epoch>`` (saved after that epoch), or None for another name."""
    m = re.match(rf"^{re.escape(CKPT_BASENAME)}-(\d+)$", os.path.basename(prefix))
    return int(m.group(1)) if m else None


def saved_checkpoints(run_dir):
    """Every checkpoint prefix with an index file in the folder, oldest epoch first, whatever the
    state file says (for telling the user what is there when it is damaged)."""
    try:
        names = os.listdir(run_dir)
    except OSError:
        return []
    prefixes = [os.path.join(run_dir, n[: -len(".index")]) for n in names if n.endswith(".index")]
    return sorted((p for p in prefixes if checkpoint_epoch(p) is not None), key=checkpoint_epoch)


def epochs_done(run_dir, start=None):
    """How many epochs the checkpoint a resume starts from holds: ``start``, else the newest the
    state file names (``model.ckpt-<epoch>`` is saved after ``epoch``); 0 when there is none."""
    prefixes = [start] if start else read_state(run_dir)
    if not prefixes:
        return 0
    epoch = checkpoint_epoch(prefixes[-1])
    if epoch is None:
        raise CheckpointError(
            f"{run_dir}: its '{STATE_FILE}' file names {prefixes[-1]}, not a "
            f"{CKPT_BASENAME}-<epoch> checkpoint of bnmnist"
        )
    return epoch + 1


def require_checkpoint(prefix):
    """Refuses a prefix without an index file, naming the checkpoints its folder does keep (a run
    keeps only its newest few, so an older epoch's is gone)."""
    if os.path.exists(prefix + ".index"):
        return
    names = [os.path.basename(p) for p in saved_checkpoints(os.path.dirname(prefix) or ".")]
    kept = f"; the folder keeps {', '.join(names)}" if names else ""
    raise CheckpointError(
        f"{prefix}: no such checkpoint ({prefix}.index is missing{kept}); "
        "pass a run folder or an existing model.ckpt-N prefix"
    )


def strip_checkpoint_suffix(path):
    """A checkpoint's ``.index``, ``.meta`` or ``.data-*`` file name -> its prefix."""
    return re.sub(r"\.(index|meta|data-\d+-of-\d+)$", "", str(path))


def checkpoint_prefix(run_dir, epoch):
    return os.path.join(run_dir, f"{CKPT_BASENAME}-{epoch}")


def read_state(run_dir):
    """Checkpoint prefixes the state file names, oldest first (absolute paths); [] if none."""
    path = os.path.join(run_dir, STATE_FILE)
    if not os.path.isfile(path):
        return []
    names, newest = [], None
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = re.match(r'^all_model_checkpoint_paths:\s*"(.*)"\s*$', line.strip())
            if m:
                names.append(m.group(1))
            m = re.match(r'^model_checkpoint_path:\s*"(.*)"\s*$', line.strip())
            if m:
                newest = m.group(1)
    if newest is not None and (not names or names[-1] != newest):
        names.append(newest)
    return [p if os.path.isabs(p) else os.path.join(run_dir, p) for p in names]


def write_state(run_dir, prefixes):
    """Atomically replace the state file, in TensorFlow's text format with relative paths."""
    rel = [os.path.basename(p) for p in prefixes]
    text = f'model_checkpoint_path: "{rel[-1]}"\n' + "".join(f'all_model_checkpoint_paths: "{r}"\n' for r in rel)
    write_bytes_atomic(os.path.join(run_dir, STATE_FILE), text.encode("utf-8"))


def checkpoint_files(prefix):
    folder, base = os.path.split(prefix)
    return [
        os.path.join(folder, f)
        for f in os.listdir(folder)
        if f == base + ".index" or f == base + ".meta" or f.startswith(base + ".data-")
    ]


def link_meta(run_dir, prefix):
    """Give a checkpoint its ``.meta`` (the book's ``import_meta_graph`` recipe needs one)."""
    src, dst = os.path.join(run_dir, GRAPH_META), prefix + ".meta"
    tmp = dst + ".tmp"
    if os.path.lexists(tmp):
        os.remove(tmp)
    link_or_copy(src, tmp)
    os.replace(tmp, dst)


def commit_checkpoint(run_dir, prefix, keep):
    """Name ``prefix`` newest in the state file, then delete checkpoints beyond ``keep``."""
    kept = [p for p in read_state(run_dir) if p != prefix] + [prefix]
    dropped, kept = kept[:-keep], kept[-keep:]
    write_state(run_dir, kept)
    for old in dropped:
        for f in checkpoint_files(old):
            os.remove(f)


def stored_shapes(prefix):
    import tensorflow as tf

    require_checkpoint(prefix)
    try:
        return dict(tf.train.list_variables(prefix))
    except (tf.errors.OpError, ValueError) as e:
        raise CheckpointError(
            f"{prefix}: unreadable checkpoint ({first_line(e)}); it may be truncated or corrupt: {_older(prefix)}"
        ) from None


def _older(prefix):
    """What to do about a broken checkpoint: name the run's newest older one, if there is one."""
    epoch = checkpoint_epoch(prefix)
    if epoch is None:
        return "use an older one from the same run"
    older = [p for p in saved_checkpoints(os.path.dirname(prefix) or ".") if checkpoint_epoch(p) < epoch]
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
    import tensorflow as tf

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
    import tensorflow as tf

    prefixes = read_state(run_dir)
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
    if checkpoint_epoch(prefix) != state["epoch"] - 1:
        problems.append(f"its run state says epoch {state['epoch'] - 1}")
    if not os.path.exists(prefix + ".meta"):
        problems.append("no .meta file")
    if problems:
        raise CheckpointError(f"{prefix}: {'; '.join(problems)}")
    return state["epoch"]
