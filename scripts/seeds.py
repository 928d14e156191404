"""Train a preset over many seeds in parallel and summarise: ``python scripts/seeds.py --seeds 0-9``.

Each seed is a normal ``scripts/train.py`` run (its own run folder under ``--logdir``), up to
``--jobs`` at once (default: the number of cores). Prints per-epoch mean, standard deviation, min
and max of validation accuracy and the test accuracy, marks seed 42 (always trained, added if not
listed), writes the same to CSV, and plots every seed's curve.
"""

import concurrent.futures
import datetime
import os
import sys
import threading

from bnmnist import data, runs
from bnmnist.cli import path_arg
from bnmnist.config import PRESETS
from bnmnist.errors import BnmnistError

import tooling
from child_runs import report_interrupted, stop_runs_on_signals, train_run
from tooling import ScriptParser, positive_int

HERE = os.path.dirname(os.path.abspath(__file__))


def train_seed(seed, args, stop):
    """Train one seed; once ``stop`` is set (a stop signal, or a seed failed) queued seeds start no
    run. The worker that sees its run fail sets ``stop`` itself, before it could take the next seed."""
    if stop.is_set():
        return seed, None
    try:
        return seed, train_run(["--preset", args.preset, "--seed", str(seed)], args, f"seed {seed}")
    except (BnmnistError, KeyboardInterrupt):  # a failed or stopped run: start no more
        stop.set()
        raise


def main(argv=None):
    ap = ScriptParser(prog="seeds", description="Train a preset over many seeds and summarise.")
    trainable = sorted(p for p, c in PRESETS.items() if not c.reuse)  # the reuse cells need a source run
    ap.add_argument("--preset", choices=trainable, default="bn", help="(default: %(default)s)")
    ap.add_argument("--seeds", default="0-9", help="ranges and lists, e.g. 0-9 or 0-4,42 (default: %(default)s)")
    ap.add_argument("--epochs", type=positive_int, help="override the preset's epochs")
    ap.add_argument("--data", type=path_arg, help="MNIST path (default: $BNMNIST_DATA, then the Keras cache)")
    ap.add_argument("--logdir", default="tf_logs", type=path_arg, help="where the runs go (default: %(default)s)")
    ap.add_argument(
        "--jobs", type=positive_int, default=os.cpu_count(), help="parallel runs (default: cores = %(default)s)"
    )
    ap.add_argument(
        "--markdown",
        type=path_arg,
        metavar="FILE",
        help="also write the table and the plot into FILE's section for this preset (docs/seeds.md)",
    )
    ap.add_argument("--csv", type=path_arg, help="CSV path (default: LOGDIR/seeds-PRESET-<UTC time>.csv)")
    args = ap.parse_args(argv)
    try:
        seeds = tooling.parse_seeds(args.seeds)
        runs.check_logdir(args.logdir)
        for flag, path in (("--csv", args.csv), ("--markdown", args.markdown)):
            if path:  # its folder must take the table once every seed has trained
                if os.path.isdir(path):
                    raise BnmnistError(f"{flag} {path} is a folder; give a file name, like {path}/seeds.csv")
                runs.make_writable(
                    os.path.dirname(os.path.abspath(path)),
                    f"the folder of {flag}",
                    f"choose a {flag} path in a folder you can write",
                )
        data.load(args.data)  # bad data is refused once, here, and a download happens once
    except BnmnistError as e:
        print(f"seeds: error: {e}", file=sys.stderr)
        return 2
    if 42 not in seeds:
        seeds.append(42)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d%H%M%S")
    csv_path = args.csv or os.path.join(args.logdir, f"seeds-{args.preset}-{stamp}.csv")
    print(f"Training preset {args.preset} for seeds {seeds}, {args.jobs} at a time", flush=True)
    stop_runs_on_signals()  # Ctrl-C (even when started with `&`) and SIGTERM stop every run cleanly
    results, stop = {}, threading.Event()
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = []
        try:
            futures = [pool.submit(train_seed, s, args, stop) for s in seeds]
            for future in futures:
                seed, res = future.result()
                if res is None:  # not started: a failure or a stop comes first in seed order
                    continue
                results[seed] = res
                print(
                    f"seed {seed}: final validation {res['validation_accuracy'][-1]:.4f}, "
                    f"test {res['test_accuracy']:.4f} ({res['run_dir']})",
                    flush=True,
                )
        except (BnmnistError, KeyboardInterrupt) as e:
            stop.set()
            pool.shutdown(cancel_futures=True)  # start no more seeds; running ones save and end
            if isinstance(e, KeyboardInterrupt):
                finished = f"{len(results)} finished seed(s); the runs are in {args.logdir}"
                return report_interrupted("seeds", futures, getattr(e, "signum", 0), finished)
            print(f"seeds: error: {e}", file=sys.stderr)
            return 2
    ordered, rows, test = tooling.seed_statistics(results)
    print(f"\nValidation accuracy over {len(ordered)} seeds ({args.preset}):")
    print(f"{'epoch':>5} {'mean':>7} {'std':>7} {'min':>7} {'max':>7} {'seed 42':>8}")
    for r in rows:
        print(f"{r['epoch']:>5} {r['mean']:.4f} {r['std']:.4f} {r['min']:.4f} {r['max']:.4f} {r['seed_42']:>8.4f}")
    print(
        f" test {test.mean():.4f} {test.std(ddof=1) if len(test) > 1 else 0:.4f} {test.min():.4f} "
        f"{test.max():.4f} {results[42]['test_accuracy']:>8.4f}"
    )
    print(
        f"Seed 42 ranks {tooling.rank_of_seed_42(results, 'validation')} on final validation accuracy, "
        f"{tooling.rank_of_seed_42(results, 'test')} on test accuracy"
    )
    try:
        tooling.write_seed_csv(csv_path, ordered, rows, test, results)
    except OSError as e:
        print(
            f"seeds: error: could not write {csv_path} ({e.strerror}); the table above and every "
            f"run folder in {args.logdir} are kept",
            file=sys.stderr,
        )
        return 4
    print(f"CSV written to {csv_path}")
    png = None
    plot_to = os.path.splitext(csv_path)[0] + ".png"
    if args.markdown:  # the plot goes beside the document that shows it
        plot_to = os.path.join(os.path.dirname(args.markdown) or ".", f"seeds-{args.preset}.png")
    try:
        png = tooling.plot_runs(
            [results[s]["run_dir"] for s in ordered],
            out=plot_to,
            book=args.preset == "bn",
            title=f"{args.preset}: {len(ordered)} seeds",
        )
        print(f"Plot written to {png}")
    except BnmnistError as e:
        print(f"(no plot: {e})")
    if args.markdown:
        try:
            write_markdown(args, ordered, rows, test, results, png)
        except OSError as e:  # the section is written whole or not at all
            print(
                f"seeds: error: could not write {args.markdown} ({e.strerror}); it is unchanged, and {csv_path} "
                f"and every run folder in {args.logdir} are kept",
                file=sys.stderr,
            )
            return 4
        print(f"Table written to {args.markdown}")
    return 0


def write_markdown(args, ordered, rows, test, results, png):
    """This preset's section of the seeds document: how it was made, the table, the plot."""
    command = " ".join(["python scripts/seeds.py", *sys.argv[1:]])
    lines = [
        f"## {args.preset}",
        "",
        f"Measured {tooling.measured_on()}, by `{command}`: validation accuracy over {len(ordered)} "
        f"seeds (seed 42 is the book's).",
        "",
        "| epoch | mean | std | min | max | seed 42 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['epoch']} | {r['mean']:.4f} | {r['std']:.4f} | {r['min']:.4f} | {r['max']:.4f} | {r['seed_42']:.4f} |"
        for r in rows
    ]
    std = test.std(ddof=1) if len(test) > 1 else 0.0
    lines.append(
        f"| test | {test.mean():.4f} | {std:.4f} | {test.min():.4f} | {test.max():.4f} | "
        f"{results[42]['test_accuracy']:.4f} |"
    )
    lines += [
        "",
        f"Seed 42 ranks {tooling.rank_of_seed_42(results, 'validation')} on final validation accuracy and "
        f"{tooling.rank_of_seed_42(results, 'test')} on test accuracy.",
    ]
    if png:
        lines += ["", f"![{args.preset} over {len(ordered)} seeds]({os.path.basename(png)})"]
    tooling.write_markdown_section(args.markdown, f"seeds:{args.preset}", "\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
