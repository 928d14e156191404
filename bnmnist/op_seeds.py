"""``bnmnist.tf1_seeds()``: TF1's op-level seeds for the book's own TF1 code on TF 2.x.

The rule. In a graph with a graph-level seed (``tf.set_random_seed(42)``), TF 1.x gave a random
op made without a seed of its own the op seed ``graph._last_id``: the number of ops in the graph
at that moment. TF 2.x's ``tf.compat.v1`` counts random ops instead (0, 1, 2, ...), so the book's
cells draw other initial weights and print other tables. Graphs built inside ``tf1_seeds()`` get
TF1's op seeds again.

The patch point is one function, ``tensorflow.python.framework.random_seed.get_seed``, which every
random op of TF's Python API (initializers, dropout, ``tf.random_*``) calls for its seeds. Only the
case above changes; explicit op seeds, graphs without a graph-level seed, and eager code keep
TF 2.x's seeds. Before patching, a self-test builds a small graph and checks that a random op took
the seed the patch handed out, so a TensorFlow that no longer routes seeds through that function
is refused instead of silently giving other seeds.

TF1's op counts need TF1's ops: ``tf.layers`` from tf-keras's legacy layers (the ``book`` extra;
:func:`enable` sets ``TF_USE_LEGACY_KERAS=1`` for them) and ref variables
(``tf.compat.v1.disable_v2_behavior()``): a seed asked for in a graph that holds resource variables
is refused, because their extra ops would shift every later seed.

bnmnist's own graphs do not need this: :mod:`bnmnist.seeding` hands their initializers TF1's seeds
explicitly. The tests check both rules against each other, bit for bit.
"""

from __future__ import annotations

import contextlib
import os

from .errors import BnmnistError

PATCH_POINT = "tensorflow.python.framework.random_seed.get_seed"
_installed = {}  # "original": TensorFlow's get_seed while the patch is in place


class TF1SeedsError(BnmnistError, RuntimeError):
    """TF1's seeds cannot be given here (a TensorFlow without the patch point, resource variables)."""


def _random_seed_module():
    import tensorflow as tf

    try:
        from tensorflow.python.framework import random_seed
    except ImportError as e:
        raise TF1SeedsError(
            f"TensorFlow {tf.__version__} has no tensorflow.python.framework."
            f"random_seed ({e}); TF1's seeds cannot be given on this version"
        ) from None
    if not callable(getattr(random_seed, "get_seed", None)):
        raise TF1SeedsError(
            f"TensorFlow {tf.__version__} has no {PATCH_POINT}, the function "
            "tf1_seeds replaces; TF1's seeds cannot be given on this version"
        )
    return tf, random_seed


def _tf1_op_seed(tf):
    """TF1's op seed for a random op about to be made without one, or None when TF 2.x's rule
    applies (eager code, no graph-level seed)."""
    if tf.executing_eagerly():
        return None
    graph = tf.compat.v1.get_default_graph()
    if graph.seed is None:
        return None
    return len(graph.get_operations())  # TF1: graph._last_id, ids counting from 1


def _self_test(tf, random_seed, original):
    """A random op in a seeded graph must carry the op seed the patch handed out."""
    given = []

    def recording(op_seed):
        seed = _tf1_op_seed(tf) if op_seed is None else None
        given.append(seed)
        return original(seed if seed is not None else op_seed)

    random_seed.get_seed = recording
    try:
        with tf.Graph().as_default():
            tf.compat.v1.set_random_seed(1)
            for _ in range(3):
                tf.constant(0.0)
            op = tf.compat.v1.random_uniform([1]).op
    finally:
        random_seed.get_seed = original
    taken = op.get_attr("seed2")
    if not given or given[-1] is None or taken != given[-1]:
        raise TF1SeedsError(
            f"TensorFlow {tf.__version__}: random ops no longer take their seeds "
            f"from {PATCH_POINT} (a test op took op seed {taken}, the patch gave "
            f"{given[-1] if given else 'none'}); TF1's seeds cannot be given on this "
            "version"
        )


def enable():
    """Give graphs built from now on TF1's op seeds (see the module docstring); for notebooks.
    Raises :class:`TF1SeedsError` if the installed TensorFlow lacks what the patch relies on."""
    if _installed:
        return
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # tf.layers from tf-keras: TF1's ops
    tf, random_seed = _random_seed_module()
    original = random_seed.get_seed
    _self_test(tf, random_seed, original)

    def get_seed(op_seed):
        seed = _tf1_op_seed(tf) if op_seed is None else None
        if seed is None:
            return original(op_seed)
        graph = tf.compat.v1.get_default_graph()
        if any(op.type == "VarHandleOp" for op in graph.get_operations()):
            raise TF1SeedsError(
                "tf1_seeds: this graph holds resource variables, whose extra ops "
                "shift TF1's op seeds; call tf.compat.v1.disable_v2_behavior() "
                "before building the graph, as TF1 code on TF 2.x needs"
            )
        return original(seed)

    get_seed.__doc__ = f"{PATCH_POINT} with TF1's op seeds (bnmnist.op_seeds)."
    random_seed.get_seed = get_seed
    _installed["original"] = original


def disable():
    """Back to TF 2.x's op seeds for graphs built from now on."""
    original = _installed.pop("original", None)
    if original is not None:
        from tensorflow.python.framework import random_seed

        random_seed.get_seed = original


def enabled():
    return bool(_installed)


class _TF1Seeds:
    """``with bnmnist.tf1_seeds(): ...`` builds graphs with TF1's op seeds;
    ``bnmnist.tf1_seeds.enable()`` / ``.disable()`` do the same for a whole notebook."""

    enable = staticmethod(enable)
    disable = staticmethod(disable)
    enabled = staticmethod(enabled)

    @contextlib.contextmanager
    def __call__(self):
        was_enabled = enabled()
        enable()
        try:
            yield
        finally:
            if not was_enabled:
                disable()

    def __repr__(self):
        return f"<bnmnist.tf1_seeds ({'enabled' if enabled() else 'disabled'})>"


tf1_seeds = _TF1Seeds()
