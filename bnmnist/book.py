"""The first edition's notebooks, Run All, on TF 2.x: ``%load_ext bnmnist.book`` as their first line.

It gives the book's TF1 code what TF 1.x gave it, piece by piece (:data:`PIECES`), each exact:
TF1's op seeds (:mod:`bnmnist.seeds`); ``import tensorflow as tf`` in the notebook's cells and in
the modules of its folder bound to ``tensorflow.compat.v1`` in graph mode; the ``tf.contrib``
names the chapters use, built op for op as TF 1.x built them; TF 1.x's ``input_data`` MNIST
reader; the NumPy names NumPy removed; and ``keras.datasets.mnist.load_data()`` served from
``BNMNIST_DATA`` for offline readers. Importing this module changes nothing; :func:`enable` does,
and :func:`disable` undoes what it can. docs/book.md lists what the notebooks need beyond it.
"""

from __future__ import annotations

import importlib.machinery
import importlib.metadata
import importlib.util
import os
import re
import sys
import types

from . import seeds
from .data import ENV_VAR
from .errors import BnmnistError

SUPPORTED_TF = ((2, 20), (2, 21))  # the versions pyproject.toml allows and the suite runs on
PIECES = ("tf1_seeds", "tf1_import", "contrib", "input_data", "numpy_names", "mnist")
INPUT_DATA = "tensorflow.examples.tutorials.mnist"  # TF 1.x's MNIST reader, which chapters 13-16 use
# Aliases NumPy removed (in 2.0; np.int and the other builtins in 1.24), each the very object it
# named: a NumPy name, or a Python builtin.
NUMPY_NAMES = {
    "infty": "inf", "Inf": "inf", "Infinity": "inf", "PINF": "inf", "NaN": "nan", "NAN": "nan",
    "float_": "float64", "complex_": "complex128", "unicode_": "str_", "string_": "bytes_",
    "int": int, "float": float, "bool": bool, "object": object, "str": str, "complex": complex,
}  # fmt: skip
_TF1_IMPORT = re.compile(r"^(\s*)import\s+tensorflow\s+as\s+tf\b(?!\.)")
_on = {}  # piece -> what enable() did, for status() and disable()


class BookError(BnmnistError, RuntimeError):
    """The book's environment cannot be set up here; one line says why and what to do."""

    def _render_traceback_(self):  # IPython shows this line instead of a traceback
        return [f"bnmnist.book: {self}"]


def tf1_source(text: str) -> str:
    """``text`` with each ``import tensorflow as tf`` line binding ``tensorflow.compat.v1``."""
    return "".join(_TF1_IMPORT.sub(r"\1import tensorflow.compat.v1 as tf", line) for line in text.splitlines(True))


def _tf1_cell(lines):  # an IPython input transformer: a cell's lines in, its lines out
    return tf1_source("".join(lines)).splitlines(True)


class _TF1Loader(importlib.machinery.SourceFileLoader):
    """Loads a module of the notebook's folder with :func:`tf1_source`, never from or into its
    bytecode cache, so the same file imported without the book is left as it was written."""

    def get_code(self, fullname):
        return compile(tf1_source(self.get_source(fullname)), self.path, "exec", dont_inherit=True)


class _TF1Finder:
    """Finds the modules of one folder (the notebook's) for :class:`_TF1Loader`; no other."""

    def __init__(self, folder):
        self.folder = os.path.realpath(folder)

    def find_spec(self, fullname, path=None, target=None):  # noqa: ARG002 (the finder protocol)
        where = [self.folder] if path is None else [p for p in path if _inside(os.path.realpath(p), self.folder)]
        spec = importlib.machinery.PathFinder.find_spec(fullname, where) if where else None
        if spec is None or not (spec.origin or "").endswith(".py"):
            return None
        spec.loader = _TF1Loader(fullname, spec.origin)
        return spec


def _inside(path, folder):
    return path == folder or path.startswith(folder + os.sep)


def _check_tensorflow(namespace):
    try:
        version = importlib.metadata.version("tensorflow")
    except importlib.metadata.PackageNotFoundError:
        raise BookError("TensorFlow is not installed; pip install 'bnmnist[book]'") from None
    if tuple(int(p) for p in re.findall(r"\d+", version)[:2]) not in SUPPORTED_TF:
        wanted = " or ".join(".".join(map(str, v)) for v in SUPPORTED_TF)
        raise BookError(f"TensorFlow {version} is not supported (it needs {wanted}); pip install 'bnmnist[book]'")
    if importlib.util.find_spec("tf_keras") is None:
        raise BookError("the book's tf.layers need tf-keras, which is not installed; pip install 'bnmnist[book]'")
    tf = sys.modules.get("tensorflow")
    if tf is not None and any(value is tf for value in namespace.values()):
        raise BookError(
            "TensorFlow was imported before bnmnist.book, with TF 2's API; restart the kernel and "
            "make %load_ext bnmnist.book (or bnmnist.book.enable()) the first line"
        )


def _mnist_path(data):
    path = data or os.environ.get(ENV_VAR)
    if path and not os.path.exists(path):
        what = "the data path given to enable()" if data else f"{ENV_VAR}"
        raise BookError(f"{path} ({what}) does not exist; point it at the four MNIST IDX files or a mnist.npz")
    return path


def _contrib(tf1):
    from .network import l1_regularizer

    contrib = types.ModuleType("tensorflow.contrib", "TF 1.x's tf.contrib names the book uses (bnmnist.book).")
    contrib.layers = types.SimpleNamespace(
        l1_regularizer=l1_regularizer,
        l2_regularizer=_l2_regularizer(tf1),
        variance_scaling_initializer=_variance_scaling_initializer(tf1),
    )
    return contrib


def _l2_regularizer(tf1):
    def l2_regularizer(scale, scope=None):
        """TF 1.x's ``tf.contrib.layers.l2_regularizer``, op for op: ``scale * l2_loss(weights)``."""

        def l2(weights):
            with tf1.name_scope(scope, "l2_regularizer", [weights]) as name:
                my_scale = tf1.convert_to_tensor(scale, dtype=weights.dtype.base_dtype, name="scale")
                return tf1.multiply(my_scale, tf1.nn.l2_loss(weights), name=name)

        return l2

    return l2_regularizer


def _variance_scaling_initializer(tf1):
    def variance_scaling_initializer(factor=2.0, mode="FAN_IN", uniform=False, seed=None, dtype=tf1.float32):
        """TF 1.x's ``tf.contrib.layers.variance_scaling_initializer``: He initialisation, with
        the truncated normal's standard deviation ``sqrt(1.3 * factor / n)``, op for op."""
        if mode not in ("FAN_IN", "FAN_OUT", "FAN_AVG"):
            raise TypeError(f"Unknown mode {mode} [FAN_IN, FAN_OUT, FAN_AVG]")

        def initializer(shape, dtype=dtype, partition_info=None):  # noqa: ARG001 (TF1's signature)
            fan_in = float(shape[-2]) if len(shape) > 1 else float(shape[-1]) if shape else 1.0
            fan_out = float(shape[-1]) if shape else 1.0
            for dim in shape[:-2]:
                fan_in, fan_out = fan_in * float(dim), fan_out * float(dim)
            n = {"FAN_IN": fan_in, "FAN_OUT": fan_out, "FAN_AVG": (fan_in + fan_out) / 2.0}[mode]
            if uniform:
                limit = (3.0 * factor / n) ** 0.5
                return tf1.random_uniform(shape, -limit, limit, dtype, seed=seed)
            return tf1.truncated_normal(shape, 0.0, (1.3 * factor / n) ** 0.5, dtype, seed=seed)

        return initializer

    return variance_scaling_initializer


class DataSet:
    """TF 1.x's ``input_data`` data set, its NumPy calls in its order: images scaled by
    ``1.0 / 255.0`` and flattened, shuffled by ``numpy.random`` at each epoch's start."""

    def __init__(self, images, labels, dtype=None, reshape=True, seed=None):
        import numpy as np
        from tensorflow.python.framework import random_seed

        seed1, seed2 = random_seed.get_seed(seed)
        np.random.seed(seed1 if seed is None else seed2)
        self._num_examples = images.shape[0]
        if reshape:
            images = images.reshape(images.shape[0], images.shape[1] * images.shape[2])
        if dtype is None or getattr(dtype, "name", dtype) == "float32":
            images = np.multiply(images.astype(np.float32), 1.0 / 255.0)
        self._images, self._labels = images, labels
        self._epochs_completed = self._index_in_epoch = 0

    images = property(lambda self: self._images)
    labels = property(lambda self: self._labels)
    num_examples = property(lambda self: self._num_examples)
    epochs_completed = property(lambda self: self._epochs_completed)

    def next_batch(self, batch_size, fake_data=False, shuffle=True):  # noqa: ARG002 (TF1's signature)
        import numpy as np

        start = self._index_in_epoch
        if self._epochs_completed == 0 and start == 0 and shuffle:
            self._shuffle(np)
        if start + batch_size <= self._num_examples:
            self._index_in_epoch += batch_size
            return self._images[start : self._index_in_epoch], self._labels[start : self._index_in_epoch]
        self._epochs_completed += 1
        rest = self._images[start:], self._labels[start:]
        if shuffle:
            self._shuffle(np)
        self._index_in_epoch = end = batch_size - len(rest[0])
        return np.concatenate((rest[0], self._images[:end])), np.concatenate((rest[1], self._labels[:end]))

    def _shuffle(self, np):
        perm = np.arange(self._num_examples)
        np.random.shuffle(perm)
        self._images, self._labels = self._images[perm], self._labels[perm]


def _read_data_sets(path):
    def read_data_sets(  # TF1's signature; fake data and downloads from source_url are not offered
        train_dir,
        fake_data=False,  # noqa: ARG001
        one_hot=False,
        dtype=None,
        reshape=True,
        validation_size=5000,
        seed=None,
        source_url=None,  # noqa: ARG001
    ):
        """TF 1.x's ``input_data.read_data_sets``, from the book's MNIST copy (bnmnist.book): the
        local path enable() was given, else ``train_dir`` if it holds the four files, else
        bnmnist's sources (``BNMNIST_DATA``, the Keras cache, a download)."""
        import numpy as np

        from . import data

        local = path or (train_dir if _has_idx(train_dir) else None)
        mnist = data.load(local)
        x_train, y_train = mnist.x_train[..., None], mnist.y_train
        if not 0 <= validation_size <= len(x_train):
            raise ValueError(f"Validation size should be between 0 and {len(x_train)}. Received: {validation_size}.")

        def labels(y):
            return np.eye(10)[y] if one_hot else y

        options = dict(dtype=dtype, reshape=reshape, seed=seed)
        return types.SimpleNamespace(
            train=DataSet(x_train[validation_size:], labels(y_train[validation_size:]), **options),
            validation=DataSet(x_train[:validation_size], labels(y_train[:validation_size]), **options),
            test=DataSet(mnist.x_test[..., None], labels(mnist.y_test), **options),
        )

    return read_data_sets


def _has_idx(folder):
    from .data import IDX_FILES

    return all(os.path.exists(os.path.join(folder, name + ".gz")) for name in IDX_FILES.values())


def _input_data_modules(path):
    """``tensorflow.examples.tutorials.mnist`` and its ``input_data``, as importable modules."""
    names = ["tensorflow.examples", "tensorflow.examples.tutorials", INPUT_DATA, INPUT_DATA + ".input_data"]
    modules = {name: types.ModuleType(name, "TF 1.x's MNIST reader (bnmnist.book)") for name in names}
    for parent, child in zip(names, names[1:]):
        modules[parent].__path__ = []
        setattr(modules[parent], child.rsplit(".", 1)[1], modules[child])
    modules[names[-1]].read_data_sets = _read_data_sets(path)
    modules[names[-1]].DataSet = DataSet
    return modules


def _mnist_modules():
    """Keras's ``datasets.mnist`` modules whose ``load_data`` the notebooks can reach."""
    import tensorflow as tf

    tf.compat.v1.keras.datasets.mnist  # noqa: B018 (loads tf-keras's modules, as tf.keras does)
    return [m for name, m in list(sys.modules.items()) if name.endswith("datasets.mnist") and hasattr(m, "load_data")]


def _load_mnist(source):
    def load_data(path="mnist.npz"):  # noqa: ARG001 (Keras's signature; its cache is not read)
        """``keras.datasets.mnist.load_data()`` from the local MNIST copy (bnmnist.book): the same
        uint8 arrays Keras's mnist.npz holds."""
        from . import data

        mnist = data.load(source, download=False)
        return (mnist.x_train, mnist.y_train), (mnist.x_test, mnist.y_test)

    return load_data


def enable(
    folder: str | None = None,
    data: str | None = None,
    *,
    tf1_seeds: bool = True,
    tf1_import: bool = True,
    contrib: bool = True,
    input_data: bool = True,
    numpy_names: bool = True,
    mnist: bool = True,
    ipython=None,
) -> None:
    """Turn on the pieces asked for, before the book's code imports TensorFlow. ``folder`` is the
    notebook's (default: the working folder, where Jupyter runs a notebook); ``data`` is the MNIST
    copy ``load_data()`` serves (default: ``$BNMNIST_DATA``; neither: Keras's own download).
    Raises :class:`BookError` when this TensorFlow or this program cannot take them."""
    if ipython is None:
        ipython = _ipython()
    namespace = ipython.user_ns if ipython is not None else vars(sys.modules["__main__"])
    _check_tensorflow(namespace)
    path = _mnist_path(data) if mnist else None
    if tf1_seeds and "tf1_seeds" not in _on:
        seeds.enable()  # sets TF_USE_LEGACY_KERAS before TensorFlow loads: tf.layers from tf-keras
        _on["tf1_seeds"] = "TF 1.x's op seeds for graphs with a graph-level seed"
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    tf1 = tf.compat.v1
    if tf1_import and "tf1_import" not in _on:
        _quietly(tf1.disable_v2_behavior)
        finder = _TF1Finder(folder or os.getcwd())
        sys.meta_path.insert(0, finder)
        if ipython is not None:
            ipython.input_transformers_cleanup.append(_tf1_cell)
        _on["tf1_import"] = (
            f"`import tensorflow as tf` binds tensorflow.compat.v1 (graph mode) in "
            f"{'cells and ' if ipython is not None else ''}modules of {finder.folder}",
            finder,
            ipython,
        )
    if contrib and "contrib" not in _on:
        tf1.contrib = _contrib(tf1)
        names = [f"layers.{n}" for n in vars(tf1.contrib.layers)]
        _on["contrib"] = f"tf.contrib.{', '.join(names)}, as TF 1.x built them"
    if input_data and "input_data" not in _on:
        modules = _input_data_modules(path)
        sys.modules.update(modules)
        _on["input_data"] = (
            f"{INPUT_DATA}.input_data, TF 1.x's MNIST reader, reading {path or 'bnmnist.data.load()'}",
            modules,
        )
    if numpy_names and "numpy_names" not in _on:
        import numpy as np

        added = [alias for alias, target in NUMPY_NAMES.items() if alias not in vars(np)]
        for alias in added:
            target = NUMPY_NAMES[alias]
            setattr(np, alias, getattr(np, target) if isinstance(target, str) else target)
        _on["numpy_names"] = (f"np.{', np.'.join(added)} (removed in NumPy 2)" if added else "none needed", added)
    if path and "mnist" not in _on:
        patched = [(m, m.load_data) for m in _mnist_modules()]
        for module, _ in patched:
            module.load_data = _load_mnist(path)
        _on["mnist"] = (f"keras.datasets.mnist.load_data() reads {path}", patched)


def _quietly(call):
    """``call()`` without TensorFlow's deprecation notice, which a reader would take for a fault."""
    try:
        from tensorflow.python.util.deprecation import silence
    except ImportError:
        return call()
    with silence():
        return call()


def status() -> dict[str, str]:
    """Each piece and what it does now ("off" when not on)."""
    return {piece: _described(_on[piece]) if piece in _on else "off" for piece in PIECES}


def _described(done):
    return done if isinstance(done, str) else done[0]


def disable(*pieces: str) -> list[str]:
    """Turn off ``pieces`` (default: all). Returns, and prints, what cannot be undone."""
    unknown = sorted(set(pieces) - set(PIECES))
    if unknown:
        raise BookError(f"no piece named {', '.join(unknown)}; the pieces are {', '.join(PIECES)}")
    kept = []
    for piece in pieces or PIECES:
        done = _on.pop(piece, None)
        if done is None:
            continue
        if piece == "tf1_seeds":
            seeds.disable()
            kept.append("graphs built so far keep TF 1.x's op seeds")
        elif piece == "tf1_import":
            _, finder, ipython = done
            sys.meta_path.remove(finder)
            if ipython is not None and _tf1_cell in ipython.input_transformers_cleanup:
                ipython.input_transformers_cleanup.remove(_tf1_cell)
            import tensorflow as tf

            try:
                tf.compat.v1.enable_v2_behavior()
            except ValueError:  # TensorFlow goes back to eager execution only before any graph ran
                kept.append("graph mode stays on: a graph has been used (restart the kernel for TF 2's eager mode)")
            kept.append(
                "names already bound by `import tensorflow as tf` stay tensorflow.compat.v1, in the "
                "notebook and in modules imported from its folder (restart the kernel to drop them)"
            )
        elif piece == "contrib":
            import tensorflow as tf

            del tf.compat.v1.contrib
        elif piece == "input_data":
            for name in done[1]:
                sys.modules.pop(name, None)
        elif piece == "numpy_names":
            import numpy as np

            for alias in done[1]:
                delattr(np, alias)
        elif piece == "mnist":
            for module, original in done[1]:
                module.load_data = original
    for line in kept:
        print(f"bnmnist.book: {line}", file=sys.stderr)
    return kept


def _ipython():
    shell = sys.modules.get("IPython")
    return shell.get_ipython() if shell is not None and hasattr(shell, "get_ipython") else None


def load_ipython_extension(ipython) -> None:
    """``%load_ext bnmnist.book``: :func:`enable` for the notebook, every piece on."""
    enable(ipython=ipython)


def unload_ipython_extension(ipython) -> None:  # noqa: ARG001 (IPython's signature)
    disable()
