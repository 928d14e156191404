"""Files written whole or not at all: a reader, or a process killed half-way, sees the old file or
the new one, never a partial one."""

from __future__ import annotations

import json
import os


def write_bytes_atomic(path, data):
    """Write to a temporary name, flush to disk, then rename over ``path``: readers (and a
    process killed half-way) see the old file or the new one, never a partial one."""
    write_atomic(path, lambda f: f.write(data))


def write_atomic(path, write, sync=True):
    """``write(f)`` into a temporary file beside ``path``, then rename it over ``path``. Without
    ``sync`` the data is not forced to disk first, for files whose reader checks them anyway."""
    folder, base = os.path.split(path)
    tmp = os.path.join(folder, f".{base}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            if sync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:  # a full disk or a kill: leave no partial file behind
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path, obj):
    write_bytes_atomic(path, (json.dumps(obj, indent=2) + "\n").encode("utf-8"))


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def cache_folder(env, name):
    """Where one of bnmnist's caches lives: the folder the environment variable ``env`` names, by
    default ``$XDG_CACHE_HOME/bnmnist/NAME`` (``~/.cache``); None when ``env`` turns it ``off``."""
    setting = os.environ.get(env, "")
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    if setting:
        return os.path.abspath(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bnmnist", name)
