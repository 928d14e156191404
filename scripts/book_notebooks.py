"""The first edition's notebooks, run as a reader runs them: ``python scripts/book_notebooks.py``.

Each notebook is copied into a folder laid out as an ``ageron/handson-ml`` checkout (the notebook,
``tensorflow_graph_in_jupyter.py`` as the repository ships it, ``images/<chapter>/``), gets one
first line, ``%load_ext bnmnist.book``, and runs headless with every cell's error recorded. It
prints, per notebook, how many code cells ran and which raised (and why), and each training cell's
epoch-0 line next to the published one. ``--epochs N`` shortens the copy's ``n_epochs`` (and the
exercises' hyperparameter searches to one draw), as a reader short of time would; bnmnist never
does. ``--markdown docs/book.md`` writes the same there.

``--float-orders`` runs each notebook again under each of :data:`FLOAT_ORDERS` (oneDNN off, capped,
one thread) and sets each training cell's epoch 0 side by side: a cell whose values move there
depends on float order, so a printed value that differs from the published one need not be a
seeding fault.

Needs the notebooks of ``ageron/handson-ml`` at 2d5d735 (``--reference DIR``, or
``$BNMNIST_REFERENCE``), the ``book`` extra, and MNIST in ``$BNMNIST_DATA`` when offline.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import tempfile
import time

import tooling
from tooling import ScriptParser, positive_int

NOTEBOOKS = {
    "09": "09_up_and_running_with_tensorflow.ipynb",
    "10": "10_introduction_to_artificial_neural_networks.ipynb",
    "11": "11_deep_learning.ipynb",
    "14": "14_recurrent_neural_networks.ipynb",
    "15": "15_autoencoders.ipynb",
}
HELPER = "tensorflow_graph_in_jupyter.py"
LOAD_LINE = "%load_ext bnmnist.book"
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
EPOCH_0 = re.compile(r"(?m)^(?:Epoch\s+)?0\b[\s:,].*$")
# What moves the last bits of a float sum in a TensorFlow program, each on top of the environment
FLOAT_ORDERS = {
    "as run": {},
    "oneDNN off": {"TF_ENABLE_ONEDNN_OPTS": "0"},
    "oneDNN at AVX2": {"ONEDNN_MAX_CPU_ISA": "AVX2"},
    "oneDNN off, 1 thread": {"TF_ENABLE_ONEDNN_OPTS": "0", "TF_NUM_INTRAOP_THREADS": "1"},
}


def checkout(reference: str, name: str, folder: str) -> str:
    """Lay out ``folder`` as a handson-ml checkout holding notebook ``name``; returns its path."""
    with open(os.path.join(reference, name), encoding="utf-8") as f:
        nb = json.load(f)
    chapter = re.search(r'CHAPTER_ID\s*=\s*"(\w+)"', "".join(code(nb)))
    os.makedirs(os.path.join(folder, "images", chapter.group(1) if chapter else ""), exist_ok=True)
    shutil.copy(os.path.join(reference, HELPER), folder)
    path = os.path.join(folder, name)
    shutil.copy(os.path.join(reference, name), path)
    return path


def code(nb):
    return ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]


def prepared(nb: dict, epochs: int | None = None, until: str | None = None) -> dict:
    """A copy of ``nb`` with ``%load_ext bnmnist.book`` first, outputs cleared; with ``epochs``,
    every ``n_epochs`` at most that (hyperparameter searches to one draw); with ``until``, only
    the cells before the first heading that starts with it."""
    nb = json.loads(json.dumps(nb))
    if until:
        cells = nb["cells"]
        heading = [
            i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and "".join(c["source"]).startswith(until)
        ]
        nb["cells"] = cells[: heading[0]] if heading else cells
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        source = "".join(cell["source"])
        if epochs is not None:
            source = re.sub(
                r"(\bn_epochs\s*=\s*)(\d+)", lambda m: m.group(1) + str(min(int(m.group(2)), epochs)), source
            )
            source = re.sub(r"(\bn_iter\s*=\s*)\d+", r"\g<1>1", source)
        cell.update(source=source, outputs=[], execution_count=None)
    nb["cells"].insert(
        0, {"cell_type": "code", "metadata": {}, "outputs": [], "source": LOAD_LINE, "execution_count": None}
    )
    nb["cells"][0]["id"] = "load-bnmnist-book"
    return nb


def execute(
    path: str, epochs: int | None = None, until: str | None = None, timeout: int = 3600, env: dict | None = None
) -> dict:
    """Run the notebook at ``path``, :func:`prepared`, in its folder, its kernel's environment
    this one's with ``env`` on top; every cell runs, errors recorded; the executed copy replaces it."""
    import nbclient
    import nbformat

    with open(path, encoding="utf-8") as f:
        nb = prepared(json.load(f), epochs, until)
    nb = nbformat.from_dict(nb)
    client = nbclient.NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": os.path.dirname(path)}},
    )
    client.execute(env={**os.environ, **(env or {})})
    nbformat.write(nb, path)
    return json.loads(nbformat.writes(nb))


def epoch_0(cell):
    m = EPOCH_0.search(tooling.printed_text(cell))
    return m.group(0).strip() if m else None


def outcomes(published: dict, executed: dict) -> list[dict]:
    """Per code cell of the published notebook: its index there, the error it raised (if any),
    and its epoch-0 line, published and now."""
    rows = []
    for i, (before, after) in enumerate(zip(published["cells"], executed["cells"][1:])):
        if before["cell_type"] != "code":
            continue
        error = next((o for o in after.get("outputs", []) if o.get("output_type") == "error"), None)
        rows.append(
            {
                "cell": i,
                "error": f"{error['ename']}: {first_line(error['evalue'])}" if error else None,
                "published": epoch_0(before),
                "printed": epoch_0(after),
            }
        )
    return rows


def first_line(text):
    lines = [line for line in re.sub(r"\x1b\[[0-9;]*m", "", text).splitlines() if line.strip()]
    return (lines[0] if lines else "")[:160]


def same_values(published, printed):
    """Whether ``printed`` shows every number of the ``published`` line, to the digits published
    (NumPy printed float32 with fewer digits when the book was made: 0.973333 is 0.97333336)."""
    ours, theirs = NUMBER.findall(printed or ""), NUMBER.findall(published or "")
    if not theirs or len(ours) != len(theirs):
        return False
    digits = [len(t.split(".")[1]) if "." in t else 0 for t in theirs]
    return all(round(float(o), d) == float(t) for o, t, d in zip(ours, theirs, digits))


def last_number(line):
    numbers = re.findall(r"-?\d+\.\d+|-?\d+", line or "")
    return float(numbers[-1]) if numbers else None


def run_notebook(notebook, epochs=None, keep=None, until=None, env=None):
    """Run ``notebook`` (beside the helper module, as in a checkout) in a checkout's layout:
    (:func:`outcomes`, seconds). ``keep``: the folder to run in, left behind with the executed copy;
    ``env``: as :func:`execute`."""
    folder = keep or tempfile.mkdtemp(prefix="bnmnist-book-")
    try:
        path = checkout(os.path.dirname(notebook), os.path.basename(notebook), folder)
        with open(path, encoding="utf-8") as f:
            published = json.load(f)
        t0 = time.perf_counter()
        executed = execute(path, epochs, until, env=env)
        return outcomes(published, executed), time.perf_counter() - t0
    finally:
        if keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def report(key, rows, seconds):
    raised = [r for r in rows if r["error"]]
    trained = [r for r in rows if r["published"] or r["printed"]]
    same = [r for r in trained if same_values(r["published"], r["printed"])]
    lines = [
        f"### {NOTEBOOKS[key]}",
        "",
        f"{len(rows) - len(raised)} of {len(rows)} code cells ran, {len(raised)} raised; "
        f"{len(same)} of {len(trained)} epoch-0 lines print the published values; {seconds:.0f} s.",
    ]
    if raised:
        lines += ["", "| cell | raised |", "| --- | --- |"]
        lines += [f"| {r['cell']} | `{r['error']}` |" for r in raised]
    if trained:
        lines += ["", "| cell | published epoch 0 | printed epoch 0 | same values |", "| --- | --- | --- | --- |"]
        for r in trained:
            same = "yes" if same_values(r["published"], r["printed"]) else "no"
            lines.append(f"| {r['cell']} | `{r['published']}` | `{r['printed']}` | {same} |")
    return "\n".join(lines)


def float_order_report(key, runs):
    """The epoch-0 values of every training cell under each float order (``runs``: name -> the
    :func:`outcomes` of a run), side by side."""
    cells = {}
    for name, rows in runs.items():
        for r in rows:
            if r["published"] or r["printed"]:
                cells.setdefault(r["cell"], {"published": r["published"]})[name] = r["printed"]

    def values(line):
        return " ".join(NUMBER.findall(line or "")[1:]) or "-"

    moved = [c for c, v in cells.items() if len({values(v.get(name)) for name in runs}) > 1]
    lines = [
        f"### {NOTEBOOKS[key]}",
        "",
        f"{len(moved)} of {len(cells)} training cells print another epoch 0 under another float order.",
        "",
        "| cell | published | " + " | ".join(runs) + " | moves |",
        "| --- | --- | " + "--- | " * len(runs) + "--- |",
    ]
    for c, v in cells.items():
        row = [values(v["published"]), *(values(v.get(name)) for name in runs), "yes" if c in moved else "no"]
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main(argv=None):
    p = ScriptParser(description=__doc__.split("\n\n")[0])
    p.add_argument("notebooks", nargs="*", metavar="NN", help=f"which notebooks: {', '.join(NOTEBOOKS)} (default: all)")
    p.add_argument("--epochs", type=positive_int, help="shorten each n_epochs to at most this")
    p.add_argument("--reference", metavar="DIR", default=os.environ.get("BNMNIST_REFERENCE"))
    p.add_argument("--markdown", metavar="FILE", help="write the report into this Markdown file")
    p.add_argument("--float-orders", action="store_true", help="run each notebook under each float order, side by side")
    args = p.parse_args(argv)
    unknown = [n for n in args.notebooks if n not in NOTEBOOKS]
    if unknown:
        p.error(f"no notebook {', '.join(unknown)}; choose from {', '.join(NOTEBOOKS)}")
    if not args.reference or not os.path.isfile(os.path.join(args.reference, NOTEBOOKS["11"])):
        p.error("no notebooks: pass --reference DIR, a folder holding ageron/handson-ml's notebooks at 2d5d735")
    sections = []
    for key in args.notebooks or NOTEBOOKS:
        notebook = os.path.join(args.reference, NOTEBOOKS[key])
        if args.float_orders:
            runs = {name: run_notebook(notebook, args.epochs, env=env)[0] for name, env in FLOAT_ORDERS.items()}
            sections.append(float_order_report(key, runs))
        else:
            sections.append(report(key, *run_notebook(notebook, args.epochs)))
        print(sections[-1], "\n", flush=True)
    if args.markdown:
        shortened = f"`n_epochs` at most {args.epochs}" if args.epochs else "at full length"
        command = " ".join(["python scripts/book_notebooks.py", *sys.argv[1:]])
        head = f"Measured {tooling.measured_on()}, by `{command}` ({shortened})."
        section = "float-orders" if args.float_orders else "notebooks"
        tooling.write_markdown_section(args.markdown, section, "\n\n".join([head, *sections]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
