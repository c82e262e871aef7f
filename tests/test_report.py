"""The report a researcher puts in a paper: every figure and table present (parsed HTML), sites
with their module types counted apart from summaries, training context against the main
validation metric, honest fits, one figure per idea, integer epoch ticks."""

from __future__ import annotations

import base64
import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pandas as pd
import pytest
import torch

from lightning_complexity import MetricHistory, fit_power_law
from lightning_complexity.cli import main

MONITOR_KEY = "ComplexityMonitor{'metrics': ['affinity', 'effective_dimension']}"
SITES = {
    "features.0": {"module": "features.0", "type": "ReLU", "kind": "module", "depth": 0},
    "features.1": {"module": "features.1", "type": "ReLU", "kind": "module", "depth": 1},
    "blocks.0.act": {"module": "blocks.0.act", "type": "ReLU", "kind": "module", "depth": 2},
    "head.gelu": {"module": "head.gelu", "type": "GELU", "kind": "functional", "depth": 3},
}
WIDTHS = {"features.0": 16, "features.1": 32, "blocks.0.act": 32, "head.gelu": 64}
EPOCHS = 8


def _history(*, proportional_ratio: bool = True) -> MetricHistory:
    """A run as the monitor records it: real sites, summaries, a network metric, samples, trainer rows."""
    rng = np.random.default_rng(0)
    rows = []
    # the sites appear in the history in another order than forward order: the report must sort by depth
    order = ["head.gelu", "features.0", "blocks.0.act", "features.1"]
    for epoch in range(EPOCHS + 1):
        step = 10 * epoch
        t = max(epoch, 1)
        affinity = {site: 0.9 - 0.05 * i * math.log1p(epoch) for i, site in enumerate(order)}
        for site in order:
            rows.append((step, epoch, "affinity", site, affinity[site]))
        values = np.array(list(affinity.values()))
        for stat, value in (("mean", values.mean()), ("std", values.std()), ("min", values.min()), ("max", values.max()), ("max_over_mean", values.max() / values.mean())):
            rows.append((step, epoch, "affinity_signature", stat, float(value)))
        for i, site in enumerate(order):
            dimension = (2.0 + i) * t ** (0.3 + 0.1 * i)
            rows.append((step, epoch, "effective_dimension", site, dimension))
            ratio = dimension / WIDTHS[site] if proportional_ratio else dimension / WIDTHS[site] * (1 + 0.1 * rng.normal())
            rows.append((step, epoch, "effective_dimension_ratio", site, ratio))
            # a noisy, flat curve: the fit exists but is not conclusive (R² low, interval spans 0)
            rows.append((step, epoch, "activation_pattern_entropy", site, 0.5 + 0.05 * rng.normal()))
            rows.append((step, epoch, "samples", site, 360.0))
        rows.append((step, epoch, "linear_regions", "network", 200.0 * t**0.2))
        rows.append((step, epoch, "linear_regions_per_neuron", "network", 200.0 * t**0.2 / 144.0))
        if epoch:  # the trainer has logged nothing at initialisation
            rows.append((step, epoch, "train_loss", "trainer", 2.0 / t))
            rows.append((step, epoch, "val_loss", "trainer", 2.2 / t))
            rows.append((step, epoch, "val_acc", "trainer", 1.0 - 0.8 / t))
    return MetricHistory(rows)


def _checkpoint(path: Path, history: MetricHistory, sites: dict | None = SITES, failures=()) -> Path:
    state = {"version": 2, "history": history.state_dict(), "failures": [list(f) for f in failures]}
    if sites is not None:
        state["sites"] = sites
    torch.save({"callbacks": {MONITOR_KEY: state}}, path)
    return path


class _Page(HTMLParser):
    """What a page holds: images (alt, decoded SVG), tables (headers, rows, row classes), ids, links, captions."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[tuple[str, bytes]] = []
        self.tables: list[dict] = []
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.captions: list[str] = []
        self.headings: list[str] = []
        self._stack: list[str] = []
        self._text: list[str] = []
        self._row: list[str] | None = None
        self._row_class = ""

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        if tag == "img":
            source = attrs["src"]
            assert source.startswith("data:image/svg+xml;base64,"), source[:40]
            svg = base64.b64decode(source.split(",", 1)[1], validate=True)
            assert ElementTree.fromstring(svg).tag == "{http://www.w3.org/2000/svg}svg"  # well-formed SVG
            self.images.append((attrs.get("alt", ""), svg))
        elif tag == "a":
            self.links.append(attrs.get("href", ""))
        elif tag == "table":
            self.tables.append({"header": [], "rows": [], "classes": []})
        elif tag == "tr":
            self._row, self._row_class = [], attrs.get("class", "")
        elif tag in ("td", "th", "figcaption", "h2", "h3", "code"):
            self._text = []
        self._stack.append(tag)

    def handle_endtag(self, tag):
        while self._stack and self._stack.pop() != tag:
            pass
        text = "".join(self._text).strip()
        if tag in ("td", "th") and self._row is not None:
            self._row.append(text)
        elif tag == "tr" and self._row is not None:
            table = self.tables[-1]
            if "thead" in self._stack:
                table["header"] = self._row
            elif self._row_class != "group":
                table["rows"].append(self._row)
                table["classes"].append(self._row_class)
            self._row = None
        elif tag == "figcaption":
            self.captions.append(text)
        elif tag == "h2":
            self.headings.append(text)

    def handle_data(self, data):
        self._text.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def _table(page: _Page, first_header: str, *also: str) -> dict:
    found = [t for t in page.tables if t["header"][:1] == [first_header] and all(h in t["header"] for h in also)]
    assert len(found) == 1, [t["header"] for t in page.tables]
    return found[0]


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> tuple[Path, MetricHistory, _Page]:
    root = tmp_path_factory.mktemp("report")
    history = _history()
    ckpt = _checkpoint(root / "run.ckpt", history, failures=[(30, "rank 1: RuntimeError: boom")])
    assert main(["report", str(ckpt), "--out", str(root / "out"), "--quiet"]) == 0
    return root / "out", history, _parse(root / "out" / "report.html")


def test_every_figure_and_table_is_on_the_page(report) -> None:
    out, history, page = report
    svgs = sorted(out.glob("*.svg"))
    expected = {"training.svg", "against_val_acc.svg", "nonlinearity.svg", "dimension.svg", "patterns.svg", "regions.svg", "signature_affinity.svg", "powerlaw_exponents.svg", "powerlaw_fits.svg"}
    assert {p.name for p in svgs} == expected
    assert sorted(svg for _, svg in page.images) == sorted(p.read_bytes() for p in svgs)  # each embedded, once
    assert {re.search(r"(\S+\.svg)$", c).group(1) for c in page.captions} == expected  # each with its caption
    for name in ("sites", "final", "power-laws", "context", "nonlinearity", "dimension", "patterns", "regions"):
        assert name in page.ids
    assert all(link.lstrip("#") in page.ids for link in page.links)  # the navigation only points inside the page
    _table(page, "depth", "site", "module type", "kind", "samples")
    _table(page, "metric", "exponent b", "verdict")
    final = _table(page, "metric", "features.0 (ReLU)", "head.gelu (GELU, functional)")  # final values: a column per site
    assert [row[0] for row in final["rows"]] == ["affinity", "effective_dimension", "effective_dimension_ratio", "activation_pattern_entropy"]
    assert "Layer algebra" not in page.headings  # this checkpoint has none


def test_sites_have_their_types_and_are_counted_apart_from_summaries(report) -> None:
    _, _, page = report
    text = (report[0] / "report.html").read_text(encoding="utf-8")
    assert "4 sites (3 ReLU, 1 GELU)" in text
    assert "summaries across sites: affinity_signature (5)" in text and "network-level: linear_regions, linear_regions_per_neuron" in text
    sites = _table(page, "depth", "site", "module type")
    assert [row[1] for row in sites["rows"]] == sorted(SITES, key=lambda s: SITES[s]["depth"])  # forward order, not history order
    assert [row[2] for row in sites["rows"]] == ["ReLU", "ReLU", "ReLU", "GELU"]
    assert [row[3] for row in sites["rows"]] == ["module", "module", "module", "functional"]
    assert [row[4] for row in sites["rows"]] == ["360"] * 4
    assert re.findall(r'<tr class="group"><th class="text" colspan="\d+">(\w+)</th>', text) == ["features", "blocks", "head"]  # grouped by block
    final = _table(page, "metric", "features.0 (ReLU)")
    assert final["header"] == ["metric", "features.0 (ReLU)", "features.1 (ReLU)", "blocks.0.act (ReLU)", "head.gelu (GELU, functional)"]
    last = {row.site: row.value for row in report[1] if row.metric == "affinity" and row.step == 80}
    assert final["rows"][0] == ["affinity", *(f"{last[s]:.4g}" for s in ["features.0", "features.1", "blocks.0.act", "head.gelu"])]
    assert "1 measurement(s) failed (steps 30)" in text


def test_the_main_validation_metric_and_against(tmp_path, capsys) -> None:
    from lightning_complexity.run_contents import main_validation_metric

    assert main_validation_metric(["train_loss", "val_loss", "val_acc"]) == "val_acc"
    assert main_validation_metric(["val/loss", "val/accuracy"]) == "val/accuracy"
    assert main_validation_metric(["train_loss", "val_loss"]) == "val_loss"
    assert main_validation_metric(["val_mse", "val/loss_total"]) == "val/loss_total"
    assert main_validation_metric(["val_mse"]) == "val_mse"
    assert main_validation_metric(["train_loss"]) is None
    ckpt = _checkpoint(tmp_path / "run.ckpt", _history())
    assert main(["report", str(ckpt), "--out", str(tmp_path / "r"), "--against", "val_loss", "--quiet"]) == 0
    assert (tmp_path / "r" / "against_val_loss.svg").is_file() and not (tmp_path / "r" / "against_val_acc.svg").exists()
    assert "main validation metric: <strong>val_loss</strong>, 0.275 at the last measurement" in (tmp_path / "r" / "report.html").read_text()
    assert main(["report", str(ckpt), "--out", str(tmp_path / "r2"), "--against", "val_f1", "--quiet"]) == 2
    assert "--against 'val_f1' is not a logged trainer metric of this run (available: train_loss, val_loss, val_acc)" in capsys.readouterr().err


def test_the_context_figure_pairs_each_metric_with_the_validation_metric_at_the_same_step() -> None:
    from lightning_complexity.report_figures import ReportData, against_figure
    from lightning_complexity.run_contents import run_contents

    history = _history()
    data = ReportData.build(history, run_contents(history, SITES), "epoch")
    figure = against_figure(data, ["affinity", "linear_regions"], "val_acc")
    affinity_panel, regions_panel = figure.panels[:2]
    assert affinity_panel.xlabel == "val_acc" and affinity_panel.title == "affinity"
    val = {row.step: row.value for row in history if row.metric == "val_acc"}
    for panel, metric, sites in ((affinity_panel, "affinity", list(SITES)), (regions_panel, "linear_regions", ["network"])):
        lines = [series for series in panel.series if series.dash == "-"]
        assert len(lines) == len(sites)
        for line, site in zip(lines, sorted(sites, key=lambda s: SITES.get(s, {"depth": 0})["depth"])):
            expected = [(val[r.step], r.value) for r in history if r.metric == metric and r.site == site and r.step in val]
            assert list(zip(line.x.tolist(), line.y.tolist())) == expected  # 8 measurements: the one at initialisation has no val_acc


def test_fit_verdicts_follow_powerlaw_and_say_why(report) -> None:
    from lightning_complexity.report_tables import fit_verdicts

    out, history, page = report
    fits = _table(page, "metric", "verdict")
    by_row = {(row[0], row[1]): (row[-1], cls) for row, cls in zip(fits["rows"], fits["classes"])}
    for (metric, site), (t, y) in history.curves().items():
        if metric in ("samples", "train_loss", "val_loss", "val_acc", "effective_dimension_ratio", "linear_regions_per_neuron"):
            continue
        fit = fit_power_law(t, y)  # the second path: the fit itself, not the report's table
        label = f"{site} ({SITES[site]['type']}, functional)" if site == "head.gelu" else f"{site} ({SITES[site]['type']})" if site in SITES else site
        verdict, css = by_row[(metric, label)]
        assert (verdict == "conclusive") == fit.conclusive, (metric, site, verdict)
        assert (css == "muted") == (not fit.conclusive)
    assert any(v.startswith("inconclusive: ") and "interval includes 0" in v for v, _ in by_row.values())
    assert any(v == "conclusive" for v, _ in by_row.values())
    # without the column (an older table), the verdict is computed by the same rule
    table = history.power_law_fits()
    assert [ok for ok, _ in fit_verdicts(table.drop(columns=["conclusive"]))] == table["conclusive"].tolist()
    rng = np.random.default_rng(1)
    for trial in range(200):  # random curves, few and many points: same verdict both ways
        t = np.arange(0, rng.integers(3, 12))
        y = np.exp(rng.normal(0, rng.uniform(0.01, 1.0), t.size)) * (t + 1.0) ** rng.normal(0, 0.5)
        frame = MetricHistory((int(s), int(s), "m", "s", float(v)) for s, v in zip(t, y)).power_law_fits()
        assert fit_verdicts(frame.drop(columns=["conclusive"]))[0][0] == bool(frame["conclusive"].iloc[0]), trial


def test_proportional_metrics_are_folded_and_others_are_not(tmp_path) -> None:
    from lightning_complexity.report_tables import folded_metrics, proportional_to

    history = _history()
    assert folded_metrics(history) == {"effective_dimension_ratio": "effective_dimension", "linear_regions_per_neuron": "linear_regions"}
    factors = proportional_to(history, "effective_dimension_ratio", "effective_dimension")
    assert factors == pytest.approx({site: 1.0 / WIDTHS[site] for site in SITES}, rel=1e-12)
    assert folded_metrics(_history(proportional_ratio=False)) == {"linear_regions_per_neuron": "linear_regions"}
    page = _parse(_report_of(tmp_path, history))
    fits = _table(page, "metric", "verdict")
    assert "effective_dimension_ratio" not in {row[0] for row in fits["rows"]}  # same exponent as its parent
    assert "effective_dimension" in {row[0] for row in fits["rows"]}
    csv = pd.read_csv(tmp_path / "out" / "power_laws.csv")
    assert "effective_dimension_ratio" in set(csv["metric"])  # the full table keeps every fit


def _report_of(tmp_path: Path, history: MetricHistory, sites: dict | None = SITES) -> Path:
    ckpt = _checkpoint(tmp_path / "run.ckpt", history, sites)
    assert main(["report", str(ckpt), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    return tmp_path / "out" / "report.html"


def test_one_figure_per_idea_with_integer_epoch_ticks() -> None:
    from lightning_complexity.report_figures import ReportData, family_figure, present_families
    from lightning_complexity.run_contents import run_contents

    history = _history()
    data = ReportData.build(history, run_contents(history, SITES), "epoch")
    families = {family.key: panels for family, panels in present_families(data)}
    assert list(families) == ["nonlinearity", "dimension", "patterns", "regions"]
    assert [p.metric for p in families["dimension"]] == ["effective_dimension", "effective_dimension_ratio"]  # the ratio on its own scale
    assert [(p.metric, p.sites) for p in families["nonlinearity"]] == [("affinity", None), ("affinity_signature", ("std",)), ("affinity_signature", ("max_over_mean",))]
    assert [p.metric for p in families["regions"]] == ["linear_regions"]  # per neuron: a second axis on the same panel
    for key, panels in families.items():
        figure = family_figure(data, next(f for f, _ in present_families(data) if f.key == key), panels)
        for panel in figure.panels:
            x_scale = panel.scales()[0]
            assert panel.xlabel == "epoch"
            assert len(x_scale.ticks) >= 3 and all(float(tick).is_integer() and x_scale.low <= tick <= x_scale.high for tick in x_scale.ticks), (key, x_scale.ticks)
            assert {x_scale.label(tick) for tick in x_scale.ticks} <= {str(e) for e in range(EPOCHS + 1)}
    regions = family_figure(data, next(f for f, _ in present_families(data) if f.key == "regions"), families["regions"])
    assert regions.panels[0].secondary == (pytest.approx(1 / 144, rel=1e-12), "per_neuron")  # per neuron, folded onto the count's panel
    # a non-proportional ratio is not folded: it keeps its own panel
    other = _history(proportional_ratio=False)
    data = ReportData.build(other, run_contents(other, SITES), "epoch")
    assert [p.metric for p in dict((f.key, p) for f, p in present_families(data))["dimension"]] == ["effective_dimension", "effective_dimension_ratio"]


def test_a_run_without_metadata_or_context_still_reports(tmp_path) -> None:
    history = MetricHistory(row for row in _history() if row.site != "trainer")
    page = _parse(_report_of(tmp_path, history, sites=None))
    text = (tmp_path / "out" / "report.html").read_text()
    assert "4 sites (module types unknown" in text and "no training context" in text
    sites = _table(page, "depth", "site", "module type")
    assert [row[2] for row in sites["rows"]] == ["unknown"] * 4
    assert not (tmp_path / "out" / "training.svg").exists()


def test_site_metadata_is_read_from_tensorboard(tmp_path) -> None:
    from torch.utils.tensorboard import SummaryWriter

    from lightning_complexity.export import load_run
    from lightning_complexity.run_contents import run_contents
    from lightning_complexity.tensorboard import EPOCH_TAG, SITES_TAG, scalar_tag

    history = _history()
    writer = SummaryWriter(str(tmp_path / "tb"))
    writer.add_text(SITES_TAG, json.dumps({"stale": {"type": "Tanh", "depth": 0}}), global_step=0)
    writer.add_text(SITES_TAG, json.dumps(SITES), global_step=10)  # the latest one counts
    for row in history:
        writer.add_scalar(scalar_tag(row.metric, row.site), row.value, row.step)
        writer.add_scalar(EPOCH_TAG, float(row.epoch), row.step)
    writer.close()
    run = load_run(tmp_path / "tb", source="tensorboard")
    assert {name: info.type for name, info in run.sites.items()} == {name: info["type"] for name, info in SITES.items()}
    contents = run_contents(run.history, run.sites)
    assert [s.name for s in contents.sites] == list(SITES) and contents.context_keys == ["train_loss", "val_loss", "val_acc"]


def test_custom_scalars_put_summaries_of_different_scale_on_separate_charts() -> None:
    from lightning_complexity.tensorboard import custom_scalars_layout

    layout = custom_scalars_layout({"affinity": ["a", "b"], "affinity_signature": ["mean", "std", "min", "max", "max_over_mean"], "betti_depth": ["decay_rate", "normalised_area", "new_stat"]})
    charts = layout["complexity"]
    assert charts["affinity"] == ["Multiline", ["complexity/affinity/a", "complexity/affinity/b"]]
    assert charts["affinity_signature: mean, min, max"][1] == ["complexity/affinity_signature/mean", "complexity/affinity_signature/min", "complexity/affinity_signature/max"]
    assert charts["affinity_signature: std"][1] == ["complexity/affinity_signature/std"]
    assert charts["affinity_signature: max_over_mean"][1] == ["complexity/affinity_signature/max_over_mean"]
    assert [name for name in charts if name.startswith("betti_depth")] == ["betti_depth: decay_rate", "betti_depth: normalised_area", "betti_depth: new_stat"]


def test_progress_is_a_tqdm_bar_on_a_terminal_and_silent_in_logs() -> None:
    import io

    from lightning_complexity.report import Progress

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal, log = Terminal(), io.StringIO()
    counted = []
    for stream in (terminal, log):
        progress = Progress(3, "report", stream=stream)
        for name in ("a.svg", "b.svg", "c.svg"):
            progress.advance(name)
        counted.append(progress._bar.n if progress._bar is not None else None)
        progress.close()
    assert counted == [3, None]  # a bar on the terminal that counted every figure; none in a log
    assert "report:" in terminal.getvalue() and "/3" in terminal.getvalue() and "figure/s" in terminal.getvalue()
    assert log.getvalue() == ""


def test_every_figure_and_table_of_the_comparison_is_on_the_page(tmp_path) -> None:
    a = _checkpoint(tmp_path / "a.ckpt", _history())
    b = _checkpoint(tmp_path / "b.ckpt", MetricHistory(row._replace(value=row.value * 1.1) for row in _history()))
    out = tmp_path / "cmp"
    assert main(["compare", str(a), str(b), "--labels", "a,b", "--out", str(out), "--quiet"]) == 0
    page = _parse(out / "comparison.html")
    svgs = sorted(out.glob("*.svg"))
    # every metric but bookkeeping, trainer keys (one training figure) and the folded ratios
    expected = {"compare_training.svg", *(f"compare_{m}.svg" for m in ("affinity", "affinity_signature", "effective_dimension", "activation_pattern_entropy", "linear_regions"))}
    assert {p.name for p in svgs} == expected
    assert sorted(svg for _, svg in page.images) == sorted(p.read_bytes() for p in svgs)
    assert {re.search(r"(\S+\.svg)$", c).group(1) for c in page.captions} == expected
    overview = _table(page, "run", "validation metric", "its final value")
    assert [row[0] for row in overview["rows"]] == ["a", "b"] and {row[-2] for row in overview["rows"]} == {"val_acc"}
    per_metric = [t for t in page.tables if t["header"][:1] == ["site"]]
    assert len(per_metric) == len(expected) - 1  # one table per metric figure
    affinity = next(t for t in per_metric if t["rows"][0][0] == "features.0 (ReLU)" and len(t["rows"]) == 4)
    assert [row[0] for row in affinity["rows"]] == ["features.0 (ReLU)", "features.1 (ReLU)", "blocks.0.act (ReLU)", "head.gelu (GELU, functional)"]
    entropy = [t for t in per_metric if any("(" in cell and cell.startswith("(") for row in t["rows"] for cell in row[1:])]
    assert entropy, "the noisy, flat activation_pattern_entropy has inconclusive exponents, shown in parentheses"
    assert all(link.lstrip("#") in page.ids for link in page.links)
