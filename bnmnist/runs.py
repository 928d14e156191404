"""Run folders (no TensorFlow import here): making, finding and locking them, and the records
they keep besides checkpoints.

A run lives in ``<logdir>/run-<UTC %Y%m%d%H%M%S>[-N]/`` holding ``config.json`` (the
:class:`~bnmnist.config.Config`), ``data.json`` (the MNIST copy it trains on: path and SHA-256),
``graph.meta``, the checkpoints and their ``checkpoint`` state file (``checkpoint.py``),
``results.json`` when finished, and TensorBoard event files.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import tempfile

from .atomic import read_json, write_json_atomic
from .checkpoint import newest_prefix, read_state, require_checkpoint, strip_checkpoint_suffix
from .config import load_config
from .errors import CheckpointError, RunFolderError

CONFIG_FILE = "config.json"
DATA_FILE = "data.json"
RESULTS_FILE = "results.json"
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
            raise RunFolderError(
                f"cannot create log folder {logdir} ({existing} is a file); choose another with --logdir"
            )
        if not os.access(existing, os.W_OK | os.X_OK):
            raise RunFolderError(
                f"cannot write in log folder {logdir} (no write permission on "
                f"{existing}); choose another with --logdir or fix its permissions"
            )
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


_held_locks = {}  # run folder (real path) -> the open folder this process locked


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
        raise RunFolderError(
            f"{run_dir} is being trained by another process right now; let it "
            "finish (or stop it with Ctrl-C) before resuming it"
        ) from None
    _held_locks[key] = fd
    return True


@contextlib.contextmanager
def run_lock(run_dir):
    """Hold the run's training lock (:func:`lock_run`) for the block; the one way bnmnist takes it.
    Nested blocks in the same process share it; the outermost releases it."""
    took = lock_run(run_dir)
    try:
        yield
    finally:
        if took:
            unlock_run(run_dir)


def unlock_run(run_dir):
    fd = _held_locks.pop(os.path.realpath(run_dir), None)
    if fd is not None:
        os.close(fd)


def is_run_dir(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def list_runs(logdir):
    if not os.path.isdir(logdir):
        return []
    return sorted(
        (
            os.path.join(logdir, d)
            for d in os.listdir(logdir)
            if _RUN_RE.match(d) and is_run_dir(os.path.join(logdir, d))
        ),
        key=lambda p: (os.path.basename(p)[:18], _suffix(p)),
    )


def _suffix(path):
    tail = os.path.basename(path)[18:]
    return int(tail[1:]) if tail else 0


def latest_run(logdir="tf_logs", preset=None):
    """The newest run folder that holds a checkpoint (of ``preset``, when given): a run killed in
    its first epoch, or one still in it, has nothing to restore and is passed over."""
    folders = list_runs(logdir)
    restorable = [r for r in folders if read_state(r)]
    if preset:
        restorable = [r for r in restorable if _preset_of(r) == preset]
    if not restorable:
        where = "" if os.path.isabs(logdir) else f" (relative to this folder: {os.path.abspath(logdir)})"
        of = f" of {preset}" if preset else ""
        what = (
            f"none of the {len(folders)} run folder(s) under {logdir}/ holds a checkpoint{of} yet"
            if folders
            else f"no runs under {logdir}/"
        )
        train = f"python scripts/train.py{f' --preset {preset}' if preset else ''}"
        raise RunFolderError(
            f"{what}{where}; train one with `{train}`, or say "
            "where the runs are (--logdir, or logdir=... in bnmnist.restore)"
        )
    return restorable[-1]


def _preset_of(run_dir):
    try:
        return read_json(os.path.join(run_dir, CONFIG_FILE)).get("preset")
    except (OSError, ValueError):
        return None


def read_results(run_dir):
    """The finished run's results.json, or None when the run has not finished (or it is unreadable)."""
    try:
        return read_json(os.path.join(run_dir, RESULTS_FILE))
    except (OSError, ValueError):
        return None


def read_config(run_dir):
    return load_config(os.path.join(run_dir, CONFIG_FILE))


def write_config(run_dir, config):
    write_json_atomic(os.path.join(run_dir, CONFIG_FILE), config.to_json())


def write_records(run_dir, config, data_info=None):
    """A new run's ``config.json`` and ``data.json`` (the MNIST copy: path, SHA-256, sizes)."""
    write_config(run_dir, config)
    if data_info is not None:
        write_json_atomic(os.path.join(run_dir, DATA_FILE), data_info)


def read_data_record(run_dir):
    """The run's ``data.json``; a :class:`RunFolderError` when it cannot be read."""
    try:
        return read_json(os.path.join(run_dir, DATA_FILE))
    except (OSError, ValueError) as e:
        raise RunFolderError(
            f"{run_dir}: cannot read {DATA_FILE} ({e}); this run folder is damaged or not a bnmnist run"
        ) from None


def require_existing(path):
    """Refuse, before anything else, a path that names nothing: neither a file or folder, nor a
    checkpoint prefix, nor a checkpoint's name inside a run folder (which gets its own message,
    naming the checkpoints the run keeps)."""
    prefix = strip_checkpoint_suffix(path)
    if os.path.exists(path) or os.path.exists(prefix + ".index") or is_run_dir(os.path.dirname(prefix) or "."):
        return
    raise CheckpointError(f"{path}: no such file or folder")


def resolve(path, logdir="tf_logs", *, newest=True):
    """(run folder, checkpoint prefix, its Config) for a run folder, a checkpoint of one (its
    prefix or any of its files) or ``"latest"``; the checkpoint's index file must be there. A run
    folder gives its newest checkpoint, or with ``newest=False`` None (a resume takes the newest
    itself and has its own words for a run without one). Needs no TensorFlow."""
    path = str(path).rstrip("/") or "/"
    if path == "latest":
        path = latest_run(logdir)
    require_existing(path)
    path = strip_checkpoint_suffix(path)
    if os.path.isdir(path):
        if not is_run_dir(path):
            raise CheckpointError(f"{path} is not a bnmnist run folder (no {CONFIG_FILE}){_EXAMPLES}")
        run_dir, prefix = path, newest_prefix(path) if newest else None
    else:
        run_dir, prefix = os.path.dirname(path) or ".", path
        if not is_run_dir(run_dir):
            raise CheckpointError(
                f"{path}: neither a run folder nor a checkpoint inside one (no {CONFIG_FILE} in {run_dir}){_EXAMPLES}"
            )
    if prefix is not None:
        require_checkpoint(prefix)
    return run_dir, prefix, read_config(run_dir)


_EXAMPLES = (
    "; pass a folder like tf_logs/run-20261127084929 or a checkpoint like tf_logs/run-20261127084929/model.ckpt-19"
)
