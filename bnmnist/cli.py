"""``bnmnist-train`` / ``python scripts/train.py``: parse flags, check every input, train.

Bad flags, data or folders are found before TensorFlow loads and reported in one line. Exit codes:
0 done, 2 bad input, 3 the loss diverged, 4 a file could not be written while training; 130, 143
and 141 when Ctrl-C, SIGTERM or a closed standard output stopped it (resume with ``--resume``).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
import threading
import time

from . import compile_cache, data, runs
from .config import CHOICES, PRESETS, RULES
from .errors import BnmnistError, NumericalError, TrainingInterrupted, WriteError

EXIT_USAGE, EXIT_NUMERICAL, EXIT_WRITE, EXIT_PIPE = 2, 3, 4, 141
NO_TQDM = (
    "bnmnist-train: note: no progress bar: tqdm is not installed (pip install tqdm, or "
    "install bnmnist with its [progress] extra); --quiet hides this note"
)
# Flags that keep a resumed run the run it was: anything else would change its result.
RESUME_ALLOWED = {"epochs", "data", "logdir", "quiet", "resume", "threads"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, not usage + message
        raise BnmnistError(f"{message} (see --help)")


def field_type(name):
    """An argparse type for a Config field; whether the value is valid is Config.validated's call."""
    convert, _, what = RULES[name]

    def parse(text):
        try:
            return convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None

    return parse


def _default(name):
    """ "default: 20; 40 for plain, selu": the bn preset's value, then the presets' others."""
    show = (lambda v: ",".join(map(str, v))) if name in ("threads", "hidden") else str
    base = PRESETS["bn"].value(name)
    others = {}
    for preset, c in PRESETS.items():
        if c.value(name) != base:
            others.setdefault(show(c.value(name)), []).append(preset)
    return "; ".join([f"default: {show(base)}", *(f"{v} for {', '.join(ps)}" for v, ps in others.items())])


def path_arg(text):
    """An argparse type for paths: an empty string (``--data ""``, an unset shell variable) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("must be a path, got an empty string")
    return text


def _integers(what, count=None):
    """An argparse type for comma-separated integers (``count`` of them, when given)."""

    def parse(text):
        try:
            values = tuple(int(t) for t in text.split(","))
        except ValueError:
            values = ()
        if not values or len(values) != (count or len(values)):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return values

    return parse


def build_parser():
    p = _Parser(
        prog="bnmnist-train",
        allow_abbrev=False,
        description=(
            "Train the batch-norm MNIST network of Hands-On ML (1st ed., ch. 11) in a TF1 Session. "
            "Presets set the defaults below; individual flags override them."
        ),
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="bn",
        help="bn: the book's batch-norm network; plain: the chapter's Leaky ReLU network without batch "
        "norm; the others: the chapter's cells of the same names (selu, gradient clipping, learning-rate "
        "scheduling, l1, dropout, max-norm) (default: %(default)s)",
    )
    for flag, name, what in (
        ("--epochs", "epochs", "epochs to train"),
        ("--batch-size", "batch_size", "mini-batch size"),
        ("--learning-rate", "learning_rate", "gradient-descent step size"),
        ("--momentum", "momentum", "batch-norm moving-average momentum"),
        ("--seed", "seed", "graph and NumPy seed"),
    ):
        p.add_argument(flag, type=field_type(name), help=f"{what} ({_default(name)})")
    p.add_argument(
        "--hidden",
        type=_integers("layer sizes like 300,100 (integers)"),
        metavar="N1,N2,...",
        help=f"the hidden layers' sizes ({_default('hidden')})",
    )
    p.add_argument(
        "--seeding",
        choices=CHOICES["seeding"],
        help=f"tf1: the op seeds TF 1.x gave the book's graph (reproduces the book); tf2: TF 2.x's own "
        f"({_default('seeding')})",
    )
    p.add_argument(
        "--loop",
        choices=CHOICES["loop"],
        help="xla: whole epochs of the book's steps compiled by XLA; feed_dict: the "
        f"book's own loop, one Session call per step ({_default('loop')})",
    )
    p.add_argument("--feed-dict", action="store_true", help="the same as --loop feed_dict")
    p.add_argument(
        "--threads",
        type=_integers("INTRA,INTER (two integers)", 2),
        metavar="INTRA,INTER",
        help=f"Session thread pools, 0 = one per core ({_default('threads')}); the bn network's "
        "results do not depend on them, some batch-50 networks' last bits do",
    )
    p.add_argument(
        "--data",
        metavar="PATH",
        type=path_arg,
        help=f"mnist.npz or a folder with the four MNIST IDX files (default: "
        f"${data.ENV_VAR}, then the Keras cache, then a download; with --resume, the "
        f"copy the run was trained on)",
    )
    p.add_argument(
        "--logdir", metavar="DIR", default="tf_logs", type=path_arg, help="where run folders go (default: %(default)s)"
    )
    p.add_argument(
        "--resume",
        metavar="RUN",
        type=path_arg,
        help="continue RUN (a run folder) from its last completed epoch, or from the "
        "epoch of one of its checkpoints (RUN/model.ckpt-N)",
    )
    p.add_argument(
        "--from",
        dest="reuse_from",
        metavar="RUN",
        type=path_arg,
        help="for the reuse presets: the trained gradient_clipping run (a folder, one of its checkpoints, or "
        "latest) whose layers they start from; reuse_model and reuse_lower_imported import its .meta graph, "
        "as the book's cells do",
    )
    p.add_argument("--dry-run", action="store_true", help="a couple of steps and one checkpoint, for smoke tests")
    p.add_argument("--quiet", action="store_true", help="no progress bar (nor the note when tqdm is missing)")
    p.set_defaults(resume_from=None)  # the checkpoint of RUN/model.ckpt-N, found by prepare()
    return p


def config_from_args(args):
    cfg = PRESETS[args.preset]
    flags = ("epochs", "batch_size", "learning_rate", "momentum", "seed", "seeding", "threads", "hidden")
    changes = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    if args.feed_dict and args.loop not in (None, "feed_dict"):
        raise BnmnistError(f"--feed-dict and --loop {args.loop} contradict each other; pass one")
    if args.loop or args.feed_dict:
        changes["loop"] = args.loop or "feed_dict"
    if args.reuse_from:  # the source checkpoint, recorded with its SHA-256 in config.json
        from . import reuse

        prefix, _ = reuse.source(args.reuse_from, args.logdir, preset="gradient_clipping")
        changes.update(reuse_from=os.path.abspath(prefix), reuse_sha256=reuse.sha256(prefix))
    return cfg.replace(**changes)


def _explicit_flags(argv):
    return {a[2:].split("=", 1)[0].replace("-", "_") for a in argv if a.startswith("--")}


def prepare(argv):
    """Everything up to training, without TensorFlow: returns (config, split, data_info,
    run_dir or None, resume_dir or None, args). Raises BnmnistError for any bad input."""
    args = build_parser().parse_args(argv)
    if args.resume:
        refused = sorted(_explicit_flags(argv) - RESUME_ALLOWED)
        if refused:
            raise BnmnistError(
                f"--resume takes its configuration from the run folder; drop "
                f"--{', --'.join(r.replace('_', '-') for r in refused)}"
            )
        run_dir, args.resume_from, cfg = runs.resolve(args.resume, newest=False)
        cfg = cfg.replace(**{k: getattr(args, k) for k in ("epochs", "threads") if getattr(args, k) is not None})
        _check_resumable(run_dir, cfg, args.epochs, args.resume_from)
        runs.check_logdir(run_dir)
    else:
        cfg = config_from_args(args)
    cfg.validated()
    if args.resume:  # the copy the run was trained on, as its data.json records it
        mnist = data.load_recorded(runs.read_data_record(run_dir), args.data, owner=run_dir)
    else:
        runs.check_logdir(args.logdir, create=False)  # quick, before the data is read
        mnist = data.load(args.data)
    cfg.validated(n_train=data.n_train(mnist))
    split = data.split(mnist)
    info = {"source": mnist.source, "sha256": mnist.fingerprint(), "n_train": split.n_train}
    info.update(n_valid=len(split.X_valid), n_test=len(split.X_test))
    if args.resume:
        return cfg, split, info, None, run_dir, args
    runs.check_logdir(args.logdir)
    return cfg, split, info, args.logdir, None, args


def _check_resumable(run_dir, cfg, epochs_flag, start):
    """A resume must have an epoch to start from and one to train (or a result to finish)."""
    done = runs.epochs_done(run_dir, start)
    if not done:
        saved = runs.saved_checkpoints(run_dir)
        if saved:
            raise BnmnistError(
                f"{run_dir}: its '{runs.STATE_FILE}' file names no checkpoint, but "
                f"{os.path.basename(saved[-1])} is there; resume from it: python "
                f"scripts/train.py --resume {saved[-1]}"
            )
        raise BnmnistError(f"{run_dir} has no completed epoch to resume from; start a new run")
    results = runs.read_results(run_dir)
    if (results or {}).get("dry_run"):
        raise BnmnistError(f"{run_dir} was a --dry-run (a couple of steps), not a run to go on with; start a new run")
    if epochs_flag is not None and epochs_flag < done:
        raise BnmnistError(
            f"{run_dir} already has {done} completed epochs; --epochs {epochs_flag} "
            f"would not extend it: pass more than {done}"
        )
    if done >= cfg.epochs and results is not None:
        accuracy = results.get("test_accuracy")
        accuracy = f" (test accuracy {accuracy:.4f})" if isinstance(accuracy, float) else ""
        raise BnmnistError(
            f"{run_dir} already finished its {done} epochs{accuracy}; pass --epochs N "
            f"with N above {done} to train it further, or open it with bnmnist.restore"
        )


def run():
    """The command: :func:`main`, then the exit. Every file is closed by then, so the process skips
    the interpreter's teardown, which would free TensorFlow object by object for nothing."""
    rc = main()
    with contextlib.suppress(BrokenPipeError):
        sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(rc)


class Terminated(KeyboardInterrupt):
    """SIGTERM outside the training loop (which checks a flag between steps): stop as Ctrl-C does."""

    signum = signal.SIGTERM


def _raise_terminated(_signum, _frame):
    # once is enough: a second SIGTERM (a supervisor sending it again) must not break into a
    # command that is already stopping
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise Terminated


def exit_code(interrupt):
    """128 + the signal's number, as a shell reports it: 130 for Ctrl-C, 143 for SIGTERM."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


def stopped_by(signum):
    """How bnmnist's commands name a stop signal in their last line."""
    return "stopped by SIGTERM" if signum == signal.SIGTERM else "interrupted"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    try:
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    except ValueError:  # not the main thread: SIGTERM keeps its handler
        previous = None
    run = {}  # the run folder, once there is one
    try:
        return _main(argv, run)
    except BrokenPipeError:  # stdout was a pipe whose reader went away (| head)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the exit-time flush is quiet too
        resume = (
            (f"; the completed epochs are saved, resume with: python scripts/train.py --resume {run['dir']}")
            if run.get("dir") and runs.read_state(run["dir"])
            else ""
        )
        print(f"bnmnist-train: stopped: standard output was closed{resume}", file=sys.stderr)
        return EXIT_PIPE
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _main(argv, run):
    t0 = time.perf_counter()
    try:
        cfg, split, info, logdir, resume_dir, args = prepare(argv)
        # a run another process still trains is refused here, before TensorFlow
        with runs.run_lock(resume_dir) if resume_dir else contextlib.nullcontext():
            return _train(t0, cfg, split, info, logdir, resume_dir, args, run)
    except BnmnistError as e:  # bad input: nothing trained
        print(f"bnmnist-train: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as e:
        print(f"bnmnist-train: {stopped_by(exit_code(e) - 128)} before training started", file=sys.stderr)
        return exit_code(e)


def _train(t0, cfg, split, info, logdir, resume_dir, args, run):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # hide TensorFlow's start-up chatter
    run_dir = resume_dir
    t_data = time.perf_counter()
    if cfg.run.loop == "xla":  # TensorFlow reads where its compile cache is once, when imported
        compile_cache.enable()
    startup = _StartupWithoutCollector()
    try:
        _import_tensorflow_without_keras()
        _quiet_event_writer_thread()
        from .trainer import progress_bar, train

        t_tf = time.perf_counter()
        if cfg.reuse and not resume_dir:  # the source has the layers and shapes, before a folder is made
            from .reuse import check_source

            check_source(cfg.reuse_from, cfg)
        run_dir = run["dir"] = resume_dir or runs.new_run_dir(logdir)
        print(f"Run folder: {run_dir}", flush=True)
        resume = args.resume_from or resume_dir is not None  # that checkpoint, or the newest
        result = train(
            cfg,
            split,
            run_dir,
            resume=resume,
            dry_run=args.dry_run,
            data_info=info,
            progress=progress_bar(not args.quiet, note=lambda: print(NO_TQDM, file=sys.stderr)),
            before_first_step=startup.end,
        )
    except (TrainingInterrupted, KeyboardInterrupt) as e:
        said = stopped_by(exit_code(e) - 128)
        if getattr(e, "epochs_done", 0):
            print(
                f"\n{said[0].upper()}{said[1:]}: {e.epochs_done} completed epoch(s) are saved in {e.run_dir}.\n"
                f"Resume with: python scripts/train.py --resume {e.run_dir}",
                file=sys.stderr,
            )
        else:  # a resume command would be refused: there is nothing to go on from
            where = f" ({run_dir})" if run_dir else ""
            print(f"\nbnmnist-train: {said} before the first epoch finished{where}", file=sys.stderr)
        return exit_code(e)
    except NumericalError as e:
        print(f"bnmnist-train: error: {e}; try a smaller --learning-rate (now {cfg.learning_rate})", file=sys.stderr)
        return EXIT_NUMERICAL
    except WriteError as e:
        if e.resumable:
            advice = f"make room or fix the folder, then resume with: python scripts/train.py --resume {run_dir}"
        else:
            advice = (
                "make room or fix the folder, then start a new run" if runs.is_run_dir(run_dir) else "start a new run"
            )
        print(f"bnmnist-train: error: {e}; {advice}", file=sys.stderr)
        return EXIT_WRITE
    except BnmnistError as e:
        print(f"bnmnist-train: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        startup.end(freeze=False)
        compile_cache.finish()
    cached = ", loaded from its cache" if compile_cache.loaded() else ""
    print("Test accuracy:", result.test_accuracy)  # float32, printed as the book prints
    print(
        f"Start-up before the first step: {t_tf - t0 + result.startup_seconds:.1f} s "
        f"(flags and data {t_data - t0:.1f} s, TensorFlow import {t_tf - t_data:.1f} s, "
        f"graph and session {result.startup_seconds:.1f} s"
        + (f", of which XLA compile {result.compile_seconds:.1f} s{cached})" if result.compile_seconds else ")")
    )
    print(
        f"Training took {result.train_seconds:.1f} s{_resumed_epochs(result)} "
        f"({result.examples_per_second:,.0f} examples/s); run saved in {run_dir}"
    )
    return 0


class _StartupWithoutCollector:
    """Python's cyclic garbage collector, off from TensorFlow's import to the first step: start-up
    makes many long-lived objects and almost no cyclic garbage. At the first step they are frozen
    (``gc.freeze``) and collection resumes; a caller that had it off gets that state back."""

    def __init__(self):
        self.was_enabled = gc.isenabled()
        gc.disable()

    def end(self, freeze=True):
        if freeze and self.was_enabled and not gc.isenabled():
            gc.freeze()
        if self.was_enabled:
            gc.enable()


def _import_tensorflow_without_keras():
    """TensorFlow's ``__init__`` imports Keras's optimizers, for the SavedModel registry, and
    catches an ImportError there. Training never touches Keras, so that import is made to fail;
    Keras imports normally afterwards, and one already imported is left as it is."""
    blocked = [name for name in ("keras", "tf_keras") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # "import keras" raises ImportError while this is here
    try:
        importlib.import_module("tensorflow")
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def _quiet_event_writer_thread():
    """No traceback from TensorBoard's writer thread on a full disk: the trainer says it in one line."""
    default_hook = threading.excepthook

    def hook(args):
        if args.thread is None or args.thread.name != "EventLoggerThread":
            default_hook(args)

    threading.excepthook = hook
    logging.getLogger("tensorflow").addFilter(lambda r: "EventFileWriter writer thread error" not in r.getMessage())


def _resumed_epochs(result):
    """For a resumed run, which epochs this process trained (the time covers only those)."""
    first, last = result.first_epoch, len(result.accuracies) - 1
    return "" if not first else f" for epoch{f' {first}' if first == last else f's {first}-{last}'} (resumed)"


if __name__ == "__main__":
    run()
