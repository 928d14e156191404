"""XLA's compile of the epoch loop kept between runs by TensorFlow's persistent cache, made safe:
entries live in a :class:`CacheFolder` keyed by TensorFlow's build, the CPU and the codegen
settings; each run gets a private folder of links to the whole entries its CPU can run, and what
it writes is published once complete. ``BNMNIST_COMPILE_CACHE``: another folder, or ``off``.
"""

from __future__ import annotations

import contextlib
import functools
import glob
import hashlib
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time

from . import atomic
from .errors import BnmnistError, WriteError

FLAG = "--tf_xla_persistent_cache_directory"
ENV = "BNMNIST_COMPILE_CACHE"
STALE_SECONDS = 24 * 3600  # a private folder this old belongs to a process that was killed
# TensorFlow reads an entry as text first, and logs that attempt's failure before reading it as
# the binary proto it is: that line says nothing about this run
_READ_NOISE = "Error parsing text-format tensorflow.XlaSerializedCacheEntry"

# XLA records the target features an entry was compiled for, in LLVM's names, as one list
_FEATURE_LIST = re.compile(rb"[+-][a-z0-9][a-z0-9.\-_]*(?:,[+-][a-z0-9][a-z0-9.\-_]*){3,}")
# The x86 features that decide which instructions XLA's generated code may hold. The others are
# tuning hints, or instructions reached only through intrinsics the loop never uses (RDSEED, which
# Linux hides on some AMD CPUs whose CPUID still reports it, say)
_INSTRUCTION_SETS = re.compile(
    r"64bit|x87|cmov|cx8|cx16|mmx|sse.*|ssse3|avx.*|fma4?|f16c|bmi2?|popcnt|lzcnt|movbe|adx|crc32|prfchw|"
    r"sahf|evex512|amx-.*|xop|tbm|egpr|ndd|ppx|push2pop2|ccmp|cf|nf|zu"
)
# /proc/cpuinfo's flag -> LLVM's feature, where the names differ beyond underscores
_LLVM_NAMES = {
    "pni": "sse3", "sse4_1": "sse4.1", "sse4_2": "sse4.2", "pclmulqdq": "pclmul", "lahf_lm": "sahf",
    "3dnowprefetch": "prfchw", "lm": "64bit", "abm": "lzcnt", "bmi1": "bmi", "rdrand": "rdrnd",
    "sha_ni": "sha", "fpu": "x87",
}  # fmt: skip
_LOADER_WARNING = re.compile(r"cpu_aot_loader.*Target machine feature \+(\S+) is not")

_active = None  # this process's cache, once enable() has set TensorFlow's flag


def machine_key():
    """What decides the machine code XLA generates, besides the graph: a short hash."""
    parts = {
        "tensorflow": _tensorflow_build(),
        "cpu": _cpu_description(),
        "cores": os.cpu_count(),
        "env": {
            k: v
            for k, v in sorted(os.environ.items())
            if k.startswith(("XLA_", "TF_XLA_", "ONEDNN_", "DNNL_")) or k == "TF_ENABLE_ONEDNN_OPTS"
        },
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _tensorflow_build():
    """The installed TensorFlow's compiled libraries (path, size, mtime), without importing it."""
    import importlib.util

    spec = importlib.util.find_spec("tensorflow")
    if not spec or not spec.origin:
        return []
    folder = os.path.dirname(spec.origin)
    libraries = sorted(glob.glob(os.path.join(folder, "*.so*")) + glob.glob(os.path.join(folder, "python", "*.so")))
    return [(path, st.st_size, st.st_mtime_ns) for path, st in ((p, os.stat(p)) for p in libraries)]


@functools.cache  # the machine key and the instruction-set check both ask, once per process
def cpuinfo():
    """The first processor's fields in /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            first = f.read().split("\n\n")[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in first.splitlines())}


def _cpu_description():
    info = cpuinfo()
    if not info:
        return [platform.machine(), platform.processor()]
    wanted = ("vendor_id", "model name", "flags", "cache size", "Features", "CPU implementer", "CPU part")
    return sorted(f"{k}\t: {v}" for k, v in info.items() if k in wanted)


def host_features():
    """This CPU's instruction set extensions, in LLVM's names."""
    features = {
        _LLVM_NAMES.get(flag) or (f"amx-{flag[4:]}" if flag.startswith("amx_") else flag.replace("_", ""))
        for flag in cpuinfo().get("flags", "").split()
    }
    implied = {"sse4.2": "crc32", "avx512f": "evex512"}  # features LLVM names apart, /proc/cpuinfo not
    return features | {implied[f] for f in features & implied.keys()}


def missing_instruction_sets(entry, host):
    """The instruction sets the entry was compiled for and ``host`` lacks (``["(none recorded)"]``)."""
    lists = _FEATURE_LIST.findall(entry)
    if not lists:
        return ["(none recorded)"]
    wanted = {f[1:] for found in lists for f in found.decode().split(",") if f.startswith("+")}
    return sorted(f for f in wanted if _INSTRUCTION_SETS.fullmatch(f) and f not in host)


def _loader_hint_warning(line):
    """XLA's loader warning about a recorded feature that is only a tuning hint."""
    found = _LOADER_WARNING.search(line)
    return bool(found) and not _INSTRUCTION_SETS.fullmatch(found.group(1))


def enable():
    """Point TensorFlow's compile cache at a private folder filled from this machine's entries;
    call before TensorFlow is imported. Returns the shared folder, or None when the cache stays
    off (TensorFlow imported, the flag set, ``off``, an unwritable folder, a disk short of room)."""
    global _active
    root = atomic.cache_folder(ENV, "xla")
    if _active or root is None or "tensorflow" in sys.modules or FLAG in os.environ.get("TF_XLA_FLAGS", ""):
        return None
    cache = atomic.CacheFolder(os.path.join(root, machine_key()))
    try:
        if not cache.has_room():
            return None
        os.makedirs(cache.folder, exist_ok=True)
        _remove_stale(cache.folder)
        private = tempfile.mkdtemp(prefix=".run-", dir=cache.folder)
    except OSError:
        return None
    if any(c.isspace() for c in private):  # TF_XLA_FLAGS is split on white space
        shutil.rmtree(private, ignore_errors=True)
        return None
    linked, host = set(), host_features()
    for name in cache.names(".pb"):
        if _loadable(cache, name, host):
            with contextlib.suppress(OSError):
                atomic.link_or_copy(cache.path(name), os.path.join(private, name))
                linked.add(name)
    os.environ["TF_XLA_FLAGS"] = f"{os.environ.get('TF_XLA_FLAGS', '')} {FLAG}={private}".strip()
    _active = _Cache(cache, private, linked)
    return cache.folder


class _Cache:
    def __init__(self, cache, private, linked):
        self.cache, self.private, self.linked = cache, private, linked
        self.folder, self.loaded = cache.folder, False

    def publish(self):
        """Move the entries TensorFlow wrote into the shared folder, whole, with their SHA-256;
        returns how many there were."""
        names = os.listdir(self.private) if os.path.isdir(self.private) else []  # closed: nothing new
        written = [n for n in sorted(names) if n.endswith(".pb") and n not in self.linked]
        for name in written:
            with contextlib.suppress(OSError):
                path = os.path.join(self.private, name)
                self.cache.publish(name, atomic.sha256_file(path), move=path)
                self.linked.add(name)
        return len(written)

    def close(self):
        shutil.rmtree(self.private, ignore_errors=True)


@contextlib.contextmanager
def compiling():
    """Around the calls that compile the XLA loop: their entries are published when they succeed;
    a full disk is a :class:`WriteError`; an entry XLA cannot load is removed, in one line."""
    import tensorflow as tf

    from .runs import first_line

    if _active is None:
        yield
        return
    try:
        with _without_read_noise():
            yield
    except tf.errors.OpError as e:
        full = [reason for reason in ("No space left on device", "Disk quota exceeded") if reason in e.message]
        if full:
            raise WriteError(
                f"could not write XLA's compile cache in {_active.folder} ({full[0]}); {ENV}=off runs without it"
            ) from None
        if _active.linked:  # remove the entries this run loaded: XLA could not use them
            for name in _active.linked:
                _active.cache.remove(name)
            raise BnmnistError(
                f"XLA could not use its compile cache in {_active.folder} ({first_line(e)}); the entries are "
                f"removed: run the command again (or set {ENV}=off)"
            ) from None
        raise
    # the compiled loop is in memory now: TensorFlow reads the folder again only for a new shape
    _active.loaded = not _active.publish() and bool(_active.linked)
    _active.close()


def loaded():
    """Whether this process's compile came from the cache (and wrote nothing new)."""
    return bool(_active and _active.loaded)


def finish():
    """At the end of the command: publish anything compiled later and remove the private folder."""
    if _active is not None:
        _active.publish()
        _active.close()


@contextlib.contextmanager
def _without_read_noise():
    """Standard error (fd 2), meanwhile, without the line TensorFlow logs when it tries an entry as
    text and the loader's warnings about tuning hints."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if _READ_NOISE not in line and not _loader_hint_warning(line):
                    sys.stderr.write(line)
            sys.stderr.flush()


def _loadable(cache, name, host):
    """Whole, as its recorded SHA-256 says, and compiled for instruction sets this CPU has."""
    record = cache.record(name)
    try:
        with open(cache.path(name), "rb") as f:
            data = f.read()
    except OSError:
        return False
    whole = record is not None and record["sha256"] == hashlib.sha256(data).hexdigest()
    return whole and not missing_instruction_sets(data, host)


def _remove_stale(folder):
    now = time.time()
    for private in glob.glob(os.path.join(folder, ".run-*")):
        with contextlib.suppress(OSError):
            if now - os.stat(private).st_mtime > STALE_SECONDS:
                shutil.rmtree(private, ignore_errors=True)
