"""Export a run as a TF2 SavedModel: ``python scripts/export.py RUN OUT_DIR``.

RUN is a run folder, a checkpoint prefix, or "latest". Inspect the result with
``saved_model_cli show --dir OUT_DIR --all``.
"""

import os
import sys

from bnmnist import runs  # TensorFlow loads only once the export needs it
from bnmnist.cli import path_arg
from bnmnist.errors import BnmnistError

from tooling import ScriptParser


def check_out_dir(out_dir):
    """OUT_DIR must be new, in a folder that exists (or can be made) and is writable."""
    if os.path.exists(out_dir):
        raise BnmnistError(f"{out_dir} already exists; choose a new folder")
    runs.make_writable(
        os.path.dirname(os.path.abspath(out_dir)),
        "the folder of OUT_DIR",
        "choose an OUT_DIR in a folder you can write",
    )


def main(argv=None):
    ap = ScriptParser(prog="export", description="Export a bnmnist run as a TF2 SavedModel.")
    ap.add_argument("run", type=path_arg, help='a run folder, a checkpoint prefix, or "latest"')
    ap.add_argument("out_dir", type=path_arg, help="where the SavedModel goes (must not exist yet)")
    ap.add_argument("--logdir", default="tf_logs", type=path_arg, help='where "latest" looks (default: %(default)s)')
    args = ap.parse_args(argv)
    try:
        runs.resolve(args.run, args.logdir)  # a wrong RUN is refused before TensorFlow loads
        check_out_dir(args.out_dir)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        from bnmnist.restored import export_saved_model

        out = export_saved_model(args.run, args.out_dir, args.logdir)
    except BnmnistError as e:
        print(f"export: error: {e}", file=sys.stderr)
        return 2
    print(
        f"SavedModel written to {out} (signature serving_default: uint8 images (None, 28, 28) "
        "-> probabilities, classes)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
