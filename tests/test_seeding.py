"""The TF1 seeding rule follows the architecture: checked against tf.compat.v1.layers (tf-keras)."""

import json
import os
import subprocess
import sys

import pytest

from bnmnist.config import PRESETS, Config
from bnmnist.graph import build_graph

from helpers import op_seeds

ARCHITECTURES = [
    Config(),  # the book
    PRESETS["plain"],  # glorot, leaky relu, no bn
    Config(hidden=(1200,)),  # >= 1000 units: Fill
    Config(hidden=(7, 50, 1000), initializer="glorot_uniform", activation="leaky_relu"),
    Config(hidden=(500,), batch_norm=False),
    Config(hidden=(64, 1024, 32), batch_norm=False, initializer="glorot_uniform", activation="elu"),
    # the chapter's other constructs, at the cells' sizes and at others
    *(PRESETS[p] for p in ("selu", "gradient_clipping", "l1", "l1_regularizer", "dropout", "max_norm_regularizer")),
    PRESETS["selu"].replace(hidden=(9, 1100, 40)),
    PRESETS["dropout"].replace(hidden=(1200,), dropout_rate=0.25),
    PRESETS["dropout"].replace(hidden=(30, 60, 90), activation="selu"),
    PRESETS["l1_regularizer"].replace(hidden=(5, 1000, 17)),
    PRESETS["max_norm_regularizer"].replace(hidden=(1024, 8, 8)),
    Config(hidden=(64, 32), dropout_rate=0.5),  # dropout after batch norm and ELU
]


# The fields that decide which variables and random ops the graph holds, for the reference builder.
ARCHITECTURE = (
    "n_inputs", "hidden", "n_outputs", "batch_norm", "activation", "initializer", "standardize_inputs",
    "dropout_rate", "optimizer", "decay_steps", "l1_scale", "l1_form", "max_norm", "max_norm_form",
    "stop_gradient_after", "new_layers_from",
)  # fmt: skip


def architecture(config):
    return {k: getattr(config, k) for k in ARCHITECTURE}


def test_book_seeds_need_no_tf_keras():
    assert list(op_seeds(build_graph(Config()).graph).values()) == [7, 95, 183]


@pytest.mark.slow  # a second process builds every reference graph with tf-keras
def test_seeds_match_tf1_layers_for_other_architectures():
    pytest.importorskip("tf_keras", reason="tf-keras (the dev extra) builds the reference graphs")
    archs = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in architecture(c).items()} for c in ARCHITECTURES]
    helper = os.path.join(os.path.dirname(__file__), "tf1_reference_seeds.py")
    out = subprocess.run(
        [sys.executable, helper, json.dumps(archs)], capture_output=True, text=True, timeout=300, check=True
    ).stdout
    expected = json.loads(out.strip().splitlines()[-1])
    for config, want in zip(ARCHITECTURES, expected):
        got = list(op_seeds(build_graph(config).graph).values())
        assert got == want, f"{architecture(config)}: ours {got}, TF1 layers {want}"
