"""The benchmark refuses what it could not finish with before it spends minutes measuring."""

import os
import subprocess
import sys

import pytest

from helpers import ROOT

BENCH = os.path.join(ROOT, "benchmarks", "bench.py")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--markdown", "{tmp}"], "cannot write --markdown"),
        (["--baseline", "{tmp}"], "is not a checkout of bnmnist"),
    ],
)
def test_bench_refuses_an_unwritable_markdown_or_a_wrong_baseline_in_one_line_before_measuring(
    flags, message, tiny_mnist, tmp_path
):
    flags = [f.format(tmp=tmp_path) for f in flags]
    p = subprocess.run([sys.executable, BENCH, "--data", tiny_mnist, *flags], capture_output=True, text=True)
    assert p.returncode != 0 and message in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and "Traceback" not in p.stderr
    assert not any(tmp_path.iterdir())  # nothing measured, nothing written
