"""Plot validation accuracy per epoch: ``python scripts/plot_runs.py RUN [RUN ...] [--book] [--out PNG]``.

Saved as ``validation_accuracy.png`` in the first run's folder unless ``--out`` says otherwise.
Needs matplotlib (``pip install -e ".[notebook]"``).
"""

import sys

from bnmnist.cli import path_arg
from bnmnist.errors import BnmnistError

from tooling import ScriptParser, plot_runs


def main(argv=None):
    ap = ScriptParser(prog="plot_runs", description="Plot validation accuracy per epoch for one or more runs.")
    ap.add_argument(
        "runs", nargs="+", metavar="RUN", type=path_arg, help="run folders, e.g. tf_logs/run-20261127085803"
    )
    ap.add_argument("--book", action="store_true", help="overlay the book's published bn table")
    ap.add_argument(
        "--out",
        type=path_arg,
        help="image path: .png, or .svg, .pdf ... (default: RUN/validation_accuracy.png of the first run)",
    )
    ap.add_argument("--title", help="plot title")
    args = ap.parse_args(argv)
    try:
        out = plot_runs(args.runs, out=args.out, book=args.book, title=args.title)
    except BnmnistError as e:
        print(f"plot_runs: error: {e}", file=sys.stderr)
        return 2
    print(f"Plot written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
