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
LOOPS = ("xla", "feed_dict")


def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive_int(v):
    return _int(v) and v >= 1


# field -> (how the command line converts its text, the rule, the rule in words)
RULES = {
    "epochs": (int, _positive_int, "a positive integer"),
    "batch_size": (int, _positive_int, "a positive integer"),
    "learning_rate": (float, lambda v: _number(v) and v > 0, "a positive finite number"),
    "momentum": (float, lambda v: _number(v) and 0 <= v < 1, "a number in [0, 1)"),
    "seed": (int, lambda v: _int(v) and 0 <= v < 2**31, "an integer in [0, 2**31)"),
    "keep_checkpoints": (int, _positive_int, "a positive integer"),
    "n_inputs": (int, _positive_int, "a positive integer"),
    "n_outputs": (int, _positive_int, "a positive integer"),
}


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
    # "xla": whole epochs of the book's steps compiled by XLA (the book's table, in less time;
    # the last bits of the variables differ from the per-step loop, see xla_loop.py);
    # "feed_dict": the book's own loop, one Session call and one feed_dict per step.
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
        return {
            k: getattr(self, k) for k in ("n_inputs", "hidden", "n_outputs", "batch_norm", "activation", "initializer")
        }

    def to_json(self):
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        d["threads"] = list(self.threads)
        return d

    @classmethod
    def from_json(cls, d):
        d = dict(d)
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
        """Return self, or raise ConfigError naming the first bad value and what would be valid.
        The only place a value is judged: the command line converts text and leaves the rest here."""
        for name, (_, valid, what) in RULES.items():
            value = getattr(self, name)
            if not valid(value):
                raise ConfigError(f"{name.replace('_', ' ')} must be {what}, got {value!r}")
        for h in self.hidden:
            if not _positive_int(h):
                raise ConfigError(f"each hidden layer size must be a positive integer, got {h!r}")
        if len(self.threads) != 2 or not all(_int(t) and t >= 0 for t in self.threads):
            raise ConfigError(f"threads must be two non-negative integers (intra, inter), got {self.threads!r}")
        for name, value, allowed in (
            ("activation", self.activation, ACTIVATIONS),
            ("initializer", self.initializer, INITIALIZERS),
            ("seeding", self.seeding, SEEDINGS),
            ("loop", self.loop, LOOPS),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
        if n_train is not None and self.batch_size > n_train:
            raise ConfigError(
                f"batch size {self.batch_size} is larger than the training set "
                f"({n_train} images); use at most {n_train}"
            )
        return self


# The chapter's two networks. "plain" is the Leaky ReLU network that batch norm is compared with.
PRESETS = {
    "bn": Config(),
    "plain": Config(
        preset="plain",
        batch_norm=False,
        activation="leaky_relu",
        initializer="glorot_uniform",
        batch_size=50,
        epochs=40,
    ),
}


def load_config(path):
    try:
        with open(path, encoding="utf-8") as f:
            return Config.from_json(json.load(f))
    except (OSError, ValueError, TypeError) as e:
        if isinstance(e, ConfigError):
            raise ConfigError(f"{path}: {e}") from None
        raise ConfigError(
            f"{path} is not a readable bnmnist config ({e}); is this a run folder made by bnmnist?"
        ) from None
