"""Chapter 11 side by side: ``python scripts/chapter.py --data DIR``.

Trains every chapter preset (each a normal ``scripts/train.py`` run with its own run folder under
``--logdir``), up to ``--jobs`` at once, the reuse cells from the gradient_clipping run as the
notebook's do, and prints, per cell in the notebook's order, the values
the notebook printed, the values bnmnist printed, how many are exact (or the largest difference),
and the run's whole-process time. ``--markdown docs/chapter11.md`` writes the same there.

The notebook is ``11_deep_learning.ipynb``: ``--notebook PATH``, or the one in
``$BNMNIST_REFERENCE``.

``--notebook-run`` runs the notebook itself instead, under ``bnmnist.book`` in a checkout's
layout (its chapter cells, up to the exercises), and sets each cell's values beside the published
ones and the presets' that ``--markdown``'s file holds from a run of this command without it.
"""

import concurrent.futures
import os
import shutil
import sys
import tempfile
import threading
from pathlib import Path

from bnmnist import data, runs
from bnmnist.cli import path_arg
from bnmnist.config import PRESETS
from bnmnist.errors import BnmnistError

import book_notebooks
import tooling
from child_runs import report_interrupted, stop_runs_on_signals, train_run
from tooling import ScriptParser, positive_int

HERE = os.path.dirname(os.path.abspath(__file__))

NOTEBOOK = "11_deep_learning.ipynb"
SOURCE = "gradient_clipping"  # the run the reuse cells start from (the book's my_model_final.ckpt)


def main(argv=None):
    ap = ScriptParser(prog="chapter", description="Every chapter preset beside the notebook's printed values.")
    ap.add_argument(
        "--presets",
        default=",".join(tooling.NOTEBOOK_CELLS),
        help="comma-separated presets (default: all, in the notebook's order)",
    )
    ap.add_argument("--epochs", type=positive_int, help="override every preset's epochs (a quicker, partial check)")
    ap.add_argument("--data", type=path_arg, help="MNIST path (default: $BNMNIST_DATA, then the Keras cache)")
    ap.add_argument(
        "--notebook", type=path_arg, help=f"the chapter's notebook (default: $BNMNIST_REFERENCE/{NOTEBOOK})"
    )
    ap.add_argument("--logdir", default="tf_logs/chapter", type=path_arg, help="where runs go (default: %(default)s)")
    ap.add_argument(
        "--jobs", type=positive_int, default=os.cpu_count(), help="parallel runs (default: cores = %(default)s)"
    )
    ap.add_argument("--markdown", type=path_arg, metavar="FILE", help="also write it to FILE (docs/chapter11.md)")
    ap.add_argument(
        "--isa",
        choices=sorted(tooling.ISA_CAPS),
        help="cap the CPU's instruction set (XLA_FLAGS and ONEDNN_MAX_CPU_ISA) for every run; --markdown "
        "then writes a section of its own, beside the uncapped run's values",
    )
    ap.add_argument(
        "--notebook-run",
        action="store_true",
        help="run the notebook itself under bnmnist.book (up to its exercises) instead of the presets, and "
        "write its values beside the published ones and the presets' from --markdown's table",
    )
    args = ap.parse_args(argv)
    if args.isa:  # the runs inherit it, as a user's would
        os.environ.update(tooling.isa_cap_env(args.isa))
    try:
        presets = [p for p in args.presets.split(",") if p]
        order = list(tooling.NOTEBOOK_CELLS)
        unknown = [p for p in presets if p not in tooling.NOTEBOOK_CELLS]
        if unknown or not presets:
            known = ", ".join(tooling.NOTEBOOK_CELLS)
            raise BnmnistError(f"unknown preset(s) {', '.join(unknown) or '(none given)'}; choose from {known}")
        notebook = args.notebook or os.path.join(os.environ.get("BNMNIST_REFERENCE", "."), NOTEBOOK)
        if not os.path.isfile(notebook):
            raise BnmnistError(f"no notebook at {notebook}; pass --notebook PATH/{NOTEBOOK} or set BNMNIST_REFERENCE")
        presets = sorted(set(presets), key=order.index)  # the notebook's order: sources first
        if any(PRESETS[p].reuse for p in presets) and SOURCE not in presets:
            raise BnmnistError(f"the reuse cells start from the {SOURCE} run; add {SOURCE} to --presets")
        book = {p: tooling.notebook_values(notebook, tooling.NOTEBOOK_CELLS[p][0]) for p in presets}
        runs.check_logdir(args.logdir)
        if args.markdown:
            if os.path.isdir(args.markdown):
                raise BnmnistError(f"--markdown {args.markdown} is a folder; give a Markdown file's name")
            folder = os.path.dirname(os.path.abspath(args.markdown))
            runs.make_writable(folder, "the folder of --markdown", "choose a file you can write")
        data.load(args.data)  # bad data is refused once, here
        if args.notebook_run and not os.path.isfile(os.path.join(os.path.dirname(notebook), book_notebooks.HELPER)):
            raise BnmnistError(
                f"--notebook-run needs {book_notebooks.HELPER} beside {notebook}, as a handson-ml checkout has it"
            )
    except BnmnistError as e:
        print(f"chapter: error: {e}", file=sys.stderr)
        return 2
    if args.notebook_run:
        return notebook_run(args, presets, book, notebook)
    print(f"Training {len(presets)} presets, {args.jobs} at a time, in {args.logdir}", flush=True)
    stop_runs_on_signals()  # Ctrl-C and SIGTERM stop every run cleanly
    results, stop = {}, threading.Event()

    def train(preset, source):
        """``source``: the gradient_clipping run's future, which a reuse cell starts from (it was
        submitted first, so a worker waiting on it never holds up the run it waits for)."""
        if stop.is_set():
            return preset, None
        try:
            flags = ["--preset", preset]
            if PRESETS[preset].reuse:
                trained = source.result()[1]
                if trained is None:
                    return preset, None
                flags += ["--from", trained["run_dir"]]
            return preset, train_run(flags, args, f"preset {preset}")
        except (BnmnistError, KeyboardInterrupt):  # a failed or stopped run: start no more
            stop.set()
            raise

    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {}
        try:
            for p in presets:
                futures[p] = pool.submit(train, p, futures.get(SOURCE))
            for future in futures.values():
                preset, res = future.result()
                if res is not None:
                    results[preset] = res
                    print(f"{preset}: done in {res['seconds']:.1f} s ({res['run_dir']})", flush=True)
        except (BnmnistError, KeyboardInterrupt) as e:
            stop.set()
            pool.shutdown(cancel_futures=True)
            if isinstance(e, KeyboardInterrupt):
                finished = f"{len(results)} finished preset(s); the runs are in {args.logdir}"
                return report_interrupted("chapter", futures.values(), getattr(e, "signum", 0), finished)
            print(f"chapter: error: {e}", file=sys.stderr)
            return 2
    rows = [row(p, book[p], results[p]) for p in presets]
    print()
    print(text_table(rows))
    if args.markdown:
        try:
            (write_capped_markdown if args.isa else write_markdown)(args, rows)
        except OSError as e:  # the file keeps what it had: sections are written whole or not at all
            print(
                f"chapter: error: could not write {args.markdown} ({e.strerror}); it is unchanged, and the runs "
                f"are in {args.logdir}: make room and run the command again",
                file=sys.stderr,
            )
            return 4
        print(f"\nTable written to {args.markdown}")
    return 0


def notebook_run(args, presets, book, notebook):
    """The notebook, run under bnmnist.book: per preset's cell, the published values, the
    notebook's own and the preset's (from the uncapped table of ``--markdown``, if any)."""
    ours = uncapped_table(args.markdown) if args.markdown else {}
    length = f"n_epochs at most {args.epochs}" if args.epochs else "at full length"
    print(f"Running {os.path.basename(notebook)} under bnmnist.book ({length}, up to its exercises)", flush=True)
    folder = tempfile.mkdtemp(prefix="bnmnist-book-")
    try:
        if args.data:  # the notebook's load_data() reads the same copy
            os.environ[data.ENV_VAR] = os.path.abspath(args.data)
        outcomes, seconds = book_notebooks.run_notebook(notebook, args.epochs, keep=folder, until="# Exercise")
        ran = os.path.join(folder, os.path.basename(notebook))
        raised = {r["cell"]: r["error"] for r in outcomes if r["error"]}
        rows = []
        for p in presets:
            cell = tooling.NOTEBOOK_CELLS[p][0]
            own = {} if cell in raised else tooling.notebook_values(ran, cell + 1)  # after the load_ext cell
            rows.append((p, cell, book[p], own, ours.get(p, {})))
    except KeyboardInterrupt as e:
        print("chapter: stopped; the notebook's run is discarded", file=sys.stderr)
        return 128 + getattr(e, "signum", 2)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lines = [
        f"Measured {tooling.measured_on()}, by `{this_command()}`: the notebook with `%load_ext bnmnist.book` "
        f"as its first line, {length}, in {seconds:.0f} s; {len(outcomes)} code cells ran, {len(raised)} raised"
        f"{': ' + ', '.join(f'cell {c} ({e})' for c, e in raised.items()) if raised else ''}. The presets' "
        "values are the uncapped table's above.",
    ]
    for p, cell, published, own, preset in rows:
        epochs = sorted(set(published) | set(own))
        same = sum(own.get(e) == published.get(e) for e in epochs if e in own)
        lines += [
            "",
            f"#### {p} (cell {cell}): {same}/{len(own)} of the notebook's own values are the published ones",
            "",
        ]
        lines += ["| epoch | published | notebook, bnmnist.book | preset |", "| --- | --- | --- | --- |"]
        lines += [f"| {e} | {published.get(e, '')} | {own.get(e, '')} | {preset.get(e, '')} |" for e in epochs]
    text = "\n".join(lines)
    print(text)
    if args.markdown:
        tooling.write_markdown_section(
            args.markdown, "chapter-notebook", "### The notebook itself, under bnmnist.book\n\n" + text
        )
        print(f"\nTable written to {args.markdown}")
    return 0


def row(preset, book, result):
    printed = result["validation_accuracy_printed"]
    epochs, exact, largest = tooling.compare_with_notebook(book, printed)
    return {
        "preset": preset,
        "cell": tooling.NOTEBOOK_CELLS[preset][0],
        "section": tooling.NOTEBOOK_CELLS[preset][1],
        "pairs": [(e, book[e], printed[e]) for e in epochs],
        "exact": exact,
        "n": len(epochs),
        "largest": largest,
        "seconds": result["seconds"],
    }


def verdict(r):
    if r["exact"] == r["n"]:
        return "exact"
    return f"{r['exact']}/{r['n']} exact, largest difference {r['largest']:.4f}"


def text_table(rows):
    lines = []
    for r in rows:
        lines.append(f"{r['preset']} (cell {r['cell']}, {r['section']}): {verdict(r)}; {r['seconds']:.1f} s")
        lines.append("  epoch     " + " ".join(f"{e:>7}" for e, _, _ in r["pairs"]))
        lines.append("  notebook  " + " ".join(f"{b:>7}" for _, b, _ in r["pairs"]))
        lines.append("  bnmnist   " + " ".join(f"{p:>7}" for _, _, p in r["pairs"]))
    return "\n".join(lines)


def this_command():
    """The command line as a reader would type it, for the section it writes."""
    return " ".join(["python scripts/chapter.py", *sys.argv[1:]])


def write_markdown(args, rows):
    command = this_command()
    lines = [
        f"Measured {tooling.measured_on()}, by `{command}`. Each preset ran as its own process, "
        f"{args.jobs} at a time; the time is the whole process.",
        "",
        "| preset | notebook cell | section | exact | largest difference | time s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| `{r['preset']}` | {r['cell']} | {r['section']} | {r['exact']}/{r['n']} | {r['largest']:.4f} | "
        f"{r['seconds']:.1f} |"
        for r in rows
    ]
    for r in rows:
        lines += ["", f"### {r['preset']}", "", "| epoch | notebook | bnmnist |", "| --- | --- | --- |"]
        lines += [f"| {e} | {b} | {p}{'' if float(b) == float(p) else ' *'} |" for e, b, p in r["pairs"]]
    lines += ["", "`*`: differs from the notebook."]
    tooling.write_markdown_section(args.markdown, "chapter", "\n".join(lines))


def write_capped_markdown(args, rows):
    """The summary under the cap, and how many printed values equal those of the uncapped run
    that ``--markdown``'s file already holds."""
    uncapped = uncapped_values(args.markdown)
    command = this_command()
    xla, onednn = tooling.ISA_CAPS[args.isa]
    lines = [
        f"### Instruction set capped at {args.isa}",
        "",
        f"Measured {tooling.measured_on()}, by `{command}` (`XLA_FLAGS=--xla_cpu_max_isa={xla}`, "
        f"`ONEDNN_MAX_CPU_ISA={onednn}`).",
        "",
        "| preset | exact | largest difference | values equal to the uncapped run's |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        ours, theirs = [p for _, _, p in r["pairs"]], uncapped.get(r["preset"])
        same = f"{sum(a == b for a, b in zip(ours, theirs))}/{len(ours)}" if theirs else "(no uncapped run)"
        lines.append(f"| `{r['preset']}` | {r['exact']}/{r['n']} | {r['largest']:.4f} | {same} |")
    tooling.write_markdown_section(args.markdown, f"chapter-{args.isa}", "\n".join(lines))


def uncapped_values(path):
    """preset -> the values bnmnist printed, from the uncapped section of ``path`` (if any)."""
    return {preset: list(values.values()) for preset, values in uncapped_table(path).items()}


def uncapped_table(path):
    """preset -> {epoch: the value bnmnist printed}, from the uncapped section of ``path``."""
    text = Path(path).read_text(encoding="utf-8") if os.path.exists(path) else ""
    if "<!-- chapter -->" not in text:
        return {}
    values, preset = {}, None
    for line in text.split("<!-- chapter -->", 1)[1].split("<!-- /chapter -->", 1)[0].splitlines():
        if line.startswith("### "):
            preset = line[4:].strip()
        elif preset and line.startswith("| ") and line.split("|")[1].strip().isdigit():
            values.setdefault(preset, {})[int(line.split("|")[1])] = line.split("|")[3].strip().rstrip(" *")
    return values


if __name__ == "__main__":
    sys.exit(main())
