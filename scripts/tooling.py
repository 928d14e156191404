"""What the helper scripts share (chapter.py, seeds.py, plot_runs.py, export.py, kill_stress.py,
and benchmarks/bench.py): their flag parser, the notebook's printed values, learning curves,
many-seed statistics and the Markdown sections they write into docs/. No TensorFlow here."""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import re
import sys
from pathlib import Path

import numpy as np

from bnmnist import atomic, runs
from bnmnist.cli import field_type
from bnmnist.config import BOOK_TABLE
from bnmnist.errors import RunFolderError

# Each preset's training cell in the chapter's notebook (11_deep_learning.ipynb of ageron/handson-ml
# at 2d5d735e5fcc62fe3a57fdaee30abad451a62c4b), in the notebook's order: preset -> (cell index,
# section heading).
NOTEBOOK_CELLS = {
    "plain": (32, "Leaky ReLU"),
    "selu": (52, "SELU"),
    "bn": (63, "Batch Normalization"),
    "gradient_clipping": (79, "Gradient Clipping"),
    "reuse_model": (99, "Reusing a TensorFlow Model"),
    "reuse_model_rebuilt": (103, "Reusing a TensorFlow Model"),
    "reuse_lower_imported": (107, "Reusing a TensorFlow Model"),
    "reuse_lower": (111, "Reusing a TensorFlow Model"),
    "freeze_var_list": (127, "Freezing the Lower Layers"),
    "freeze_stop_gradient": (132, "Freezing the Lower Layers"),
    "cache_frozen": (136, "Caching the Frozen Layers"),
    "lr_schedule": (152, "Learning Rate Scheduling"),
    "l1": (161, "l1 and l2 regularization"),
    "l1_regularizer": (171, "l1 and l2 regularization"),
    "dropout": (177, "Dropout"),
    "max_norm": (189, "Max norm"),
    "max_norm_regularizer": (198, "Max norm"),
}
# instruction set -> (XLA_FLAGS --xla_cpu_max_isa, ONEDNN_MAX_CPU_ISA): the caps the fidelity
# checks run under, set as a user would set them; a cap above the CPU's own leaves it as it is
ISA_CAPS = {
    "AVX512": ("AVX512", "AVX512_CORE"),
    "AVX2": ("AVX2", "AVX2"),
    "AVX": ("AVX", "AVX"),
    "SSE4_2": ("SSE4_2", "SSE41"),
}


def isa_cap_env(isa):
    xla, onednn = ISA_CAPS[isa]
    return {"XLA_FLAGS": f"--xla_cpu_max_isa={xla}", "ONEDNN_MAX_CPU_ISA": onednn}


class ScriptParser(argparse.ArgumentParser):
    """The helper scripts' parser: a bad flag is one line on stderr and exit code 2."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see --help)", file=sys.stderr)
        sys.exit(2)


def positive_int(text):
    """An argparse type for the helper scripts' counts."""
    value = field_type("epochs")(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


_PRINTED = re.compile(r"^(\d+) .*?Validation accuracy: ([0-9.]+)", re.M)


def printed_text(cell):
    """A notebook cell's printed text as a reader sees it: a line ends at its last carriage return."""
    text = "".join("".join(o.get("text", "")) for o in cell.get("outputs", []) if o.get("output_type") == "stream")
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def notebook_values(notebook, cell):
    """Epoch -> the validation accuracy the notebook's ``cell`` printed, as printed (a string)."""
    try:
        with open(notebook, encoding="utf-8") as f:
            cells = json.load(f)["cells"]
        printed = printed_text(cells[cell])
    except (OSError, ValueError, KeyError, IndexError) as e:
        raise RunFolderError(f"{notebook} is not the chapter's notebook ({e}); pass 11_deep_learning.ipynb") from None
    values = {int(epoch): value for epoch, value in _PRINTED.findall(printed)}
    if not values:
        raise RunFolderError(f"cell {cell} of {notebook} printed no validation accuracy; is it chapter 11's notebook?")
    return values


def compare_with_notebook(book, printed):
    """``book``: epoch -> value the notebook printed; ``printed``: bnmnist's printed values, one per
    epoch run. Returns (epochs compared, how many exact, largest absolute difference)."""
    epochs = [e for e in sorted(book) if e < len(printed)]
    exact = sum(float(printed[e]) == float(book[e]) for e in epochs)
    largest = max((abs(float(printed[e]) - float(book[e])) for e in epochs), default=0.0)
    return epochs, exact, largest


def load_results(run_dir):
    if not runs.is_run_dir(run_dir):
        raise RunFolderError(f"{run_dir} is not a bnmnist run folder (no {runs.CONFIG_FILE})")
    results = runs.read_results(run_dir)
    if results is None:
        raise RunFolderError(
            f"{run_dir} has no readable {runs.RESULTS_FILE}: the run has not finished; "
            f"finish it with: python scripts/train.py --resume {run_dir}"
        )
    return results


def plot_runs(run_dirs, out=None, book=False, title=None):
    """A PNG of validation accuracy per epoch for each run; returns the path written."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RunFolderError('plotting needs matplotlib: pip install -e ".[notebook]"') from None
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    out = out or os.path.join(run_dirs[0], "validation_accuracy.png")
    formats = FigureCanvasAgg.get_supported_filetypes()
    if os.path.splitext(out)[1][1:].lower() not in formats:
        raise RunFolderError(
            f"cannot tell the image format of {out}; end it with .png (or "
            f"{', '.join('.' + f for f in sorted(formats) if f != 'png')})"
        )
    fig, ax = plt.subplots(figsize=(8, 5))
    if len(run_dirs) > 10:  # the default cycle repeats after ten colours
        ax.set_prop_cycle(color=plt.cm.tab20.colors)
    for run_dir in run_dirs:
        results = load_results(run_dir)
        cfg = runs.read_config(run_dir)
        acc = results["validation_accuracy"]
        ax.plot(
            range(len(acc)),
            acc,
            marker=".",
            label=f"{cfg.preset} seed {cfg.seed} ({os.path.basename(os.path.normpath(run_dir))})",
        )
    if book:
        ax.plot(range(len(BOOK_TABLE)), BOOK_TABLE, "k--", linewidth=1, label="book (bn, TF 1.x, seed 42)")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (5,000 images)")
    ax.set_title(title or "MNIST validation accuracy per epoch")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    image = io.BytesIO()
    fig.savefig(image, format=os.path.splitext(out)[1][1:].lower(), dpi=100)
    plt.close(fig)
    try:
        atomic.write_bytes_atomic(out, image.getvalue())  # a full disk leaves no partial image
    except OSError as e:
        raise RunFolderError(
            f"cannot write the plot to {out} ({e.strerror}); make room, or write it elsewhere"
        ) from None
    return out


MAX_SEEDS = 1000  # a 20-epoch bn run takes about half a minute here: 1,000 are hours


def parse_seeds(text):
    """'0-9' or '1,5,42' or '0-4,42' -> sorted unique list of ints in [0, 2**31)."""
    seeds = set()
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                lo, hi = (int(x) for x in part.split("-", 1))
                if lo > hi:
                    raise RunFolderError(f"--seeds range {part.strip()} goes down; write it low-high, like {hi}-{lo}")
                if hi - lo >= MAX_SEEDS:
                    raise RunFolderError(
                        f"--seeds {part.strip()} is {hi - lo + 1:,} runs; pass at most "
                        f"{MAX_SEEDS:,} seeds (each is a whole training run)"
                    )
                seeds.update(range(lo, hi + 1))
            else:
                seeds.add(int(part))
    except ValueError:
        raise RunFolderError(f"--seeds takes ranges and lists like 0-9 or 0-4,42; got {text!r}") from None
    if not seeds or min(seeds) < 0 or max(seeds) >= 2**31:
        raise RunFolderError(f"--seeds needs seeds in [0, 2**31), as --seed does; got {text!r}")
    if len(seeds) > MAX_SEEDS:
        raise RunFolderError(
            f"--seeds {text} is {len(seeds):,} runs; pass at most {MAX_SEEDS:,} seeds (each is a whole training run)"
        )
    return sorted(seeds)


def seed_statistics(results_by_seed):
    """Per-epoch mean, std, min, max over seeds, plus the final test accuracies."""
    seeds = sorted(results_by_seed)
    acc = np.array([results_by_seed[s]["validation_accuracy"] for s in seeds], dtype=np.float64)
    test = np.array([results_by_seed[s]["test_accuracy"] for s in seeds], dtype=np.float64)
    rows = [
        {
            "epoch": e,
            "mean": acc[:, e].mean(),
            "std": acc[:, e].std(ddof=1) if len(seeds) > 1 else 0.0,
            "min": acc[:, e].min(),
            "max": acc[:, e].max(),
            "seed_42": results_by_seed[42]["validation_accuracy"][e] if 42 in results_by_seed else math.nan,
        }
        for e in range(acc.shape[1])
    ]
    return seeds, rows, test


def write_seed_csv(path, seeds, rows, test, results_by_seed):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["epoch", "mean", "std", "min", "max", "seed_42"])
        for r in rows:
            w.writerow(
                [
                    r["epoch"],
                    f"{r['mean']:.6f}",
                    f"{r['std']:.6f}",
                    f"{r['min']:.4f}",
                    f"{r['max']:.4f}",
                    "" if math.isnan(r["seed_42"]) else f"{r['seed_42']:.4f}",
                ]
            )
        w.writerow(
            [
                "test",
                f"{test.mean():.6f}",
                f"{test.std(ddof=1) if len(test) > 1 else 0:.6f}",
                f"{test.min():.4f}",
                f"{test.max():.4f}",
                f"{results_by_seed[42]['test_accuracy']:.4f}" if 42 in results_by_seed else "",
            ]
        )
        w.writerow([])
        w.writerow(["seed", "final_validation_accuracy", "test_accuracy", "run"])
        for s in seeds:
            r = results_by_seed[s]
            w.writerow([s, f"{r['validation_accuracy'][-1]:.4f}", f"{r['test_accuracy']:.4f}", r["run_dir"]])


def rank_of_seed_42(results_by_seed, key):
    """'3 of 11': where seed 42 stands among the seeds (1 = best; ties share the better rank)."""
    values = sorted((_final(r, key) for r in results_by_seed.values()), reverse=True)
    return f"{values.index(_final(results_by_seed[42], key)) + 1} of {len(values)}"


def _final(result, key):
    return result["validation_accuracy"][-1] if key == "validation" else result["test_accuracy"]


def instruction_set():
    """What decides the last bits of the chapter's values here: the widest vector instruction set
    the CPU has, the caps set on it, and whether oneDNN's kernels are on (TensorFlow's default on
    x86 Linux; ``TF_ENABLE_ONEDNN_OPTS=0`` turns them off)."""
    from bnmnist.compile_cache import host_features

    features = host_features()
    widest = next((name for name, f in _WIDEST if f in features), "none of SSE4.2 to AVX-512")
    caps = [f"{name} capped at {value}" for name, value in _caps()]
    onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1").lower() not in ("0", "false")
    return ", ".join([widest, *caps, f"oneDNN {'on' if onednn else 'off'}"])


_WIDEST = (("AVX-512", "avx512f"), ("AVX2", "avx2"), ("AVX", "avx"), ("SSE4.2", "sse4.2"))


def _caps():
    xla = re.search(r"--xla_cpu_max_isa=(\S+)", os.environ.get("XLA_FLAGS", ""))
    if xla:
        yield "XLA", xla.group(1)
    if os.environ.get("ONEDNN_MAX_CPU_ISA"):
        yield "oneDNN", os.environ["ONEDNN_MAX_CPU_ISA"]


def measured_on():
    """Where and when a figure was measured: the UTC date, the CPU, its instruction set and
    oneDNN, its cores, the versions."""
    import datetime
    import importlib.metadata
    import platform

    from bnmnist.compile_cache import cpuinfo

    cpu = cpuinfo().get("model name") or platform.processor() or platform.machine()

    def version(name):
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return (
        f"{date}; {cpu} ({instruction_set()}), {os.cpu_count()} cores; Python {platform.python_version()}, "
        f"TensorFlow {version('tensorflow')}, NumPy {version('numpy')}"
    )


def write_markdown_section(path, key, text):
    """Put ``text`` between ``<!-- key -->`` and ``<!-- /key -->`` in the Markdown file ``path``,
    replacing what a previous run wrote there and keeping the rest (the file is made if missing)."""
    start, end = f"<!-- {key} -->", f"<!-- /{key} -->"
    block = f"{start}\n{text.strip()}\n{end}\n"
    old = Path(path).read_text(encoding="utf-8") if os.path.exists(path) else ""
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end) + 1 :]
    else:
        new = (old.rstrip() + "\n\n" if old.strip() else "") + block
    atomic.write_bytes_atomic(path, new.encode("utf-8"))  # a full disk leaves the old file whole
