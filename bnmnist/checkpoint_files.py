"""A run's checkpoints on disk (no TensorFlow import here): their names, the ``checkpoint`` state
file, the crash-safe order they are written in, and rotation.

A checkpoint's files are all written (TensorFlow writes the data to a temporary name and renames
it; the ``.meta`` is a hard link of the run's ``graph.meta``) *before* the state file, itself
replaced atomically, names it; old checkpoints are deleted only after the state file has stopped
naming them. So whenever the process is killed, the state file names complete checkpoints only.
"""

from __future__ import annotations

import os
import re
import shutil

from .atomic import write_bytes_atomic
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
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def commit_checkpoint(run_dir, prefix, keep):
    """Name ``prefix`` newest in the state file, then delete checkpoints beyond ``keep``."""
    kept = [p for p in read_state(run_dir) if p != prefix] + [prefix]
    dropped, kept = kept[:-keep], kept[-keep:]
    write_state(run_dir, kept)
    for old in dropped:
        for f in checkpoint_files(old):
            os.remove(f)
