"""MNIST, loaded and checked with NumPy only: from ``--data`` (a Keras ``mnist.npz`` or a folder of
the four IDX files), ``BNMNIST_DATA``, the Keras cache, else Keras's own download. Everything read
is validated (IDX magic, dimensions, dtype, labels, counts); a failure is a :class:`DataError`
naming the file. The decoded arrays are kept in a cache folder (``BNMNIST_DATA_CACHE``), keyed by
the source files' identity and trusted only when their SHA-256 is the recorded one.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import zlib
from dataclasses import dataclass

import numpy as np

from . import atomic
from .errors import DataError

ENV_VAR = "BNMNIST_DATA"
CACHE_ENV = "BNMNIST_DATA_CACHE"
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
HOW_TO_PASS = (
    f"pass a local copy with --data PATH or the environment variable {ENV_VAR} "
    "(a Keras mnist.npz or a folder with the four MNIST IDX files)"
)


@dataclass(frozen=True)
class Mnist:
    """The raw data set as stored: uint8 images (n, 28, 28) and uint8 labels (n,)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @functools.cached_property
    def _sha256(self):  # computed once per loaded copy
        h = hashlib.sha256()
        for a in (self.x_train, self.y_train, self.x_test, self.y_test):
            h.update(str(a.shape).encode())
            h.update(memoryview(np.ascontiguousarray(a)).cast("B"))  # hashed in place, not copied
        return h.hexdigest()

    def fingerprint(self) -> str:
        """SHA-256 over the four arrays: tells whether a resumed run sees the same data."""
        return self._sha256


@dataclass(eq=False)  # arrays: compared by identity
class Split:
    """The book's arrays: float32 pixels / 255 flattened to 784, int32 labels, the first
    ``n_valid`` training images held out for validation. The training images are kept as raw
    uint8 ``train_pixels``; ``X_train`` is scaled on first use (the XLA loop scales in its graph)."""

    train_pixels: np.ndarray
    y_train: np.ndarray
    X_valid: np.ndarray
    y_valid: np.ndarray
    X_test: np.ndarray
    y_test: np.ndarray

    @functools.cached_property
    def X_train(self):
        return scale_images(self.train_pixels)

    @property
    def n_train(self):
        return len(self.train_pixels)


def scale_images(images: np.ndarray) -> np.ndarray:
    """The book's preprocessing: ``astype(float32).reshape(-1, 784) / 255``."""
    return images.astype(np.float32).reshape(-1, 28 * 28) / 255.0


def n_train(mnist: Mnist, n_valid: int = 5000) -> int:
    """How many training images :func:`split` leaves after holding out ``n_valid``, at no cost."""
    if not 0 < n_valid < len(mnist.x_train):
        raise DataError(
            f"{mnist.source}: {len(mnist.x_train)} training images are too few to hold "
            f"out {n_valid} for validation; use the full MNIST training set"
        )
    return len(mnist.x_train) - n_valid


def split(mnist: Mnist, n_valid: int = 5000) -> Split:
    n_train(mnist, n_valid)
    y = mnist.y_train.astype(np.int32)
    return Split(
        mnist.x_train[n_valid:].reshape(-1, 28 * 28),
        y[n_valid:],
        scale_images(mnist.x_train[:n_valid]),
        y[:n_valid],
        scale_images(mnist.x_test),
        mnist.y_test.astype(np.int32),
    )


def keras_cache_path():
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets", "mnist.npz")


def resolve(path=None):
    """The local path to read (without reading it), or None when only a download remains."""
    if path or os.environ.get(ENV_VAR):
        return str(path or os.environ[ENV_VAR])
    return keras_cache_path() if os.path.isfile(keras_cache_path()) else None


def load(path: str | None = None, download: bool = True) -> Mnist:
    """Load and validate MNIST from ``path`` or the default sources (see the module docstring)."""
    local = resolve(path)
    if local is None:
        if not download:
            raise DataError(f"no MNIST found (no --data, no {ENV_VAR}, nothing at {keras_cache_path()}); {HOW_TO_PASS}")
        local = _download()
    if not os.path.exists(local):
        raise DataError(f"{local}: no such file or folder; {HOW_TO_PASS}")
    st = os.stat(local)
    return _load_cached(os.path.realpath(local), st.st_mtime_ns, st.st_size)


def load_recorded(record: dict, path: str | None = None, owner: str = "the run") -> Mnist:
    """The MNIST ``owner`` was trained on, from its ``data.json`` ``record`` (source and SHA-256),
    never downloaded: ``path``, which must hold the same data; else the recorded copy; else
    ``BNMNIST_DATA`` when it holds the same data (so a printed resume command keeps working)."""
    sha, source = record.get("sha256"), record.get("source")

    def same_data(where):
        mnist = load(where, download=False)
        if mnist.fingerprint() != sha:
            raise DataError(
                f"{mnist.source} holds other data than {owner} was trained on ({source}); "
                f"pass that copy with --data PATH or {ENV_VAR}"
            )
        return mnist

    if path:
        return same_data(path)
    if not source and not os.environ.get(ENV_VAR):
        raise DataError(f"{owner} records no MNIST copy; {HOW_TO_PASS}")
    problem = f"the MNIST copy at {source} has changed since {owner} was trained on it; pass the copy it was trained on"
    try:
        mnist = load(source, download=False) if source else None
    except DataError as e:
        mnist = None
        problem = f"{owner} was trained on the MNIST copy at {source}, which cannot be read now ({e}); pass that copy"
    if mnist is not None and mnist.fingerprint() == sha:
        return mnist
    if os.environ.get(ENV_VAR):
        return same_data(os.environ[ENV_VAR])
    raise DataError(f"{problem} with --data PATH or {ENV_VAR}")


@functools.lru_cache(maxsize=4)
def _load_cached(path, _mtime_ns, _size):
    # Keyed on mtime and size too, so a file replaced on disk is read again.
    is_folder = os.path.isdir(path)
    files = {key: _find_idx(path, name) for key, name in IDX_FILES.items()} if is_folder else {"npz": path}
    cache = _DecodedCache.for_sources(list(files.values()))
    mnist = cache.read(path) if cache else None
    if mnist is None:
        if "npz" in files:
            arrays = _read_npz(path)
        else:
            arrays = {key: _read_idx(files[key], 3 if key.startswith("x") else 1) for key in IDX_FILES}
        mnist = _checked(arrays, path)
        if cache:
            cache.write(mnist)
    return mnist


class _DecodedCache:
    """The decoded arrays of one set of source files: ``KEY.npy`` in a :class:`atomic.CacheFolder`."""

    def __init__(self, cache, key):
        self.cache, self.name = cache, key + ".npy"

    @classmethod
    def for_sources(cls, files):
        folder = atomic.cache_folder(CACHE_ENV, "mnist")
        try:
            stats = [os.stat(f) for f in files]
        except OSError:
            return None  # decoding says what is wrong with the file
        named = [(f, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev) for f, st in zip(files, stats)]
        key = hashlib.sha256(json.dumps(named).encode()).hexdigest()[:32]
        return cls(atomic.CacheFolder(folder), key) if folder else None

    def read(self, source):
        """The cached arrays as an :class:`Mnist` of ``source``, or None."""
        record = self.cache.record(self.name)
        try:  # any error (a DataError is a ValueError) leaves the entry unused
            n_train, n_test = int(record["n_train"]), int(record["n_test"])
            flat = np.load(self.cache.path(self.name), allow_pickle=False)
            if flat.dtype != np.uint8 or flat.shape != ((n_train + n_test) * 785,):
                return None
            x_train, y_train, x_test, y_test = np.split(flat, np.cumsum([n_train * 784, n_train, n_test * 784]))
            x_train, x_test = x_train.reshape(n_train, 28, 28), x_test.reshape(n_test, 28, 28)
            mnist = _checked(dict(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test), source)
        except (OSError, ValueError, EOFError, KeyError, TypeError):
            return None
        return mnist if mnist.fingerprint() == record["sha256"] else None

    def write(self, mnist):
        """Keep ``mnist``'s (uint8) arrays for the next run; a failure leaves the cache without them."""
        arrays = [np.ascontiguousarray(a) for a in (mnist.x_train, mnist.y_train, mnist.x_test, mnist.y_test)]
        total = sum(a.size for a in arrays)

        def write_npy(f):
            np.lib.format.write_array_header_1_0(f, {"descr": "|u1", "fortran_order": False, "shape": (total,)})
            for a in arrays:
                f.write(memoryview(a).cast("B"))

        try:
            os.makedirs(self.cache.folder, exist_ok=True)
            if not self.cache.has_room(total):
                return
            for name in self.cache.names(".npy"):  # earlier versions of the same source files
                if name != self.name and (self.cache.record(name) or {}).get("source") == mnist.source:
                    self.cache.remove(name)
            self.cache.publish(
                self.name, mnist.fingerprint(), write=write_npy, source=mnist.source,
                n_train=len(mnist.x_train), n_test=len(mnist.x_test),
            )  # fmt: skip
        except OSError:
            self.cache.remove(self.name)


def _find_idx(folder, name):
    for candidate in (name + ".gz", name, name.replace("-idx", ".idx")):
        full = os.path.join(folder, candidate)
        if os.path.isfile(full):
            return full
    raise DataError(
        f"{folder}: no {name}.gz (or {name}) in this folder; it needs the four MNIST "
        f"IDX files ({', '.join(n + '.gz' for n in IDX_FILES.values())})"
    )


def _read_bytes(path, limit=-1):
    """The file's bytes (the first ``limit``, undecoded, if given), gunzipped if gzipped."""
    try:
        with open(path, "rb") as f:
            raw = f.read(limit)
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror}); check the path and permissions") from None
    if not raw:
        raise DataError(f"{path}: the file is empty; download or copy it again")
    if raw[:2] == b"\x1f\x8b" and limit < 0:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path}: corrupt or truncated gzip data ({e}); download or copy the file again") from None
    return raw


def _read_idx(path, ndim):
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: too short to be an IDX file ({len(raw)} bytes); copy it again")
    magic = int.from_bytes(raw[:4], "big")
    want = 0x0800 + ndim
    if magic != want:
        raise DataError(
            f"{path}: IDX magic number is 0x{magic:08X}, expected 0x{want:08X} "
            f"(uint8, {ndim}-D); is this the right MNIST file?"
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header; download or copy the file again")
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(raw) != expected:
        what = "truncated" if len(raw) < expected else "longer than its header says"
        raise DataError(
            f"{path}: {what}: header says {'x'.join(map(str, dims))} "
            f"({expected} bytes), file has {len(raw)} bytes; download or copy it again"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _read_npz(path):
    # a file that is not a zip archive is refused by its first bytes: NumPy takes any for a pickle
    head = _read_bytes(path, limit=8)
    if head.startswith(b"\x93NUMPY"):
        raise DataError(
            f"{path}: a single NumPy array (.npy), not an .npz archive; pass a Keras "
            "mnist.npz (x_train, y_train, x_test, y_test) or a folder of the four IDX files"
        )
    if head[:2] == b"\x1f\x8b" or head[:3] == b"\x00\x00\x08":
        raise DataError(
            f"{path}: one IDX file, not the data set; pass the folder that holds all four "
            f"({', '.join(n + '.gz' for n in IDX_FILES.values())})"
        )
    if not head.startswith(b"PK"):
        raise DataError(f"{path}: neither an .npz archive nor a folder; {HOW_TO_PASS}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in IDX_FILES if k not in npz.files]
            if missing:
                raise DataError(
                    f"{path}: missing arrays {', '.join(missing)}; a Keras mnist.npz "
                    "holds x_train, y_train, x_test and y_test"
                )
            return {k: npz[k] for k in IDX_FILES}
    except DataError:
        raise
    except Exception as e:  # zipfile.BadZipFile, zlib.error, ...: any unreadable archive
        if isinstance(e, ValueError) and "pickle" in str(e):
            raise DataError(
                f"{path}: holds pickled Python objects, which bnmnist refuses to load; "
                "use plain numeric arrays (a Keras mnist.npz)"
            ) from None
        raise DataError(
            f"{path}: not a readable .npz file ({type(e).__name__}: {e}); download or copy it again"
        ) from None


def _checked(a, source):
    for part in ("train", "test"):
        x, y = a["x_" + part], a["y_" + part]
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (28, 28):
            raise DataError(f"{source}: x_{part} is {x.dtype} {x.shape}, expected uint8 (n, 28, 28)")
        if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{source}: y_{part} is {y.dtype} {y.shape}, expected integer labels (n,)")
        if len(x) != len(y):
            raise DataError(
                f"{source}: {len(x)} {part} images but {len(y)} {part} labels; "
                "the image and label files must come from the same set"
            )
        if len(y) == 0:
            raise DataError(f"{source}: the {part} set is empty")
        if y.min() < 0 or y.max() > 9:
            raise DataError(f"{source}: {part} labels must be 0-9, found {int(y.min())}..{int(y.max())}")
    return Mnist(a["x_train"], a["y_train"].astype(np.uint8), a["x_test"], a["y_test"].astype(np.uint8), source)


def _download():
    """Keras's own download with its checksum; offline it fails with one clear line."""
    try:
        from keras.utils import get_file  # imports TensorFlow's Keras: only when downloading

        return get_file("mnist.npz", origin=KERAS_ORIGIN, file_hash=KERAS_SHA256)
    except Exception as e:  # any network, checksum or write failure
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"could not download MNIST from {KERAS_ORIGIN} ({reason[:200]}); if this machine is offline, {HOW_TO_PASS}"
        ) from None
