"""Run folders and crash-safe checkpoints (no TensorFlow import here).

A run lives in ``<logdir>/run-<UTC %Y%m%d%H%M%S>[-N]/`` holding ``config.json``, ``data.json``,
``graph.meta``, the checkpoints ``model.ckpt-<epoch>.{index,data-*,meta}``, the ``checkpoint``
state file, ``results.json`` when finished, and TensorBoard event files.

Crash safety: a checkpoint's files are all written (TensorFlow writes the data to a temporary
name and renames it; the ``.meta`` is a hard link of ``graph.meta``) *before* the ``checkpoint``
state file, itself replaced atomically, names it; old checkpoints are deleted only after the state
file has stopped naming them. So whenever the process is killed, the state file names complete
checkpoints only.
"""
from __future__ import annotations

import datetime
import json
import os
import re
import shutil
import tempfile

from .config import load_config
from .errors import CheckpointError, RunFolderError

CONFIG_FILE = "config.json"
DATA_FILE = "data.json"
RESULTS_FILE = "results.json"
STATE_FILE = "checkpoint"
GRAPH_META = "graph.meta"
CKPT_BASENAME = "model.ckpt"
_RUN_RE = re.compile(r"^run-\d{14}(-\d+)?$")


def check_logdir(logdir, create=True):
    """Create ``logdir`` if needed and prove it writable, before any training starts. With
    ``create=False`` only what can be seen without creating anything: the nearest existing
    folder on the path must be a writable folder."""
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise RunFolderError(f"log folder {logdir} is not a folder; choose another with --logdir")
    if not create:
        existing = os.path.abspath(logdir)
        while not os.path.exists(existing):
            existing = os.path.dirname(existing)
        if not os.path.isdir(existing):
            raise RunFolderError(f"cannot create log folder {logdir} ({existing} is a file); "
                                 "choose another with --logdir")
        if not os.access(existing, os.W_OK | os.X_OK):
            raise RunFolderError(f"cannot write in log folder {logdir} (no write permission on "
                                 f"{existing}); choose another with --logdir or fix its permissions")
        return
    make_writable(logdir, "log folder", "choose another with --logdir or fix its permissions")


def make_writable(folder, name, what_to_do):
    """Create ``folder`` if needed and prove a file can be written in it."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        raise RunFolderError(f"cannot create {name} {folder} ({e.strerror}); {what_to_do}") from None
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise RunFolderError(f"cannot write in {name} {folder} ({e.strerror}); {what_to_do}") from None


def new_run_dir(logdir, now=None):
    """Make and return a fresh ``run-<UTC timestamp>`` folder; ``os.mkdir`` is atomic, so two
    runs started in the same second (or at once from two processes) get different folders."""
    check_logdir(logdir)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    base = os.path.join(logdir, "run-" + now.strftime("%Y%m%d%H%M%S"))
    for n in range(10000):
        path = base if n == 0 else f"{base}-{n}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            continue
    raise RunFolderError(f"could not find a free run folder name under {logdir}")


_held_locks = {}      # run folder (real path) -> the open folder this process locked


def lock_run(run_dir):
    """Take the run folder's training lock for this process: an exclusive ``flock`` on the folder
    itself (no file is made), which the kernel drops when the process ends, ``kill -9`` included.
    A second process that tries to train the same run (a resume started while the run still
    trains) is refused. Returns True if this call took the lock, False if this process already
    held it. Where ``fcntl`` does not exist (Windows) runs are not locked."""
    key = os.path.realpath(run_dir)
    if key in _held_locks:
        return False
    try:
        import fcntl
    except ImportError:
        return False
    fd = os.open(key, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise RunFolderError(f"{run_dir} is being trained by another process right now; let it "
                             "finish (or stop it with Ctrl-C) before resuming it") from None
    _held_locks[key] = fd
    return True


def unlock_run(run_dir):
    fd = _held_locks.pop(os.path.realpath(run_dir), None)
    if fd is not None:
        os.close(fd)


def write_bytes_atomic(path, data):
    """Write to a temporary name, flush to disk, then rename over ``path``: readers (and a
    process killed half-way) see the old file or the new one, never a partial one."""
    folder, base = os.path.split(path)
    tmp = os.path.join(folder, f".{base}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_json_atomic(path, obj):
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def is_run_dir(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def list_runs(logdir):
    if not os.path.isdir(logdir):
        return []
    return sorted((os.path.join(logdir, d) for d in os.listdir(logdir)
                   if _RUN_RE.match(d) and is_run_dir(os.path.join(logdir, d))),
                  key=lambda p: (os.path.basename(p)[:18], _suffix(p)))


def _suffix(path):
    tail = os.path.basename(path)[18:]
    return int(tail[1:]) if tail else 0


def latest_run(logdir="tf_logs"):
    """The newest run folder that holds a checkpoint: a run killed in its first epoch, or one
    still in it, has nothing to restore and is passed over."""
    folders = list_runs(logdir)
    restorable = [r for r in folders if read_state(r)]
    if not restorable:
        where = "" if os.path.isabs(logdir) else f" (relative to this folder: {os.path.abspath(logdir)})"
        what = (f"none of the {len(folders)} run folder(s) under {logdir}/ holds a checkpoint yet"
                if folders else f"no runs under {logdir}/")
        raise RunFolderError(f"{what}{where}; train one with `python scripts/train.py`, or say "
                             "where the runs are (--logdir, or logdir=... in bnmnist.restore)")
    return restorable[-1]


def newest_prefix(run_dir):
    """The newest checkpoint prefix the run's state file names."""
    prefixes = read_state(run_dir)
    if not prefixes:
        raise CheckpointError(f"{run_dir} holds no checkpoint (no '{STATE_FILE}' file naming "
                              "one); train at least one epoch, or pass a checkpoint prefix")
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
    prefixes = [os.path.join(run_dir, n[:-len(".index")]) for n in names if n.endswith(".index")]
    return sorted((p for p in prefixes if checkpoint_epoch(p) is not None), key=checkpoint_epoch)


def epochs_done(run_dir, start=None):
    """How many epochs the checkpoint a resume starts from holds: ``start``, else the newest the
    state file names (``model.ckpt-<epoch>`` is saved after ``epoch``); 0 when there is none."""
    prefixes = [start] if start else read_state(run_dir)
    if not prefixes:
        return 0
    epoch = checkpoint_epoch(prefixes[-1])
    if epoch is None:
        raise CheckpointError(f"{run_dir}: its '{STATE_FILE}' file names {prefixes[-1]}, not a "
                              f"{CKPT_BASENAME}-<epoch> checkpoint of bnmnist")
    return epoch + 1


def read_results(run_dir):
    """The finished run's results.json, or None when the run has not finished (or it is unreadable)."""
    try:
        return read_json(os.path.join(run_dir, RESULTS_FILE))
    except (OSError, ValueError):
        return None


def require_checkpoint(prefix):
    """Refuses a prefix without an index file, naming the checkpoints its folder does keep (a run
    keeps only its newest few, so an older epoch's is gone)."""
    if os.path.exists(prefix + ".index"):
        return
    names = [os.path.basename(p) for p in saved_checkpoints(os.path.dirname(prefix) or ".")]
    kept = f"; the folder keeps {', '.join(names)}" if names else ""
    raise CheckpointError(f"{prefix}: no such checkpoint ({prefix}.index is missing{kept}); "
                          "pass a run folder or an existing model.ckpt-N prefix")


def read_config(run_dir):
    return load_config(os.path.join(run_dir, CONFIG_FILE))


def strip_checkpoint_suffix(path):
    """A checkpoint's ``.index``, ``.meta`` or ``.data-*`` file name -> its prefix."""
    return re.sub(r"\.(index|meta|data-\d+-of-\d+)$", "", str(path))


def resolve(path, logdir="tf_logs"):
    """(run folder, checkpoint prefix, its Config) for a run folder, a checkpoint prefix or
    ``"latest"``; checks the checkpoint's index file is there. Needs no TensorFlow, so scripts
    can refuse a wrong path before importing it."""
    path = str(path)
    if path == "latest":
        path = latest_run(logdir)
    path = strip_checkpoint_suffix(path)
    if os.path.isdir(path):
        if not is_run_dir(path):
            raise CheckpointError(f"{path} is not a bnmnist run folder (no {CONFIG_FILE})")
        run_dir, prefix = path, newest_prefix(path)
    else:
        run_dir, prefix = os.path.dirname(path) or ".", path
        if not is_run_dir(run_dir):
            raise CheckpointError(f"{path}: neither a run folder nor a checkpoint inside one "
                                  f"(no {CONFIG_FILE} in {run_dir})")
    require_checkpoint(prefix)
    return run_dir, prefix, read_config(run_dir)


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
    text = f'model_checkpoint_path: "{rel[-1]}"\n' + "".join(
        f'all_model_checkpoint_paths: "{r}"\n' for r in rel)
    write_bytes_atomic(os.path.join(run_dir, STATE_FILE), text.encode("utf-8"))


def checkpoint_files(prefix):
    folder, base = os.path.split(prefix)
    return [os.path.join(folder, f) for f in os.listdir(folder)
            if f == base + ".index" or f == base + ".meta" or f.startswith(base + ".data-")]


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
