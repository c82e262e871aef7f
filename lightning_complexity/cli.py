"""The ``lightning-complexity`` console script.

Example::

    lightning-complexity demo --out runs --epochs 8
    lightning-complexity export runs/digits/version_0/checkpoints/last.ckpt --out history.parquet
    lightning-complexity export runs/digits/version_0 --source tensorboard --format json
    lightning-complexity report runs/digits/version_0 --out report
    lightning-complexity compare runs/digits/version_0 runs/digits/version_1 --out comparison

Errors in what was passed (a missing path, a path without monitor data) print one line on stderr
and exit with status 2; a report or comparison with a figure that could not be drawn exits with 1.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from lightning_complexity.demo import run_demo

    result = run_demo(args.out, epochs=args.epochs, max_samples=args.max_samples, seed=args.seed, quiet=args.quiet)
    history = result.monitor.history
    print()
    print(f"Trained {args.epochs} epochs on scikit-learn digits: validation accuracy {result.val_accuracy:.3f}")
    samples = sorted({int(row.value) for row in history if row.metric == "samples" and row.value == row.value})
    print(f"Monitored sites: {', '.join(history.sites('effective_dimension'))} (on {'/'.join(map(str, samples)) or '?'} probe samples)")
    print(f"History ({len(history)} rows): {result.history_path}  (also .parquet beside it)")
    print(f"Power-law fits of every curve: {result.history_path.with_name('complexity_power_laws.csv')}")
    signature = [f"{site}={value:.3f}" for (metric, site), value in history.latest().items() if metric == "affinity"]
    if signature:
        print(f"Final non-linearity signature (affinity, 1 = affine): {', '.join(signature)}")
    print(f"TensorBoard logs: {result.log_dir}")
    print(f"  view them with:  tensorboard --logdir {Path(args.out)}")
    print(f"Report (HTML):     lightning-complexity report {result.log_dir}")
    return 0


def _fail(command: str, error: BaseException) -> int:
    """One line on stderr naming the command and what went wrong; exit status 2 (usage error)."""
    from lightning_complexity.safe_names import printable

    message = " ".join(printable(error).split())
    print(f"lightning-complexity {command}: {message}", file=sys.stderr)
    return 2


def _note_ignored(command: str, run) -> None:
    """Say on stderr which objects a checkpoint names that were not loaded (a config class, or a crafted payload)."""
    if run.ignored:
        from lightning_complexity.safe_names import printable

        shown = ", ".join(printable(name) for name in run.ignored[:5]) + (f" and {len(run.ignored) - 5} more" if len(run.ignored) > 5 else "")
        print(f"{command}: note: {printable(run.path)} also names {shown}; not needed for the monitor's data, so not imported or run", file=sys.stderr)


_FLOAT32_NOTE = "note: TensorBoard stores scalars as float32, so these values agree with the checkpoint to about 7 significant digits"


def _export(args: argparse.Namespace) -> int:
    from lightning_complexity.export import load_run, power_laws_path, write_history, write_power_laws
    from lightning_complexity.report import time_axis

    source = Path(args.run)
    try:
        run = load_run(source, source=args.source)
    except (FileNotFoundError, ValueError) as error:
        return _fail("export", error)
    _note_ignored("export", run)
    resolved = source.resolve()
    out = Path(args.out) if args.out else resolved.with_name(resolved.stem + "_complexity." + args.format)
    written = write_history(run.history, out, args.format)
    fits = run.history.power_law_records(by=time_axis(run.history))  # no pandas: half of export's time
    fits_path = write_power_laws(fits, power_laws_path(written), args.format)
    print(f"wrote {len(run.history)} rows to {written} and {len(fits)} power-law fits to {fits_path} (read {run.describe()})")
    if not run.exact:
        print(_FLOAT32_NOTE, file=sys.stderr)
    return 0


def _default_report_dir(source: Path) -> Path:
    source = source.resolve()
    return source / "complexity_report" if source.is_dir() else source.with_name(source.stem + "_complexity_report")


def _report(args: argparse.Namespace) -> int:
    from lightning_complexity.export import load_run
    from lightning_complexity.report import write_report
    from lightning_complexity.run_contents import main_validation_metric, run_contents

    source = Path(args.run)
    try:
        run = load_run(source, source=args.source)
    except (FileNotFoundError, ValueError) as error:
        return _fail("report", error)
    print(f"report: read {run.describe()}", file=sys.stderr)
    _note_ignored("report", run)
    try:
        against = main_validation_metric(run_contents(run.history, run.sites).context_keys, args.against)
    except ValueError as error:
        return _fail("report", error)
    result = write_report(run, Path(args.out) if args.out else _default_report_dir(source), label=str(source), progress=not args.quiet, against=against)
    print(f"wrote {result.html_path} and {len(result.figure_paths)} figures beside it")
    if result.failed:
        print(f"lightning-complexity report: {len(result.failed)} figure(s) could not be drawn: {', '.join(result.failed)}", file=sys.stderr)
        return 1
    return 0


def _compare(args: argparse.Namespace) -> int:
    from lightning_complexity.compare import run_labels, write_comparison
    from lightning_complexity.export import load_run

    if len(args.runs) < 2:
        return _fail("compare", ValueError(f"needs at least two runs to compare, got {len(args.runs)}: {args.runs[0]}"))
    labels = run_labels(args.runs) if args.labels is None else [label.strip() for label in args.labels.split(",")]
    if len(labels) != len(args.runs) or len(set(labels)) != len(labels):
        return _fail("compare", ValueError(f"--labels must give {len(args.runs)} distinct comma-separated names, one per run; got {args.labels!r}"))
    runs = []
    for path in args.runs:
        try:
            runs.append(load_run(path, source=args.source))
        except (FileNotFoundError, ValueError) as error:
            return _fail("compare", error)
    for run in runs:
        print(f"compare: read {run.describe()}", file=sys.stderr)
        _note_ignored("compare", run)
    result = write_comparison(runs, labels, args.out, max_panels=args.max_panels, progress=not args.quiet)
    print(f"wrote {result.html_path}, {result.csv_path} (one row per run: {', '.join(labels)}) and {len(result.figure_paths)} figures")
    if result.failed:
        print(f"lightning-complexity compare: {len(result.failed)} figure(s) could not be drawn: {', '.join(result.failed)}", file=sys.stderr)
        return 1
    return 0


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lightning-complexity", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="train a small CNN on the bundled digits with the monitor on")
    demo.add_argument("--out", default="runs", help="folder for TensorBoard logs and the history (default: runs)")
    demo.add_argument("--epochs", type=int, default=8)
    demo.add_argument("--max-samples", type=int, default=360, help="probe size (default: the whole validation split)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--quiet", action="store_true", help="no progress bar or model summary")
    demo.set_defaults(handler=_demo)

    run_help = "a Lightning checkpoint (.ckpt), a TensorBoard log directory, or a directory holding checkpoints"
    source_help = "what to read in a directory: auto (a checkpoint with monitor state, else TensorBoard; default), checkpoint, or tensorboard (float32 values)"

    export = commands.add_parser("export", help="write a run's history and its power-law fits as CSV, JSON or Parquet")
    export.add_argument("run", help=run_help)
    export.add_argument("--format", choices=("csv", "json", "parquet"), default="csv", help="used when --out has no such suffix (default: csv)")
    export.add_argument("--out", help="output file (default: <run>_complexity.<format> beside the run); the fits go to <out>_power_laws.<format>")
    export.add_argument("--source", choices=("auto", "checkpoint", "tensorboard"), default="auto", help=source_help)
    export.set_defaults(handler=_export)

    report = commands.add_parser("report", help="write a self-contained HTML report of one run, with its figures as SVG")
    report.add_argument("run", help=run_help)
    report.add_argument("--out", help="output folder (default: <run>/complexity_report, or <checkpoint>_complexity_report beside a file)")
    report.add_argument("--source", choices=("auto", "checkpoint", "tensorboard"), default="auto", help=source_help)
    report.add_argument("--against", metavar="KEY", help="the trainer metric to plot complexity against (default: the first val* key with 'acc', else val_loss, else the first val* key)")
    report.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    report.set_defaults(handler=_report)

    compare = commands.add_parser("compare", help="overlay several runs' curves and tabulate final values and power-law exponents")
    compare.add_argument("runs", nargs="+", metavar="RUN", help=run_help + " (two or more)")
    compare.add_argument("--out", default="complexity_comparison", help="output folder (default: complexity_comparison)")
    compare.add_argument("--labels", help="comma-separated run names (default: the shortest distinct ends of the paths)")
    compare.add_argument("--max-panels", type=_positive_int, default=12, help="most site panels per figure; more sites are sampled evenly by depth (default: 12)")
    compare.add_argument("--source", choices=("auto", "checkpoint", "tensorboard"), default="auto", help=source_help)
    compare.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    compare.set_defaults(handler=_compare)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
