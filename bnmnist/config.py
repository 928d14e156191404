"""One configuration object for a run: the book's values as defaults, validated without TensorFlow.

The command-line flags mirror these fields; each run folder keeps a copy as ``config.json`` so a
run can be resumed or restored without guessing (the architecture fields rebuild the same graph).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass

from .errors import ConfigError

ACTIVATIONS = ("elu", "leaky_relu")
INITIALIZERS = ("he", "glorot_uniform")
SEEDINGS = ("tf1", "tf2")
LOOPS = ("xla", "graph", "feed_dict")


@dataclass(frozen=True)
class Config:
    # Which of the chapter's networks these values came from ("bn" or "plain"); recorded in runs.
    preset: str = "bn"
    # 784 pixels in, 10 classes out; the book's two hidden layers in between.
    n_inputs: int = 784
    hidden: tuple = (300, 100)
    n_outputs: int = 10
    # Batch norm after every dense layer, the logits included (the book's chapter 11 cell).
    batch_norm: bool = True
    # "elu" for the bn network; "leaky_relu" is tf.maximum(0.01 * z, z) of the plain network.
    activation: str = "elu"
    # "he" = tf.variance_scaling_initializer() (TF1 defaults); "glorot_uniform" = tf.layers'
    # default kernel initializer.
    initializer: str = "he"
    # Moving averages: moving -= (moving - batch_stat) * (1 - momentum); TF1's convention.
    momentum: float = 0.9
    # Plain gradient descent, as in the book.
    learning_rate: float = 0.01
    epochs: int = 20
    batch_size: int = 200
    # Graph-level seed for tf.set_random_seed and np.random.seed, as the book's reset_graph(42).
    seed: int = 42
    # "tf1": each initializer gets the op seed TF1 derived for the book's graph (see seeding.py),
    # which reproduces the published table; "tf2": TF 2.x's own per-graph counter.
    seeding: str = "tf1"
    # "xla": whole epochs of the book's steps compiled by XLA (default; the book's table, about
    # twice as fast; last bits of the variables differ from the per-step loops, see xla_loop.py);
    # "graph": one Session call per step, batches gathered in-graph from the epoch's permutation;
    # "feed_dict": the book's own loop, one feed_dict per step (same floats as "graph").
    loop: str = "xla"
    # Saver's max_to_keep: the newest checkpoints kept in the run folder.
    keep_checkpoints: int = 5
    # (intra-op, inter-op) threads of the Session; 0 = TensorFlow's default. Speed only: the
    # float results are the same under any setting.
    threads: tuple = (1, 2)

    @property
    def layer_sizes(self):
        return (self.n_inputs, *self.hidden, self.n_outputs)

    def architecture(self):
        """The fields that decide the graph's variables; a checkpoint only fits the same ones."""
        return {k: getattr(self, k) for k in
                ("n_inputs", "hidden", "n_outputs", "batch_norm", "activation", "initializer")}

    def to_json(self):
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["threads"] = list(self.threads)
        return d

    @classmethod
    def from_json(cls, d):
        d = dict(d)
        # runs made before loop "xla" existed recorded an XLA auto-clustering switch, always off
        if d.get("xla") is False:
            del d["xla"]
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(f"unknown configuration keys {sorted(unknown)}")
        for key in ("hidden", "threads"):
            if key in d:
                d[key] = tuple(d[key])
        return cls(**d).validated()

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def validated(self, n_train=None):
        """Return self, or raise ConfigError naming the first bad value and what would be valid."""
        def positive_int(name, value):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")

        positive_int("epochs", self.epochs)
        positive_int("batch size", self.batch_size)
        positive_int("keep_checkpoints", self.keep_checkpoints)
        positive_int("n_inputs", self.n_inputs)
        positive_int("n_outputs", self.n_outputs)
        for h in self.hidden:
            positive_int("each hidden layer size", h)
        if len(self.threads) != 2 or any(isinstance(t, bool) or not isinstance(t, int) or t < 0
                                         for t in self.threads):
            raise ConfigError(f"threads must be two non-negative integers (intra, inter), got {self.threads!r}")
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
            raise ConfigError(f"learning rate must be a positive finite number, got {lr!r}")
        m = self.momentum
        if isinstance(m, bool) or not isinstance(m, (int, float)) or not (0 <= m < 1):
            raise ConfigError(f"momentum must be in [0, 1), got {m!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**31:
            raise ConfigError(f"seed must be an integer in [0, 2**31), got {self.seed!r}")
        for name, value, allowed in (("activation", self.activation, ACTIVATIONS),
                                     ("initializer", self.initializer, INITIALIZERS),
                                     ("seeding", self.seeding, SEEDINGS),
                                     ("loop", self.loop, LOOPS)):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if n_train is not None and self.batch_size > n_train:
            raise ConfigError(f"batch size {self.batch_size} is larger than the training set "
                              f"({n_train} images); use at most {n_train}")
        return self


# The chapter's two networks. "plain" is the Leaky ReLU network that batch norm is compared with.
PRESETS = {
    "bn": Config(),
    "plain": Config(preset="plain", batch_norm=False, activation="leaky_relu",
                    initializer="glorot_uniform", batch_size=50, epochs=40),
}


def load_config(path):
    try:
        with open(path, encoding="utf-8") as f:
            return Config.from_json(json.load(f))
    except (OSError, ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise ConfigError(f"{path}: {e}") from None
        raise ConfigError(f"{path} is not a readable bnmnist config ({e}); "
                          "is this a run folder made by bnmnist?") from None
