"""TF1's op seeds on TF 2.x. The rule: in a graph with a seed, TF 1.x gave a random op made
without its own seed the op seed ``graph._last_id``, the number of ops in the graph then; TF 2.x
counts random ops instead, so ``set_random_seed(42)`` draws other weights.

* bnmnist's graphs hold other ops than TF1's, so :class:`TF1OpClock` counts the ops TF1's
  ``tf.layers`` code made for each construct and hands each initializer and dropout its seed.
* The book's own code gets the rule from :data:`tf1_seeds`, which patches the function every
  random op asks for its seeds.
* The shuffling is NumPy's ``RandomState(seed)``, saved in every checkpoint; dropout's streams live
  in the Session, so a resume replays them (``TrainingSession._replay_dropout``).
"""

from __future__ import annotations

import contextlib
import os

from .errors import BnmnistError

VARIABLE_OPS = 3  # VariableV2, Assign, read Identity
SMALL_CONSTANT = 1000  # array_ops.zeros/ones make a single Const below this many elements
# ops an initializer creates before drawing its seed, and after (the random op and its scaling)
RANDOM_INITIALIZER_OPS = {"he": (3, 3), "glorot_uniform": (3, 4)}
DENSE_OPS = 2  # MatMul, BiasAdd
BATCH_NORM_OPS = 8 + 2 * 7 + 2 * 13 + 8
# ops an activation adds: Elu; the Const 0.01, Mul and Maximum of tf.maximum(0.01 * z, z); Relu;
# the chapter's selu(): Const 0.0, GreaterEqual, Elu, Const alpha, Mul, Select, Const scale, Mul
ACTIVATION_OPS = {"elu": 1, "leaky_relu": 3, "relu": 1, "selu": 8}
# a kernel_regularizer's ops, made between the kernel and the bias
REGULARIZER_OPS = {"l1": 5, "max_norm": 18}
DROPOUT_OPS = (8, 8)  # the dropout cond's ops before its random op draws the seed, and after
STOP_GRADIENT_OPS = 1
# the rest of the book's saved gradient-clipping graph, after its network (see imported_training_graph)
LOSS_OPS, EVAL_OPS, INIT_OPS = 4, 5, 1
GRADIENT_OPS = {"loss": 21, "dense": 9, "relu": 1}
CLIP_BY_VALUE_OPS = 4  # per variable: the two bounds, Minimum, Maximum
APPLY_OPS = (1, 2)  # per variable, and once (the learning rate, the group)
SAVER_OPS = (1, 11)  # per variable, and once


class TF1OpClock:
    """Counts the ops TF1 would hold in the graph the book's code builds; hands out op seeds."""

    def __init__(self, graph, seeding="tf1"):
        self.graph = graph
        self.seeding = seeding
        self.last_id = 0  # TF1 ids count from 1: the newest op's id is the op count
        self.seeds = {}  # variable name -> op seed handed out (None under "tf2")

    def count(self, n_ops):
        self.last_id += n_ops

    @contextlib.contextmanager
    def same_as_tf1(self):
        """Ops created in this block are the very ops TF1 created: count them as they appear."""
        before = len(self.graph.get_operations())
        yield
        self.count(len(self.graph.get_operations()) - before)

    def random_variable(self, name, initializer):
        """Op seed for a randomly initialised variable (``None`` under TF 2.x seeding)."""
        before, after = RANDOM_INITIALIZER_OPS[initializer]
        self.count(before)
        seed = self.last_id if self.seeding == "tf1" else None
        self.count(after + VARIABLE_OPS)
        self.seeds[name] = seed
        return seed

    def constant_variable(self, n_elements):
        self.count((1 if n_elements < SMALL_CONSTANT else 3) + VARIABLE_OPS)

    def dense(self, name, units, initializer, regularizer=None):
        seed = self.random_variable(name + "/kernel", initializer)
        if regularizer:
            self.count(REGULARIZER_OPS[regularizer])
        self.constant_variable(units)
        self.count(DENSE_OPS)
        return seed

    def activation(self, kind):
        self.count(ACTIVATION_OPS[kind])

    def imported_training_graph(self, source):
        """Count the graph ``import_meta_graph`` brings back from the gradient-clipping cell's run."""
        self.count(2)  # X, y
        sizes = (*source.hidden, source.n_outputs)
        for i, units in enumerate(sizes):
            self.random_variable(f"source/layer{i}", source.initializer)
            self.constant_variable(units)
            self.count(DENSE_OPS)
            if i < len(sizes) - 1:
                self.activation(source.activation)
        n_variables = 2 * len(sizes)
        hidden_grads = (len(sizes) - 1) * GRADIENT_OPS[source.activation]
        self.count(LOSS_OPS + EVAL_OPS + GRADIENT_OPS["loss"] + len(sizes) * GRADIENT_OPS["dense"] + hidden_grads)
        self.count(CLIP_BY_VALUE_OPS * n_variables + APPLY_OPS[0] * n_variables + APPLY_OPS[1])
        self.count(INIT_OPS + SAVER_OPS[0] * n_variables + SAVER_OPS[1])
        self.seeds = {}  # the source's own seeds are not this graph's business

    def stop_gradient(self):
        self.count(STOP_GRADIENT_OPS)

    def dropout(self, name):
        """Op seed for the random op of the dropout layer ``name``."""
        before, after = DROPOUT_OPS
        self.count(before)
        self.seeds[name] = seed = self.last_id if self.seeding == "tf1" else None
        self.count(after)
        return seed

    def batch_norm(self, units):
        for _ in ("gamma", "beta", "moving_mean", "moving_variance"):
            self.constant_variable(units)
        self.count(BATCH_NORM_OPS)


# The book's own code: the rule through TensorFlow's seed function.
PATCH_POINT = "tensorflow.python.framework.random_seed.get_seed"
_installed = {}  # "original": TensorFlow's get_seed while the patch is in place


class TF1SeedsError(BnmnistError, RuntimeError):
    """TF1's seeds cannot be given here (a TensorFlow without the patch point, resource variables)."""


def _random_seed_module():
    import tensorflow as tf

    try:
        from tensorflow.python.framework import random_seed
    except ImportError:
        random_seed = None
    if not callable(getattr(random_seed, "get_seed", None)):
        raise TF1SeedsError(
            f"TensorFlow {tf.__version__} has no {PATCH_POINT}, the function "
            "tf1_seeds replaces; TF1's seeds cannot be given on this version"
        )
    return tf, random_seed


def _tf1_op_seed(tf):
    """TF1's op seed for a random op about to be made without one; None where TF 2.x's rule applies."""
    graph = None if tf.executing_eagerly() else tf.compat.v1.get_default_graph()
    if graph is None or graph.seed is None:
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
            f"TensorFlow {tf.__version__}: random ops no longer take their seeds from {PATCH_POINT} (a test op "
            f"took op seed {taken}, the patch gave {given[-1] if given else 'none'}); TF1's seeds cannot be given "
            "on this version"
        )


def enable() -> None:
    """Give graphs built from now on TF1's op seeds. Raises :class:`TF1SeedsError` if the
    installed TensorFlow lacks what the patch relies on."""
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

    get_seed.__doc__ = f"{PATCH_POINT} with TF1's op seeds (bnmnist.seeds)."
    random_seed.get_seed = get_seed
    _installed["original"] = original


def disable() -> None:
    """Back to TF 2.x's op seeds for graphs built from now on."""
    original = _installed.pop("original", None)
    if original is not None:
        from tensorflow.python.framework import random_seed

        random_seed.get_seed = original


def enabled() -> bool:
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
