"""How long the console takes: ``export``, ``report`` and ``compare`` of the demo's run, end to end.

Each command runs as a fresh process (what a user waits for: interpreter start, imports, reading,
fits, figures, writing), ``--repeats`` times; the median is reported against the targets (export
< 1 s, report < 3 s on this machine) and as a ratio to a baseline measured in the same run: a
process that only imports what every command needs (numpy, pandas, matplotlib's Figure). The
script also says which heavy packages each command imported (from ``python -X importtime``:
``lightning``, ``torch``, ``scipy.stats`` cost seconds and none of them is needed to read a run),
and splits the report's time in-process (read, fits, figures, page).

    python benchmarks/bench_console.py                       # makes the demo's run (8 epochs) first
    python benchmarks/bench_console.py --run runs/digits/version_0 --repeats 5
    python benchmarks/bench_console.py --package /path/to/other/checkout   # measure another tree
    python benchmarks/bench_console.py --patch proposed.patch   # the tree with a patch applied (in a copy)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"export": 1.0, "report": 3.0}
HEAVY = ("lightning", "torch", "scipy.stats", "scipy.optimize", "tensorboard", "matplotlib", "pandas")
BASELINE = "import numpy, pandas, matplotlib.figure"


def _env(package: Path) -> dict[str, str]:
    # The commands run from the temporary folder: ``python -m`` puts the working directory first
    # on sys.path, which would shadow ``package``.
    env = dict(os.environ)
    env["PYTHONPATH"] = str(package) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("MPLBACKEND", "Agg")
    return env


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


def _imported(argv: list[str], env: dict[str, str]) -> dict[str, float]:
    """Cumulative import seconds of the heavy top-level packages a command imported."""
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    found: dict[str, float] = {}
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)", line)
        if match and match.group(3) in HEAVY and match.group(3) not in found:
            found[match.group(3)] = int(match.group(1)) / 1e6
    return found


def _patched_copy(package: Path, patch: Path, scratch: Path) -> Path:
    """A copy of ``package``'s ``lightning_complexity`` with ``patch`` (``git diff`` paths) applied; the checkout is untouched."""
    copy = scratch / "patched"
    shutil.copytree(package / "lightning_complexity", copy / "lightning_complexity", ignore=shutil.ignore_patterns("__pycache__"))
    done = subprocess.run(["git", "apply", "-p1", str(patch.resolve())], cwd=copy, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{patch} does not apply to {package}: {done.stderr.strip()}")
    return copy


def _make_demo(folder: Path, env: dict[str, str]) -> Path:
    print(f"making the demo's run in {folder} (8 epochs) ...", flush=True)
    subprocess.run([sys.executable, "-m", "lightning_complexity.cli", "demo", "--out", str(folder), "--quiet"], env=env, check=True, capture_output=True, cwd=tempfile.gettempdir())
    return next(folder.glob("digits/version_*"))


def _phases(run_dir: Path, out: Path, env: dict[str, str]) -> str:
    """The report's time split in one warm process (imports done)."""
    code = f"""
import time
from lightning_complexity.export import load_run
from lightning_complexity.report import write_report
import matplotlib.figure
t0 = time.perf_counter(); run = load_run({str(run_dir)!r}); t1 = time.perf_counter()
run.history.power_law_fits(); t2 = time.perf_counter()
write_report(run, {str(out)!r}, progress=False); t3 = time.perf_counter()
print(f"read {{t1 - t0:.3f}} s, fits {{t2 - t1:.3f}} s, whole report after reading {{t3 - t2:.3f}} s (figures, tables, page)")
"""
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=tempfile.gettempdir())
    return done.stdout.strip() or done.stderr.strip()[-500:]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, help="a run folder (default: make the demo's run in a temporary folder)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--package", type=Path, default=ROOT, help="the checkout whose lightning_complexity is measured (default: this one)")
    parser.add_argument("--patch", type=Path, help="measure --package with this patch applied to a temporary copy")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        package = _patched_copy(args.package, args.patch, scratch) if args.patch else args.package
        env = _env(package)
        run_dir = args.run or _make_demo(scratch / "runs", env)
        python = sys.executable
        cli = [python, "-m", "lightning_complexity.cli"]
        commands = {
            "baseline": [python, "-c", BASELINE],
            "export": [*cli, "export", str(run_dir), "--out", str(scratch / "h.csv")],
            "export (tensorboard)": [*cli, "export", str(run_dir), "--source", "tensorboard", "--out", str(scratch / "t.csv")],
            "report": [*cli, "report", str(run_dir), "--out", str(scratch / "report"), "--quiet"],
            "report (tensorboard)": [*cli, "report", str(run_dir), "--source", "tensorboard", "--out", str(scratch / "report_tb"), "--quiet"],
            "compare": [*cli, "compare", str(run_dir), str(run_dir), "--labels", "a,b", "--out", str(scratch / "cmp"), "--quiet"],
        }
        for argv in commands.values():  # warm the file cache and matplotlib's font cache
            _timed(argv, env)
        times = {name: statistics.median(_timed(argv, env) for _ in range(args.repeats)) for name, argv in commands.items()}
        patched = f" + {args.patch}" if args.patch else ""
        print(f"\nrun: {run_dir}; package: {args.package}{patched}; {args.repeats} repeats, medians; load average {os.getloadavg()[0]:.2f}")
        print(f"{'command':<22} {'s':>6} {'× baseline':>11} {'target':>8}  heavy imports (cumulative s)")
        for name, argv in commands.items():
            target = TARGETS.get(name.split(" ")[0])  # the same target whichever source the run is read from
            verdict = "" if target is None else (f"< {target:g} ok" if times[name] < target else f"> {target:g} SLOW")
            heavy = ", ".join(f"{k} {v:.2f}" for k, v in sorted(_imported(argv, env).items(), key=lambda kv: -kv[1]))
            print(f"{name:<22} {times[name]:6.2f} {times[name] / times['baseline']:11.1f} {verdict:>8}  {heavy}")
        print("\nreport, in-process:", _phases(run_dir, scratch / "phases", env))
    return 0 if all(times[name] < TARGETS[name.split(" ")[0]] for name in times if name.split(" ")[0] in TARGETS) else 1


if __name__ == "__main__":
    sys.exit(main())
