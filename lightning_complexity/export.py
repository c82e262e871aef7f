"""Reading a monitor's history back from where a run left it, and writing it out again.

A *run* is any of:

* a Lightning checkpoint file: the monitor's state (``checkpoint["callbacks"]["ComplexityMonitor…"]``)
  holds the history in float64, exactly as measured, and the layer-algebra table. A checkpoint is
  a pickle, and unpickling can run code: it is read with
  :mod:`lightning_complexity.checkpoint_reader`, which imports and runs nothing the file names
  and reads only its ``data.pkl`` (never the model's weights);
* a TensorBoard event file, or a log directory holding event files: the ``complexity/<metric>/<site>``
  scalars and ``complexity_meta/epoch``. TensorBoard stores scalars as **float32**, so values read
  from it agree with the checkpoint to about 7 significant digits (relative error ≤ 6e-8), not
  bit for bit, and the layer-algebra table is not available. The training context (site
  ``trainer``) is rebuilt from the user's own scalars: at each measurement, each one's latest
  value logged at or before that step;
* a directory: the newest checkpoint under it that holds monitor state (searched recursively),
  otherwise the newest TensorBoard event directory under it that holds ``complexity/*`` scalars.
  ``source="tensorboard"`` or ``"checkpoint"`` picks one kind explicitly. Checkpoints without
  monitor state (another callback's, a crafted file, one being written) are skipped.

Every file written here is replaced atomically (:mod:`lightning_complexity.atomic`), and the text
cells of CSV tables follow the spreadsheet rule of :mod:`lightning_complexity.safe_names`.

Example::

    from lightning_complexity.export import load_run, write_history
    run = load_run("runs/digits/version_0")            # checkpoint if there is one, else TensorBoard
    run.kind, len(run.history)                         # ('checkpoint', 336)
    write_history(run.history, "history.parquet")      # format from the suffix
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lightning_complexity.atomic import atomic_path, atomic_write, atomic_write_text
from lightning_complexity.checkpoint_reader import UnreadableCheckpoint, plain_data, read_checkpoint
from lightning_complexity.history import POWER_LAW_COLUMNS, MetricHistory
from lightning_complexity.run_contents import CONTEXT_SITE, SiteInfo, parse_site_metadata
from lightning_complexity.safe_names import printable, records_frame, spreadsheet_cell, spreadsheet_frame
from lightning_complexity.tensorboard import EPOCH_TAG, FIGURE_PREFIX, POWERLAW_PREFIX, PREFIX, SITES_TAG, split_scalar_tag

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FORMATS",
    "SOURCES",
    "NoMonitorData",
    "RunData",
    "load_history",
    "load_run",
    "power_laws_path",
    "write_history",
    "write_power_laws",
    "write_table",
]

#: file formats of :func:`write_history` and :func:`write_power_laws`.
FORMATS = ("csv", "json", "parquet")
#: what :func:`load_run` may read: ``auto`` (checkpoint first), ``checkpoint`` or ``tensorboard``.
SOURCES = ("auto", "checkpoint", "tensorboard")
_STATE_PREFIX = "ComplexityMonitor"
#: monitor state versions this reader understands (2 added site metadata, failures and earlier fits).
_STATE_VERSIONS = (1, 2)
_EVENT_FILE_MARKER = "tfevents"


class NoMonitorData(ValueError):
    """The path exists but holds no ``ComplexityMonitor`` measurements."""


@dataclass(frozen=True)
class RunData:
    """What one run left behind.

    Attributes:
        history: every measurement (float64 from a checkpoint, float32-rounded from TensorBoard).
        path: the file or directory actually read (a checkpoint or an event directory).
        kind: ``"checkpoint"`` or ``"tensorboard"``.
        layer_algebra_columns: the static per-layer table (SPEC §7) as ``{column: values}`` when
            the checkpoint holds it, else None; :attr:`layer_algebra` is it as a DataFrame.
        ignored: globals the checkpoint names outside the monitor's plain data (a model's config
            class, or ``os.system`` in a crafted file); none of them was imported or run.
        sites: what the monitor recorded about each site (module, type, kind, depth), from the
            checkpoint state or TensorBoard's ``complexity_meta/sites``; empty when the run has
            none (older runs): types are then unknown.
        failures: ``(step, reason)`` of each measurement that failed (its rows are NaN); from
            checkpoints only.
    """

    history: MetricHistory
    path: Path
    kind: str
    layer_algebra_columns: dict[str, list[Any]] | None = None
    ignored: tuple[str, ...] = ()
    sites: dict[str, SiteInfo] = field(default_factory=dict)
    failures: tuple[tuple[int, str], ...] = ()

    @property
    def layer_algebra(self) -> pd.DataFrame | None:
        """The layer-algebra table as a DataFrame (built on access: ``export`` never needs pandas)."""
        if not self.layer_algebra_columns:
            return None
        import pandas as pd

        return pd.DataFrame(self.layer_algebra_columns)

    @property
    def exact(self) -> bool:
        """Whether the values are exactly as measured (checkpoint), not rounded to float32 (TensorBoard)."""
        return self.kind == "checkpoint"

    def describe(self) -> str:
        """One line: how many rows from where, e.g. ``"336 rows from checkpoint runs/x/last.ckpt"``."""
        rounding = "" if self.exact else " (float32 values)"
        return f"{len(self.history)} rows from {self.kind} {printable(self.path)}{rounding}"


def load_history(path: str | Path) -> MetricHistory:
    """The :class:`MetricHistory` of a run (see :func:`load_run` for what ``path`` may be).

    Example::

        history = load_history("runs/digits/version_0/checkpoints/last.ckpt")
    """
    return load_run(path).history


def load_run(path: str | Path, source: str = "auto") -> RunData:
    """Read a run's history (and layer-algebra table) from a checkpoint or TensorBoard logs.

    Args:
        path: a checkpoint file, a TensorBoard event file or log directory, or a directory holding
            checkpoints (see the module docstring for which one is read).
        source: ``"auto"`` (a checkpoint with monitor state if there is one, else TensorBoard),
            ``"checkpoint"`` or ``"tensorboard"``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        NoMonitorData: ``path`` holds no monitor measurements of the requested kind (the message
            says what was found instead).
        ValueError: ``source`` is not one of :data:`SOURCES`.

    Example::

        run = load_run("runs/digits/version_0", source="tensorboard")
        run.history.to_dataframe().head()
    """
    if source not in SOURCES:
        raise ValueError(f"source={source!r} is not accepted: expected one of {', '.join(SOURCES)}")
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a Lightning checkpoint, a TensorBoard log directory, or a directory holding checkpoints)")
    if path.is_file():
        if _is_event_file(path):
            if source == "checkpoint":
                raise NoMonitorData(f"{path} is a TensorBoard event file, not a checkpoint (use --source tensorboard or auto)")
            return _from_tensorboard(path)
        if source == "tensorboard":
            raise NoMonitorData(f"{path} is not a TensorBoard event file (events.out.tfevents.*) or log directory")
        return _from_checkpoint(path)
    return _from_directory(path, source)


# ---------------------------------------------------------------------- directories
def _from_directory(path: Path, source: str) -> RunData:
    checkpoints = sorted(path.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime, reverse=True) if source != "tensorboard" else []
    event_dirs = _event_directories(path) if source != "checkpoint" else []
    problems: list[NoMonitorData] = []
    for candidate, read in [(c, _from_checkpoint) for c in checkpoints] + [(d, _from_tensorboard) for d in event_dirs]:
        try:
            return read(candidate)
        except NoMonitorData as problem:  # another callback's checkpoint, a file being written, other logs
            problems.append(problem)
    if len(problems) == 1:  # one candidate: its own message says best what is wrong
        raise problems[0]
    if source == "checkpoint":
        found = f"{len(checkpoints)} checkpoint(s), none with ComplexityMonitor state" if checkpoints else "no Lightning checkpoint (*.ckpt)"
        raise NoMonitorData(f"{path} holds no monitor data in checkpoints: {found} under it")
    found = []
    if source != "tensorboard":
        found.append(f"{len(checkpoints)} checkpoint(s) without ComplexityMonitor state" if checkpoints else "no Lightning checkpoint (*.ckpt)")
    found.append(f"{len(event_dirs)} TensorBoard event folder(s) without {PREFIX}/* scalars" if event_dirs else "no TensorBoard event files")
    raise NoMonitorData(f"{path} holds no monitor data: {' and '.join(found)} under it")


def _is_event_file(path: Path) -> bool:
    return _EVENT_FILE_MARKER in path.name and path.name.startswith("events.out")


def _event_directories(root: Path) -> list[Path]:
    """Folders under ``root`` (itself included) holding event files, newest event file first."""
    newest: dict[Path, float] = {}
    for event_file in root.rglob("events.out.*"):
        if _is_event_file(event_file) and event_file.is_file():
            newest[event_file.parent] = max(newest.get(event_file.parent, 0.0), event_file.stat().st_mtime)
    return sorted(newest, key=newest.__getitem__, reverse=True)


# ---------------------------------------------------------------------- checkpoints
def _from_checkpoint(path: Path) -> RunData:
    if path.is_dir():
        raise NoMonitorData(f"{path} is a directory, not a checkpoint file (a sharded checkpoint is not supported)")
    try:
        checkpoint = read_checkpoint(path)
    except UnreadableCheckpoint as error:
        raise NoMonitorData(f"{path} is not a Lightning checkpoint that can be read safely ({error.reason})") from error
    data = checkpoint.data
    states = data.get("callbacks", {}) if isinstance(data, dict) else {}
    keys = [key for key in (states if isinstance(states, dict) else {}) if isinstance(key, str) and key.startswith(_STATE_PREFIX)]
    monitor_states = []
    for key in keys:
        try:  # only the monitor's own state is turned into values; nothing else is touched
            state = plain_data(checkpoint, states[key], f"callbacks/{key}")
        except UnreadableCheckpoint as error:
            raise NoMonitorData(str(error)) from error
        if isinstance(state, dict) and "history" in state:
            monitor_states.append(state)
    if not monitor_states:
        named = f"; it names {_listed(checkpoint.ignored)}, which was not run" if checkpoint.ignored else ""
        raise NoMonitorData(f"{path} holds no ComplexityMonitor state (was the monitor attached during that fit?){named}")
    for state in monitor_states:
        version = state.get("version", 1)
        if version not in _STATE_VERSIONS:
            raise NoMonitorData(f"{path}: ComplexityMonitor state version {version!r} cannot be read (this lightning_complexity reads versions {', '.join(map(str, _STATE_VERSIONS))}; upgrade it)")
    try:
        histories = [MetricHistory.from_state_dict(state["history"]) for state in monitor_states]
    except (ValueError, TypeError) as error:
        raise NoMonitorData(f"{path}: the ComplexityMonitor history cannot be read: {error}") from error
    if len(histories) == 1:
        history = histories[0]
    else:  # several monitors in one fit: one table, still in measurement order
        history = MetricHistory(sorted((row for h in histories for row in h), key=lambda row: row.step))
    if len(history) == 0:
        raise NoMonitorData(f"{path} holds ComplexityMonitor state without measurements yet (saved before the first one)")
    layer_algebra = next((state["layer_algebra"] for state in monitor_states if state.get("layer_algebra")), None)
    sites: dict[str, SiteInfo] = {}
    failures = []
    for state in monitor_states:
        sites.update(parse_site_metadata(state.get("sites")))
        failures += [(int(f[0]), str(f[1])) for f in state.get("failures", []) if isinstance(f, (list, tuple)) and len(f) == 2 and isinstance(f[0], int)]
    return RunData(history=history, path=path, kind="checkpoint", layer_algebra_columns=layer_algebra if isinstance(layer_algebra, dict) and layer_algebra else None, ignored=checkpoint.ignored, sites=sites, failures=tuple(failures))


def _listed(names: tuple[str, ...], most: int = 5) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


# ---------------------------------------------------------------------- TensorBoard
def _from_tensorboard(path: Path) -> RunData:
    """Rows from ``complexity/<metric>/<site>`` scalars; the epoch of each step from ``complexity_meta/epoch``.

    A step written twice (a resumed fit logging into the same folder) keeps the later value.
    """
    from tensorboard.backend.event_processing import event_accumulator as ea

    # size 0 keeps every scalar (the default keeps a 10,000-point sample per tag); images and
    # histograms are not needed.
    guidance = {ea.SCALARS: 0, ea.IMAGES: 1, ea.HISTOGRAMS: 1, ea.COMPRESSED_HISTOGRAMS: 1, ea.TENSORS: 1, ea.AUDIO: 1}
    accumulator = ea.EventAccumulator(str(path), size_guidance=guidance)
    try:
        accumulator.Reload()
    except Exception as error:  # noqa: BLE001 - a corrupt file gets a clear message
        raise NoMonitorData(f"{path}: TensorBoard events could not be read ({type(error).__name__}: {_first_line(error)})") from error
    tags = accumulator.Tags().get("scalars", [])
    curve_tags = [tag for tag in tags if split_scalar_tag(tag) is not None]
    if not curve_tags:
        raise NoMonitorData(f"{path} holds TensorBoard events but no {PREFIX}/<metric>/<site> scalars (was the monitor attached with a TensorBoardLogger?)")
    if EPOCH_TAG not in tags:
        raise NoMonitorData(f"{path} holds {PREFIX}/* scalars but no {EPOCH_TAG} (logs from an older lightning_complexity); export from the run's checkpoint instead")
    epoch_at_step = {step: int(round(value)) for step, value in _latest_per_step(accumulator.Scalars(EPOCH_TAG)).items()}
    rows = []
    for order, tag in enumerate(curve_tags):
        metric, site = split_scalar_tag(tag)
        for step, value in _latest_per_step(accumulator.Scalars(tag)).items():
            if step not in epoch_at_step:
                raise NoMonitorData(f"{path}: {tag} has a value at step {step} but {EPOCH_TAG} has none there (truncated logs?); export from the run's checkpoint instead")
            rows.append((step, order, metric, site, value))
    measured = sorted({row[0] for row in rows})
    rows += _tensorboard_context(accumulator, tags, measured, len(curve_tags))
    rows.sort(key=lambda row: (row[0], row[1]))  # measurement order, tags in the order first logged
    history = MetricHistory((step, epoch_at_step[step], metric, site, value) for step, _, metric, site, value in rows)
    return RunData(history=history, path=path, kind="tensorboard", sites=_tensorboard_sites(accumulator))


#: scalars Lightning itself writes: not the user's training context.
_LIGHTNING_SCALARS = ("epoch", "hp_metric")
_MONITOR_PREFIXES = (PREFIX + "/", POWERLAW_PREFIX + "/", "complexity_meta/", FIGURE_PREFIX + "/")


def _tensorboard_context(accumulator: Any, tags: list[str], measured: list[int], first_order: int) -> list[tuple[int, int, str, str, float]]:
    """Context rows (site ``trainer``) rebuilt from the user's own scalars in the logs.

    The monitor does not log its context rows again (the user's loggers have them), so here each
    scalar the user logged (every tag but the monitor's and Lightning's ``epoch``/``hp_metric``)
    gives, at each measurement step, its latest value logged at or before that step: what
    ``trainer.callback_metrics`` held then, except that a training scalar logged every n steps may
    be a few steps older than the one the checkpoint recorded. No row before a scalar's first value.
    """
    import bisect

    rows = []
    user_tags = [tag for tag in tags if tag not in _LIGHTNING_SCALARS and not tag.startswith(_MONITOR_PREFIXES)]
    for order, tag in enumerate(user_tags, start=first_order):
        logged = _latest_per_step(accumulator.Scalars(tag))
        steps, values = list(logged), list(logged.values())
        for step in measured:
            at = bisect.bisect_right(steps, step) - 1
            if at >= 0:
                rows.append((step, order, tag, CONTEXT_SITE, values[at]))
    return rows


def _tensorboard_sites(accumulator: Any) -> dict[str, SiteInfo]:
    """The latest ``complexity_meta/sites`` text (JSON) of the logs; empty when absent or unreadable."""
    tags = accumulator.Tags().get("tensors", [])
    tag = next((t for t in (SITES_TAG, SITES_TAG + "/text_summary") if t in tags), None)
    if tag is None:
        return {}
    try:
        latest = max(accumulator.Tensors(tag), key=lambda event: (event.step, event.wall_time))
        return parse_site_metadata(json.loads(latest.tensor_proto.string_val[0].decode("utf-8")))
    except (ValueError, IndexError, UnicodeDecodeError):  # metadata only labels the report: never fatal
        return {}


def _latest_per_step(events: list[Any]) -> dict[int, float]:
    latest: dict[int, float] = {}
    for event in sorted(events, key=lambda e: e.wall_time):
        latest[int(event.step)] = float(event.value)
    return dict(sorted(latest.items()))


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else "no message"


# ---------------------------------------------------------------------- writing
def _format_of(path: Path, fmt: str | None) -> str:
    suffix = path.suffix.lstrip(".").lower()
    if suffix in FORMATS:
        return suffix
    if fmt in FORMATS:
        return fmt
    raise ValueError(f"cannot tell the format of {path}: expected a suffix or format among {', '.join(FORMATS)}, got format={fmt!r}")


def write_history(history: MetricHistory, path: str | Path, fmt: str | None = None) -> Path:
    """Write ``history`` as CSV, JSON or Parquet: the format of ``path``'s suffix, else ``fmt``.

    Example::

        write_history(run.history, "history.json")
    """
    path = Path(path)
    writers: dict[str, Callable[[Path], Path]] = {"csv": history.to_csv, "json": history.to_json, "parquet": history.to_parquet}
    return writers[_format_of(path, fmt)](path)


def power_laws_path(history_path: str | Path) -> Path:
    """Where the power-law table goes beside an exported history: ``x.csv`` → ``x_power_laws.csv``."""
    history_path = Path(history_path)
    return history_path.with_name(history_path.stem + "_power_laws" + history_path.suffix)


def _json_scalar(value: Any) -> Any:
    if isinstance(value, (np.floating, float)):
        if math.isnan(value):
            return None  # JSON has no NaN or Infinity: null and strings stand for them
        return float(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


def write_power_laws(fits: pd.DataFrame | list[dict[str, Any]], path: str | Path, fmt: str | None = None) -> Path:
    """Write a :meth:`MetricHistory.power_law_fits` table (or its :meth:`~MetricHistory.power_law_records`) as CSV, JSON (records) or Parquet.

    Every format keeps each float exactly (JSON writes NaN as ``null``, infinities as strings);
    the frame and its records give the same bytes.

    Example::

        write_power_laws(run.history.power_law_fits(), "fits.csv")
        write_power_laws(run.history.power_law_records(), "fits.csv")  # the same file, no pandas
    """
    return write_table(fits, path, fmt, columns=POWER_LAW_COLUMNS)


def write_table(table: pd.DataFrame | list[dict[str, Any]], path: str | Path, fmt: str | None = None, columns: Sequence[str] | None = None) -> Path:
    """Write a table atomically as CSV (spreadsheet-safe text cells), JSON records or Parquet.

    ``table`` is a DataFrame or a list of records (dicts; ``columns`` gives their order, needed
    when the list may be empty). CSV: every float with its shortest round-tripping repr, NaN and
    None as empty cells; text cells and column names by the spreadsheet rule of
    :mod:`lightning_complexity.safe_names`. JSON: one object per row, NaN as ``null``, infinities
    as strings, lone surrogates escaped by JSON itself. Parquet: text as it is, unless it holds a
    lone surrogate (not UTF-8): then every text cell follows the spreadsheet rule. CSV and JSON of
    records never import pandas.

    Example::

        write_table(run.history.power_law_fits(), "fits.csv")
        write_table([{"site": "relu", "value": 0.5}], "values.json")
    """
    path = Path(path)
    fmt = _format_of(path, fmt)
    if isinstance(table, list):
        names = list(columns) if columns is not None else list(dict.fromkeys(key for record in table for key in record))
        rows: Iterable[Sequence[Any]] = [[record.get(name) for name in names] for record in table]
    else:
        names = list(table.columns)
        # Column by column: each cell keeps its column's NumPy type (a float32 stays short).
        rows = zip(*(table.iloc[:, index].to_numpy() for index in range(table.shape[1])))
    if fmt == "csv":
        with atomic_write(path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow([_csv_cell(name) for name in names])
            writer.writerows([_csv_cell(value) for value in row] for row in rows)
    elif fmt == "json":  # records; every float with its shortest round-tripping repr, NaN as null
        atomic_write_text(path, json.dumps([{name: _json_scalar(value) for name, value in zip(names, row)} for row in rows]))
    else:
        frame = records_frame(table, names) if isinstance(table, list) else table
        cells = [*frame.columns, *(value for column in frame.columns for value in frame[column])]
        needs_rule = any(isinstance(value, str) and not _encodes(value) for value in cells)
        with atomic_path(path) as temporary:
            (spreadsheet_frame(frame) if needs_rule else frame).to_parquet(temporary, index=False)
    return path


def _csv_cell(value: Any) -> str:
    """One CSV cell as pandas' ``to_csv`` writes it: text by the spreadsheet rule, missing as empty."""
    if isinstance(value, str):
        return spreadsheet_cell(value)
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        # str of a NumPy float is its dtype's shortest round-tripping repr (float32 stays short).
        return "" if math.isnan(value) else str(value)
    return "" if _is_missing(value) else str(value)


def _is_missing(value: Any) -> bool:
    """pandas' own missing markers (``pd.NA``, ``NaT``) without importing pandas for every cell."""
    try:
        return bool(value != value)
    except (TypeError, ValueError):
        return False


def _encodes(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
