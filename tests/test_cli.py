"""The command line, in-process and fast: every bad flag is one line and exit 2, before TensorFlow;
the help text and python -m bnmnist."""

import subprocess
import sys

import pytest

from bnmnist import cli
from bnmnist.config import PRESETS, RULES, RUN_FIELDS, Config, Run
from bnmnist.errors import ConfigError

from helpers import ROOT, bad_flag_cases


def test_every_bad_flag_is_refused_in_one_line_with_exit_2(tiny_mnist, tmp_path, capsys):
    for name, args, needle in bad_flag_cases(tiny_mnist):
        assert cli.main([*args, "--logdir", str(tmp_path / "logs")]) == 2, name
        out, err = capsys.readouterr()
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("bnmnist-train: error: ") and needle in lines[0], (name, err)
        assert out == ""
    assert not (tmp_path / "logs").exists()  # nothing was made


def test_config_is_the_one_judge_of_values_and_the_flags_use_its_words():
    for name, (_, valid, _what) in RULES.items():
        assert valid(Config().value(name)), name
    with pytest.raises(ConfigError, match=r"momentum must be a number in \[0, 1\), got 1.0"):
        Config(momentum=1.0).validated()
    with pytest.raises(ConfigError, match="learning rate must be a positive finite number"):
        Config(learning_rate=float("nan")).validated()


def test_config_keeps_the_cell_apart_from_how_it_is_run():
    cell = PRESETS["gradient_clipping"]
    assert cell.run == Run(loop="feed_dict", threads=(0, 0)) and not set(RUN_FIELDS) & set(vars(cell))
    changed = cell.replace(loop="xla", threads=(1, 1), epochs=3)
    assert changed.run == Run(loop="xla", threads=(1, 1)) and changed.epochs == 3 and cell.run.loop == "feed_dict"
    saved = changed.to_json()
    assert saved["run"] == {"loop": "xla", "threads": [1, 1], "keep_checkpoints": 5} and "loop" not in saved
    assert Config.from_json(saved) == changed
    flat = {k: v for k, v in saved.items() if k != "run"} | saved["run"]  # a run folder from before the split
    assert Config.from_json(flat) == changed
    with pytest.raises(ConfigError, match="unknown configuration keys"):
        Config.from_json(saved | {"run": saved["run"] | {"speed": 1}})


def test_help_shows_each_default_and_every_preset_that_differs():
    text = cli.build_parser().format_help().replace("\n", " ")
    text = " ".join(text.split())
    for flag, field in (("--epochs", "epochs"), ("--batch-size", "batch_size"), ("--learning-rate", "learning_rate")):
        assert f"default: {getattr(PRESETS['bn'], field)}" in text, flag
    assert f"{PRESETS['plain'].epochs} for plain" in text and f"{PRESETS['plain'].batch_size} for plain" in text
    assert "0,0 for gradient_clipping" in text and "feed_dict for gradient_clipping" in text


def test_python_dash_m_bnmnist_is_the_same_program():
    p = subprocess.run([sys.executable, "-m", "bnmnist", "--epochs", "0"], capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 2 and p.stderr.startswith("bnmnist-train: error: ") and "positive integer" in p.stderr
    help_text = subprocess.run([sys.executable, "-m", "bnmnist", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert help_text.stdout == cli.build_parser().format_help()


def test_hidden_sets_the_layer_sizes_of_any_preset():
    args = cli.build_parser().parse_args(["--preset", "dropout", "--hidden", "300,100"])
    cfg = cli.config_from_args(args)
    assert cfg.hidden == (300, 100) and cfg.dropout_rate == PRESETS["dropout"].dropout_rate
    assert cli.config_from_args(cli.build_parser().parse_args(["--preset", "dropout"])).hidden == (300, 50)
