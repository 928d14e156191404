"""Reusing pretrained layers, in the vocabulary of the chapter's section of that name.

A network grows from a trained run the way the book's cells grow it:

* :func:`new_layers`: the source network's lower layers, with new layers on top (the book keeps
  ``hidden1``-``hidden3`` of the gradient-clipping network and adds a 20-unit ``hidden4``);
* :func:`restore_layers`: restore only the variables whose names match a pattern, the book's
  ``tf.train.Saver(tf.get_collection(GLOBAL_VARIABLES, scope="hidden[123]"))``;
* :func:`freeze`: keep layers from training, through the optimizer's ``var_list`` or
  ``tf.stop_gradient``;
* :func:`cache_outputs`: a frozen layer's outputs, computed once to train the layers above on.

``python scripts/train.py --preset reuse_lower --from RUN`` and the other reuse presets run the
chapter's cells with these pieces. Only ``reuse_model`` and ``reuse_lower_imported``, as their
cells, import a graph from a file: the ``.meta`` file the user's own source run wrote.
"""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING

from . import runs
from .errors import CheckpointError, RunFolderError

if TYPE_CHECKING:
    import numpy as np

    from .config import Config

# source() and sha256() run before TensorFlow loads (the command line's checks); the rest
# imports the TensorFlow-side modules when called.


def source(path: str, logdir: str = "tf_logs", preset: str | None = None) -> tuple[str, Config]:
    """``(prefix, config)`` of the trained run to start from: a run folder, one of its
    checkpoints, or ``"latest"`` (the newest of ``preset``, when given). A dry run is refused:
    its weights saw two steps."""
    if path == "latest" and preset:
        path = runs.latest_run(logdir, preset)
    run_dir, prefix, config = runs.resolve(path, logdir)
    if (runs.read_results(run_dir) or {}).get("dry_run"):
        raise RunFolderError(f"{run_dir} is a dry run (two steps); reuse a fully trained run")
    return prefix, config


def sha256(prefix: str) -> str:
    """SHA-256 of a checkpoint's data file, recorded by the run that reuses it."""
    digest = hashlib.sha256()
    with open(prefix + ".data-00000-of-00001", "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def new_layers(source_config: Config, keep: int, hidden: tuple, preset: str = "reuse_lower") -> Config:
    """The book's "reuse the lower layers" network: ``source_config``'s first ``keep`` hidden
    layers, restored from the source (``hidden[123]`` for 3), then new hidden layers of the sizes
    ``hidden`` and new outputs, trained by plain gradient descent (no clipping) as the cell does."""
    kept = tuple(source_config.hidden[:keep])
    return source_config.replace(
        preset=preset,
        hidden=kept + tuple(hidden),
        restore_scope=f"hidden[{''.join(str(i) for i in range(1, keep + 1))}]",
        reuse="lower",
        clip_gradients=0.0,
    )


def freeze(config: Config, layers: tuple[str, ...], how: str = "var_list") -> Config:
    """``config`` with the hidden layers ``layers`` (``("hidden1", "hidden2")``, the lowest ones)
    frozen: left out of the optimizer's ``var_list``, or below a ``tf.stop_gradient``."""
    from . import network

    names = [layer.dense for layer in network.layers(config)]
    if list(layers) != names[: len(layers)]:
        raise ValueError(f"freeze the lowest layers, in order ({', '.join(names[:2])}, ...); got {list(layers)}")
    if how == "stop_gradient":
        return config.replace(stop_gradient_after=layers[-1], reuse="freeze_stop_gradient")
    if how != "var_list":
        raise ValueError(f"how must be 'var_list' or 'stop_gradient', got {how!r}")
    rest = names[len(layers) : -1]
    digits = "".join(name[len("hidden") :] for name in rest)
    scope = "|".join(([f"hidden[{digits}]"] if digits else []) + ["outputs"])
    return config.replace(train_scope=scope, reuse="freeze_var_list")


def matching(variables, scope):
    """The variables whose names match ``scope`` as ``tf.get_collection(..., scope=)`` matches:
    ``re.match`` from the start of the name; every one for an empty scope."""
    return [v for v in variables if not scope or re.match(scope, v.op.name)]


def check_source(prefix, config):
    """Refuse, in one line naming the layer and both shapes, a source checkpoint that lacks a
    variable ``config`` restores from it or holds it in another shape."""
    from . import network, runs

    stored = runs.stored_shapes(prefix)
    shapes = network.variable_shapes(config)
    for name in [n for n in shapes if not config.restore_scope or re.match(config.restore_scope, n)]:
        if name not in stored:
            raise CheckpointError(f"{prefix} has no {name}: the source run has no layer {name.split('/')[0]}")
        if list(stored[name]) != list(shapes[name]):
            raise CheckpointError(
                f"{prefix}: {name} is {list(stored[name])} there but this network needs {list(shapes[name])}; "
                "reuse a run with the same lower layers"
            )


def restore_layers(sess, prefix: str, variables: list, scope: str = "hidden[123]") -> list[str]:
    """Restore the ``variables`` whose names match ``scope`` from the checkpoint ``prefix``, the
    rest staying as initialised: the book's partial restore. Returns the restored names."""
    import tensorflow as tf

    from . import runs

    chosen = matching(variables, scope)
    if not chosen:
        raise CheckpointError(f"no variable matches {scope!r}; the layers are {network_names(variables)}")
    with sess.graph.as_default():  # graph mode, even in an eager notebook
        saver = tf.compat.v1.train.Saver(var_list=chosen)
        runs.restore_checkpoint(sess, saver, prefix, chosen)
    return [v.op.name for v in chosen]


def network_names(variables):
    return ", ".join(sorted({v.op.name.split("/")[0] for v in variables}))


def cache_outputs(sess, h, layer: str, X: np.ndarray) -> np.ndarray:
    """``layer``'s outputs (``"hidden2"``) for the inputs ``X``, in one Session call, as the
    caching cell computes them: ``sess.run(hidden2, feed_dict={X: X_train})``."""
    return sess.run(h.layer_outputs[layer], {h.X: X})
