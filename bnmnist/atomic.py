"""Files written whole or not at all: a reader, or a process killed half-way, sees the old file or
the new one, never a partial one."""

from __future__ import annotations

import json
import os


def write_bytes_atomic(path, data):
    """Write to a temporary name, flush to disk, then rename over ``path``: readers (and a
    process killed half-way) see the old file or the new one, never a partial one."""
    folder, base = os.path.split(path)
    tmp = os.path.join(folder, f".{base}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
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
