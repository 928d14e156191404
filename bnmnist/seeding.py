"""TF1's op-level seeds, emulated on TF 2.x, so ``set_random_seed(42)`` gives the book's weights.

Why this exists. A random op created without an explicit seed, in a graph whose graph-level seed
is set, needs an op-level seed. TF 1.x took ``graph._last_id``: the id of the newest op in the
graph just before the random op was made (ids count 1, 2, 3, ... in creation order). In the book's
initializers that newest op is the ``stddev`` constant made right before ``TruncatedNormal``, so
``hidden1/kernel`` got op seed 7, ``hidden2/kernel`` 95 and ``outputs/kernel`` 183. TF 2.x's
``tf.compat.v1`` uses a per-graph counter (0, 1, 2, ...) instead: other weights, another table.

The rule. We build the network on core ops (``tf.compat.v1.layers`` is gone under Keras 3), and
our graph holds other ops than TF1's (resource variables, functional ``cond``), so its own ids
can't be used. A :class:`TF1OpClock` instead counts the ops TF1's ``tf.layers`` code would have
created for each construct of the architecture being built, and hands each kernel initializer the
count at the moment TF1 would have drawn its seed:

* ops we create exactly as TF1 did (the placeholders) are counted by watching our own graph grow;
* an activation is its ops: ``Elu`` (1), or ``tf.maximum(0.01 * z, z)``'s constant, ``Mul`` and
  ``Maximum`` (3);
* a variable costs its initializer's ops, then ``VariableV2``, ``Assign`` and the ``read``
  ``Identity`` (3);
* a zeros/ones initializer is one ``Const`` below 1,000 elements, else ``shape``, ``value`` and
  ``Fill`` (3), as ``array_ops.zeros``/``ones`` do;
* a truncated-normal (He) initializer makes ``shape``, ``mean`` and ``stddev`` constants, draws
  the seed, then ``TruncatedNormal``, ``Mul``, ``Add``; a uniform (Glorot) one makes ``shape``,
  ``min`` and ``max``, draws, then ``RandomUniform``, ``Sub``, ``Mul``, ``Add``;
* a dense layer is its kernel, its bias, ``MatMul`` and ``BiasAdd``; a ``kernel_regularizer``
  makes its ops right after the kernel: ``l1_regularizer``'s ``scale``, ``Abs``, the reduction
  indices, ``Sum`` and ``Mul`` (5); the chapter's ``max_norm_regularizer``, ``clip_by_norm`` (17)
  and its ``Assign`` (18);
* ``relu`` is ``Relu`` (1); the chapter's ``selu`` is ``z >= 0.0`` (2), ``alpha * elu(z)`` (3),
  ``tf.where`` (1) and ``scale *`` (2);
* ``tf.stop_gradient`` is one op;
* ``tf.layers.dropout`` with a ``training`` tensor is a ``cond`` around ``nn.dropout``: 8 ops
  before its ``RandomUniform`` draws the seed, 8 after (the random op, the mask and the merge);
* a non-fused batch-norm layer is its four variables, ``moments`` (8 ops), two ``cond`` that pick
  batch or moving statistics (7 each), two ``cond`` around the moving-average updates (13 each)
  and the normalisation arithmetic (8).

A reuse cell that imports a saved graph (``import_meta_graph``) and puts new layers on it draws
their seeds after every op of that graph: :meth:`TF1OpClock.imported_training_graph` counts the
book's saved gradient-clipping graph. Besides its network: the loss (4 ops) and the accuracy (5);
the gradients: 21 for the loss, 9 per dense layer (``BiasAddGrad``, two ``MatMul`` and their two
``tuple`` groups) and ``ReluGrad``; ``clip_by_value`` per variable (4); ``apply_gradients`` (one
op per variable, the learning rate and the group); ``global_variables_initializer`` (1); the
``Saver`` (11, and one restore ``Assign`` per variable).

These counts were read from the op sequence ``tf.compat.v1.layers`` creates under tf-keras today,
which matches TF1's with ids offset by one; ``tests/test_seeding.py`` rebuilds several other
architectures (sizes from 7 to 1,200 units, one to three hidden layers, both initializers and
activations, with and without batch norm) through tf-keras and checks every seed. With
``seeding="tf2"`` the clock hands out no seeds and TF 2.x's own counter decides.
"""

from __future__ import annotations

import contextlib

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


def constant_initializer_ops(n_elements):
    return 1 if n_elements < SMALL_CONSTANT else 3


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
        self.count(constant_initializer_ops(n_elements) + VARIABLE_OPS)

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
        """Count the graph ``import_meta_graph`` brings back from the book's gradient-clipping
        cell saved with ``source``'s architecture (relu layers, clipped gradient descent)."""
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
