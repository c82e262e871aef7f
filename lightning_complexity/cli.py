"""The ``lightning-complexity`` console script.

Example::

    lightning-complexity demo --out runs --epochs 8
    lightning-complexity export runs/digits/version_0/checkpoints/last.ckpt --out history.parquet
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
    print(f"Monitored sites: {', '.join(history.sites('effective_dimension'))}")
    print(f"History ({len(history)} rows): {result.history_path}  (also .parquet beside it)")
    print(f"TensorBoard logs: {result.log_dir}")
    print(f"  view them with:  tensorboard --logdir {Path(args.out)}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from lightning_complexity.export import load_history

    source = Path(args.run)
    try:
        history = load_history(source)
    except (FileNotFoundError, ValueError) as error:
        print(f"lightning-complexity export: {error}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else source.with_name(source.stem + "_complexity." + args.format)
    {"csv": history.to_csv, "json": history.to_json, "parquet": history.to_parquet}[out.suffix.lstrip(".") or args.format](out)
    print(f"wrote {len(history)} rows to {out}")
    return 0


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

    export = commands.add_parser("export", help="write the monitor's history from a Lightning checkpoint")
    export.add_argument("run", help="a .ckpt file written during a fit with the monitor on")
    export.add_argument("--format", choices=("csv", "json", "parquet"), default="csv")
    export.add_argument("--out", help="output file (default: next to the checkpoint)")
    export.set_defaults(handler=_export)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
