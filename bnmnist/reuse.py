"""Reusing pretrained layers, in the words of the chapter's section: :func:`new_layers` on a
source's lower ones, :func:`restore_layers` matching a pattern (``scope="hidden[123]"``),
:func:`freeze` by ``var_list`` or ``tf.stop_gradient``, and :func:`cache_outputs` of a frozen
layer. The reuse presets (``--preset reuse_lower --from RUN``) run the cells with these pieces.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from . import runs
from .atomic import sha256_file
from .errors import CheckpointError, RunFolderError

if TYPE_CHECKING:
    import numpy as np

    from .config import Config


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
    return sha256_file(prefix + ".data-00000-of-00001")


def new_layers(source_config: Config, keep: int, hidden: tuple, preset: str = "reuse_lower") -> Config:
    """The book's "reuse the lower layers" network: ``source_config``'s first ``keep`` hidden layers,
    restored, then new ones of the sizes ``hidden`` and new outputs, trained without clipping."""
    kept = tuple(source_config.hidden[:keep])
    return source_config.replace(
        preset=preset,
        hidden=kept + tuple(hidden),
        restore_scope=f"hidden[{''.join(str(i) for i in range(1, keep + 1))}]",
        reuse="lower",
        clip_gradients=0.0,
    )


def freeze(config: Config, layers: tuple[str, ...], how: str = "var_list") -> Config:
    """``config`` with its lowest hidden ``layers`` frozen, by ``var_list`` or ``stop_gradient``."""
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
    """The variables whose names match ``scope`` as ``tf.get_collection(..., scope=)`` does."""
    return [v for v in variables if not scope or re.match(scope, v.op.name)]


def check_source(prefix, config):
    """Refuse a source checkpoint that lacks a variable ``config`` restores, or has another shape."""
    from . import network

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
    """The book's partial restore: the ``variables`` matching ``scope``, from ``prefix``. Returns
    their names."""
    import tensorflow as tf

    chosen = matching(variables, scope)
    if not chosen:
        layers = ", ".join(sorted({v.op.name.split("/")[0] for v in variables}))
        raise CheckpointError(f"no variable matches {scope!r}; the layers are {layers}")
    with sess.graph.as_default():  # graph mode, even in an eager notebook
        saver = tf.compat.v1.train.Saver(var_list=chosen)
        runs.restore_checkpoint(sess, saver, prefix, chosen)
    return [v.op.name for v in chosen]


def cache_outputs(sess, h, layer: str, X: np.ndarray) -> np.ndarray:
    """The caching cell's ``sess.run(hidden2, feed_dict={X: X_train})``, for ``layer``."""
    return sess.run(h.layer_outputs[layer], {h.X: X})
