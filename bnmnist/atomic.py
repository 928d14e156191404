"""Files written whole or not at all: a reader, or a process killed half-way, sees the old file or
the new one, never a partial one. And bnmnist's caches (:class:`CacheFolder`), built on that."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil


def write_bytes_atomic(path, data):
    write_atomic(path, lambda f: f.write(data))


def write_atomic(path, write, sync=True):
    """``write(f)`` into a temporary file beside ``path``, forced to disk unless not ``sync`` (for
    files their reader checks), then renamed over ``path``."""
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
    """The folder ``$env`` names, by default ``$XDG_CACHE_HOME/bnmnist/NAME``; None when ``off``."""
    setting = os.environ.get(env, "")
    if setting.lower() in ("off", "0", "no", "false"):
        return None
    if setting:
        return os.path.abspath(setting)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "bnmnist", name)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def link_or_copy(source, target):
    """A hard link where the file system allows one, else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


CACHE_MIN_FREE_BYTES = 256 * 2**20  # beyond an entry itself: the disk's last room is the runs'


class CacheFolder:
    """A cache: entries published whole, by a rename, then their record, ``NAME.json``, with their
    SHA-256 and whatever else the owner needs. A reader trusts an entry whose digest matches."""

    def __init__(self, folder):
        self.folder = folder

    def path(self, name):
        return os.path.join(self.folder, name)

    def names(self, suffix):
        try:
            return sorted(n for n in os.listdir(self.folder) if n.endswith(suffix))
        except OSError:
            return []

    def record(self, name):
        """The entry's record, or None when there is no readable one."""
        try:
            record = read_json(self.path(name) + ".json")
        except (OSError, ValueError):
            return None
        return record if isinstance(record, dict) and isinstance(record.get("sha256"), str) else None

    def has_room(self, nbytes=0):
        path = self.folder
        while not os.path.exists(path) and os.path.dirname(path) != path:
            path = os.path.dirname(path)
        return shutil.disk_usage(path).free >= nbytes + CACHE_MIN_FREE_BYTES

    def publish(self, name, sha256, *, move=None, write=None, **record):
        """The entry ``name``, the file ``move`` or ``write(f)``'s, then its record. Raises OSError."""
        target = self.path(name)
        if move is not None:
            os.replace(move, target)
        else:
            write_atomic(target, write, sync=False)  # its reader checks it against the record
        write_json_atomic(target + ".json", {**record, "sha256": sha256})

    def remove(self, name):
        for path in (self.path(name), self.path(name) + ".json"):
            with contextlib.suppress(OSError):
                os.remove(path)
