"""Run folders and their checkpoints (TensorFlow is imported only to read tensors): making,
finding and locking runs, the records they keep, and the crash-safe order checkpoints are written in.

A run lives in ``<logdir>/run-<UTC %Y%m%d%H%M%S>[-N]/`` holding ``config.json``, ``data.json`` (the
MNIST copy: path and SHA-256), ``graph.meta``, the checkpoints and their ``checkpoint`` state file,
``results.json`` when finished, and TensorBoard event files. The state file names complete
checkpoints only: a checkpoint's files are all written before the state file, replaced atomically,
names it, and old ones are deleted only after it has stopped naming them (:func:`commit_checkpoint`).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import tempfile

from .atomic import link_or_copy, read_json, write_bytes_atomic, write_json_atomic
from .config import load_config
from .errors import CheckpointError, RunFolderError

CONFIG_FILE = "config.json"
STATE_FILE = "checkpoint"
GRAPH_META = "graph.meta"
CKPT_BASENAME = "model.ckpt"
DATA_FILE = "data.json"
RESULTS_FILE = "results.json"
_RUN_RE = re.compile(r"^run-\d{14}(-\d+)?$")
_EXAMPLES = (
    "; pass a folder like tf_logs/run-20261127084929 or a checkpoint like tf_logs/run-20261127084929/model.ckpt-19"
)


def check_logdir(logdir, create=True):
    """Create ``logdir`` if needed and prove it writable. With ``create=False``, only what can be
    seen without creating anything: the nearest existing folder on the path must be writable."""
    if os.path.exists(logdir) and not os.path.isdir(logdir):
        raise RunFolderError(f"log folder {logdir} is not a folder; choose another with --logdir")
    if create:
        return make_writable(logdir, "log folder", "choose another with --logdir or fix its permissions")
    existing = os.path.abspath(logdir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise RunFolderError(f"cannot create log folder {logdir} ({existing} is a file); choose another with --logdir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise RunFolderError(
            f"cannot write in log folder {logdir} (no write permission on "
            f"{existing}); choose another with --logdir or fix its permissions"
        )


def make_writable(folder, name, what_to_do):
    """Create ``folder`` if needed and prove a file can be written in it."""
    try:
        os.makedirs(folder, exist_ok=True)
        tempfile.TemporaryFile(dir=folder).close()
    except OSError as e:
        verb = "write in" if os.path.isdir(folder) else "create"
        raise RunFolderError(f"cannot {verb} {name} {folder} ({e.strerror}); {what_to_do}") from None


def new_run_dir(logdir, now=None):
    """Make and return a fresh ``run-<UTC timestamp>`` folder; ``os.mkdir`` is atomic, so two
    runs started in the same second (or at once from two processes) get different folders."""
    check_logdir(logdir)
    now = now or datetime.datetime.now(datetime.timezone.utc)
    base = os.path.join(logdir, "run-" + now.strftime("%Y%m%d%H%M%S"))
    for n in range(10000):
        path = base if n == 0 else f"{base}-{n}"
        with contextlib.suppress(FileExistsError):
            os.mkdir(path)
            return path
    raise RunFolderError(f"could not find a free run folder name under {logdir}")


_held_locks = {}  # run folder (real path) -> the open folder this process locked


@contextlib.contextmanager
def run_lock(run_dir):
    """The run's training lock for the block: an exclusive ``flock`` on the folder itself, which
    the kernel drops when the process ends (``kill -9`` included), so a second process that tries
    to train the run is refused. Nested blocks share it; yields whether this block took it.
    Where ``fcntl`` does not exist (Windows) runs are not locked."""
    key = os.path.realpath(run_dir)
    try:
        import fcntl
    except ImportError:
        fcntl = None
    if fcntl is None or key in _held_locks:
        yield False
        return
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
    try:
        yield True
    finally:
        os.close(_held_locks.pop(key))


def is_run_dir(path):
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, CONFIG_FILE))


def latest_run(logdir="tf_logs", preset=None):
    """The newest run folder that holds a checkpoint (of ``preset``, when given): a run killed in
    its first epoch, or one still in it, has nothing to restore and is passed over."""
    names = os.listdir(logdir) if os.path.isdir(logdir) else []
    folders = [os.path.join(logdir, d) for d in names if _RUN_RE.match(d) and is_run_dir(os.path.join(logdir, d))]
    folders.sort(key=lambda p: (os.path.basename(p)[:18], int(os.path.basename(p)[19:] or 0)))
    restorable = [r for r in folders if read_state(r) and (not preset or _json(r, CONFIG_FILE).get("preset") == preset)]
    if restorable:
        return restorable[-1]
    where = "" if os.path.isabs(logdir) else f" (relative to this folder: {os.path.abspath(logdir)})"
    of = f" of {preset}" if preset else ""
    what = (
        f"none of the {len(folders)} run folder(s) under {logdir}/ holds a checkpoint{of} yet"
        if folders
        else f"no runs under {logdir}/"
    )
    train = f"python scripts/train.py{f' --preset {preset}' if preset else ''}"
    raise RunFolderError(
        f"{what}{where}; train one with `{train}`, or say where the "
        "runs are (--logdir, or logdir=... in bnmnist.restore)"
    )


def _json(run_dir, name):
    """The run's JSON file ``name``, or {} when it is missing or unreadable."""
    try:
        return read_json(os.path.join(run_dir, name))
    except (OSError, ValueError):
        return {}


def read_results(run_dir):
    """The finished run's results.json, or None when the run has not finished (or it is unreadable)."""
    return _json(run_dir, RESULTS_FILE) or None


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


def resolve(path, logdir="tf_logs", *, newest=True):
    """(run folder, checkpoint prefix, its Config) for a run folder, a checkpoint of one (its
    prefix or any of its files) or ``"latest"``; the checkpoint's index file must be there. A run
    folder gives its newest checkpoint, or with ``newest=False`` None. Needs no TensorFlow."""
    path = str(path).rstrip("/") or "/"
    if path == "latest":
        path = latest_run(logdir)
    prefix = strip_checkpoint_suffix(path)
    # a checkpoint's name inside a run folder gets its own message, naming the ones it keeps
    if not (os.path.exists(path) or os.path.exists(prefix + ".index") or is_run_dir(os.path.dirname(prefix) or ".")):
        raise CheckpointError(f"{path}: no such file or folder")
    path = prefix
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
    names = os.listdir(run_dir) if os.path.isdir(run_dir) else []
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
    with open(path, encoding="utf-8") as f:
        text = f.read()
    names = re.findall(r'^\s*all_model_checkpoint_paths:\s*"(.*)"\s*$', text, re.M)
    newest = re.findall(r'^\s*model_checkpoint_path:\s*"(.*)"\s*$', text, re.M)
    names += newest[-1:] if newest[-1:] != names[-1:] else []
    return [p if os.path.isabs(p) else os.path.join(run_dir, p) for p in names]


def write_state(run_dir, prefixes):
    """Atomically replace the state file, in TensorFlow's text format with relative paths."""
    rel = [os.path.basename(p) for p in prefixes]
    text = f'model_checkpoint_path: "{rel[-1]}"\n' + "".join(f'all_model_checkpoint_paths: "{r}"\n' for r in rel)
    write_bytes_atomic(os.path.join(run_dir, STATE_FILE), text.encode("utf-8"))


def link_meta(run_dir, prefix):
    """Give a checkpoint its ``.meta`` (the book's ``import_meta_graph`` recipe needs one)."""
    tmp = prefix + ".meta.tmp"
    with contextlib.suppress(FileNotFoundError):
        os.remove(tmp)
    link_or_copy(os.path.join(run_dir, GRAPH_META), tmp)
    os.replace(tmp, prefix + ".meta")


def commit_checkpoint(run_dir, prefix, keep):
    """Name ``prefix`` newest in the state file, then delete checkpoints beyond ``keep``."""
    kept = [p for p in read_state(run_dir) if p != prefix] + [prefix]
    dropped, kept = kept[:-keep], kept[-keep:]
    write_state(run_dir, kept)
    for old in dropped:
        folder, base = os.path.split(old)
        for f in os.listdir(folder):
            if f in (base + ".index", base + ".meta") or f.startswith(base + ".data-"):
                os.remove(os.path.join(folder, f))


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
            why = f"has no variable {name}"
        elif list(shapes[name]) != want:
            why = f"variable {name} has shape {list(shapes[name])} in the checkpoint but {want} in this network"
        else:
            continue
        raise CheckpointError(f"{prefix}: {why}; it was saved from another architecture (check the run's config.json)")


def restore_checkpoint(sess, saver, prefix, variables):
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


def first_line(e):
    """The line of an exception's message that says what went wrong. TensorFlow's run to pages:
    "Graph execution error:", where the node was defined (indented), then the cause."""
    text = getattr(e, "message", None) or getattr(e, "strerror", None) or str(e)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    noise = ("Graph execution error", "Detected at node", "Node:")
    causes = [line.strip() for line in text.splitlines() if line[:1].strip() and not line.startswith(noise)]
    return (causes or lines or [type(e).__name__])[0][:300]
