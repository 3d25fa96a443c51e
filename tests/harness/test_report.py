"""The run report: every figure rendered from a tiny run, valid PNGs, honest links, a sweep that agrees
with the results table, and a report for a run without DFB variants."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import re
import shutil
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest
from rich.console import Console

from dfb_ood.harness.errors import RunFolderError
from dfb_ood.harness.export_target import MARKER
from dfb_ood.harness.metrics import auroc
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.report import (
    CSV_TOLERANCE,
    TABLE_TOLERANCE,
    ReportConsistencyError,
    check_sweep,
    open_run,
    recorded_figure_format,
    roc_curve,
    table_temperature,
    temperature_sweep,
    write_report,
)
from dfb_ood.harness.report_figures import FIGURES
from dfb_ood.harness.run import BenchSettings, Pipeline
from tests.harness.test_pipeline import TINY_BENCHMARK, TINY_RECIPE

DFB_DETECTORS = ["msp", "energy", "msp_dfb", "energy_dfb", "energy_dfbz", "odin_dfb", "bg"]
PLAIN_DETECTORS = ["msp", "energy"]
DFB_FIGURES = {
    "auroc_bars.png",
    "fg_bg_distributions.png",
    "roc_msp.png",
    "roc_energy.png",
    "roc_odin.png",  # odin_dfb without odin itself: still a figure, of the variant alone
    "temperature_sweep.png",
    "masks_id.png",
    "bg_probability_ood.png",
    "tsne.png",
}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)\)")
ANY_LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")


def _bench(root: Path, name: str, detectors: list[str]) -> Path:
    out = root / name
    settings = BenchSettings(
        benchmark=str(root / "tiny.yaml"),
        recipe=str(root / "recipe.yaml"),
        out=out,
        detectors=detectors,
        device="cpu",
        quiet=True,
    )
    Pipeline(settings).run()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("report_runs")
    (root / "tiny.yaml").write_text(TINY_BENCHMARK)
    (root / "recipe.yaml").write_text(TINY_RECIPE)
    return {"dfb": _bench(root, "dfb", DFB_DETECTORS), "plain": _bench(root, "plain", PLAIN_DETECTORS)}


@pytest.fixture(scope="module")
def dfb_report(runs: dict[str, Path]) -> Path:
    return write_report(runs["dfb"])


def _links(report: Path) -> tuple[list[str], list[str]]:
    text = report.read_text(encoding="utf-8")
    return IMAGE_LINK.findall(text), ANY_LINK.findall(text)


def _assert_valid_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert len(data) > 10_000, f"{path.name} is suspiciously small ({len(data)} bytes)"
    pixels = mpimg.imread(path)
    height, width = pixels.shape[:2]
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    assert 250 <= height <= 4000 and 400 <= width <= 4000, f"{path.name}: {width}x{height} px"
    assert float(pixels[..., :3].std()) > 0.02, f"{path.name} is (nearly) blank"


def test_every_figure_is_a_valid_png(dfb_report: Path):
    written = {p.name for p in dfb_report.parent.glob("*.png")}
    assert written == DFB_FIGURES
    for name in sorted(written):
        _assert_valid_png(dfb_report.parent / name)


def test_report_links_only_existing_files_and_states_the_run(dfb_report: Path, runs: dict[str, Path]):
    images, others = _links(dfb_report)
    assert sorted(Path(link).name for link in images) == sorted(DFB_FIGURES)
    for link in images + others:
        assert not Path(link).is_absolute() and (dfb_report.parent / link).is_file(), link
    text = dfb_report.read_text(encoding="utf-8")
    assert text.startswith(r"# DFB report: tiny\_shapes / rv2\_tiny / seed 0")  # names Markdown-escaped
    assert "| detector | net | near AUROC | near FPR95 | far AUROC | far FPR95 | ID acc |" in text
    assert "FPR@95 = OOD accepted at 95% ID TPR" in text
    assert "Skipped" not in text
    assert "Figure format: `png` (embedded below)." in text
    # The table shows results.csv's numbers in percent.
    with open(runs["dfb"] / "results.csv", newline="") as handle:
        row = next(
            r for r in csv.DictReader(handle) if r["detector"] == "energy_dfb" and r["dataset"] == "far_mean"
        )
    assert f"{100 * float(row['auroc']):.2f}" in text


def test_the_reports_tsne_is_the_one_harness_figure_tsne_draws(
    dfb_report: Path, runs: dict[str, Path], tmp_path: Path
):
    from typer.testing import CliRunner

    from dfb_ood.harness.cli import app

    text = dfb_report.read_text(encoding="utf-8")
    assert "### t-SNE of pooled features or logits (Fig. 5)" in text
    assert "L2-normalised pooled features" in text
    out = tmp_path / "tsne.png"
    result = CliRunner().invoke(app, ["figure", "tsne", str(runs["dfb"]), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == (dfb_report.parent / "tsne.png").read_bytes()  # same sample, same seed


def test_sweep_at_the_table_temperature_equals_results_csv(runs: dict[str, Path]):
    view = open_run(runs["dfb"])
    names = ["msp_dfb", "energy_dfb", "odin_dfb"]
    used = {name: table_temperature(name, view.overrides) for name in names}
    assert set(used.values()) == {2.5}
    sweep = temperature_sweep(
        [*names, "energy_dfbz", "msp"],  # only Eq. 7 variants have a temperature
        view.outputs,
        temperatures=(1.0, 2.5, 5.0),
        fpr_convention=view.fpr_convention,
        overrides=view.overrides,
        perturbed=view.perturbed,
    )
    assert set(sweep) == set(names)
    with open(runs["dfb"] / "results.csv", newline="") as handle:
        table = {(r["detector"], r["dataset"]): float(r["auroc"]) for r in csv.DictReader(handle)}
    rows = json.loads((runs["dfb"] / "results.json").read_text())["rows"]
    exact = {(r["detector"], r["dataset"]): r["auroc"] for r in rows}
    for name in names:
        assert set(sweep[name][2.5]) == {"near", "far"}
        for group, value in sweep[name][2.5].items():
            assert abs(value - table[(name, f"{group}_mean")]) <= CSV_TOLERANCE
            assert abs(value - exact[(name, f"{group}_mean")]) <= TABLE_TOLERANCE
    # T changes the energy_dfb ranking (the sweep is not one number repeated) ...
    assert len({sweep["energy_dfb"][t]["far"] for t in (1.0, 2.5, 5.0)}) > 1
    # ... and the code path's own check accepts it.
    check_sweep(sweep, rows, used)


def test_check_sweep_raises_when_the_sweep_disagrees_with_the_table():
    rows = [
        {"detector": "energy_dfb", "dataset": "near_mean", "auroc": 0.8},
        {"detector": "energy_dfb", "dataset": "far_mean", "auroc": 0.6},
    ]
    good = {"energy_dfb": {2.5: {"near": 0.8, "far": 0.6}}}
    check_sweep(good, rows, {"energy_dfb": 2.5})
    off = {"energy_dfb": {2.5: {"near": 0.8, "far": 0.6 + 1e-8}}}
    with pytest.raises(ReportConsistencyError, match="far-OOD AUROC"):
        check_sweep(off, rows, {"energy_dfb": 2.5})
    with pytest.raises(ReportConsistencyError, match="lacks the table's temperature"):
        check_sweep({"energy_dfb": {1.0: {"near": 0.8}}}, rows, {"energy_dfb": 2.5})


def test_write_report_refuses_a_table_its_sweep_contradicts(runs: dict[str, Path], tmp_path: Path):
    run = tmp_path / "tampered"
    shutil.copytree(runs["dfb"], run, ignore=shutil.ignore_patterns("report", "run.lock"))
    results = json.loads((run / "results.json").read_text())
    for row in results["rows"]:
        if row["detector"] == "energy_dfb" and row["dataset"] == "near_mean":
            row["auroc"] += 1e-6
    (run / "results.json").write_text(json.dumps(results))
    with pytest.raises(RunFolderError, match="harness verify"):  # an edited results file: refused first
        write_report(run, tmp_path / "out")
    # a results.json the run itself wrote wrong (its checksum recorded): the sweep still catches it
    stages = json.loads((run / "stages.json").read_text())
    stages["results"]["files"]["results.json"] = hashlib.sha256(
        (run / "results.json").read_bytes()
    ).hexdigest()
    (run / "stages.json").write_text(json.dumps(stages))
    with pytest.raises(ReportConsistencyError, match="temperature sweep of energy_dfb"):
        write_report(run, tmp_path / "out")


def test_roc_curve_area_is_the_tabled_auroc():
    rng = np.random.default_rng(0)
    id_scores = np.round(rng.normal(1.0, 1.0, 300), 1)  # rounding makes ties, counted one half
    ood_scores = np.round(rng.normal(0.0, 1.0, 200), 1)
    fpr, tpr = roc_curve(id_scores, ood_scores)
    assert fpr[0] == tpr[0] == 0.0 and fpr[-1] == tpr[-1] == 1.0
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(auroc(id_scores, ood_scores), abs=1e-12)


def test_report_of_a_run_without_dfb_variants(runs: dict[str, Path], tmp_path: Path):
    report = write_report(runs["plain"], tmp_path / "plain_report")
    assert report == tmp_path / "plain_report" / "report.md"
    assert {p.name for p in report.parent.glob("*.png")} == {"auroc_bars.png"}
    _assert_valid_png(report.parent / "auroc_bars.png")
    images, others = _links(report)
    assert [Path(link).name for link in images] == ["auroc_bars.png"]
    for link in images + others:
        assert (report.parent / link).is_file(), link
    text = report.read_text(encoding="utf-8")
    skipped = [line for line in text.splitlines() if line.startswith("*Skipped:")]
    assert len(skipped) == 6  # fg/bg, ROC, sweep, masks, background probability, t-SNE
    assert any("no DFB variant" in line for line in skipped)
    assert "no DFB net (no detector needed it), so there is nothing to compare" in text
    assert any("no pseudo masks" in line for line in skipped)
    assert "| msp | K |" in text and "| energy | K |" in text


# ------------------------------------------------------------------------------ figure formats
def test_pdf_figures_are_linked_from_the_report(runs: dict[str, Path], tmp_path: Path):
    """Every figure a PDF, linked rather than embedded: markdown viewers cannot show a PDF inline."""
    out = tmp_path / "pdf_report"
    report = write_report(runs["plain"], out, figure_format="pdf")
    expected = {"auroc_bars.pdf"}  # the plain run's one figure (all of them as PDF: test_plots.py)
    assert {p.name for p in out.iterdir()} == expected | {"report.md", MARKER}
    for name in expected:
        assert (out / name).read_bytes().startswith(b"%PDF-"), name
    images, others = _links(report)
    assert images == []  # nothing embedded: a PDF shows as a broken image in markdown viewers
    assert sorted(Path(link).name for link in others) == sorted(expected)
    assert all((out / link).is_file() for link in others)
    assert recorded_figure_format(out) == "pdf"
    assert "Figure format: `pdf`" in report.read_text(encoding="utf-8")


def test_svg_figures_are_embedded_and_a_rebuild_keeps_the_format(runs: dict[str, Path], tmp_path: Path):
    out = tmp_path / "svg_report"
    report = write_report(runs["plain"], out, figure_format="svg")
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "auroc_bars.svg", "report.md"]
    assert "<svg" in (out / "auroc_bars.svg").read_text(encoding="utf-8")
    assert _links(report)[0] == ["auroc_bars.svg"]
    assert "Figure format: `svg`" in report.read_text(encoding="utf-8")
    # Rebuilt without a format (as `harness eval` does after new results): the report stays SVG.
    write_report(runs["plain"], out)
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "auroc_bars.svg", "report.md"]
    assert recorded_figure_format(out) == "svg"
    assert recorded_figure_format(tmp_path / "nowhere") is None
    # A new folder gets PNG, the README's format.
    write_report(runs["plain"], tmp_path / "png_report")
    assert recorded_figure_format(tmp_path / "png_report") == "png"
    with pytest.raises(ValueError, match="'jpg' is not one of png, pdf, svg"):
        write_report(runs["plain"], out, figure_format="jpg")


# ------------------------------------------------------------------------------ progress
class _Recorder(Reporter):
    """A reporter that records its events; ``terminal`` says whether its console is a terminal."""

    def __init__(self, terminal: bool) -> None:
        super().__init__(console=Console(file=io.StringIO(), force_terminal=terminal))
        self.events: list[tuple] = []

    def message(self, text: str, label: str | None = None) -> None:
        self.events.append(("message", text, label))

    @contextlib.contextmanager
    def task(self, description: str, total: int, completed: int = 0):
        self.events.append(("task", description, total))
        recorder = self

        class _Handle:
            def advance(self, units: int = 1, info: str | None = None) -> None:
                recorder.events.append(("advance", units, info))

        yield _Handle()


def test_report_progress_counts_every_figure_on_a_terminal(runs: dict[str, Path], tmp_path: Path):
    reporter = _Recorder(terminal=True)
    report = write_report(runs["dfb"], tmp_path / "bar", reporter=reporter)
    assert ("task", "report", len(FIGURES)) in reporter.events
    advances = [event for event in reporter.events if event[0] == "advance"]
    assert [units for _, units, _ in advances] == [1] * len(FIGURES)
    assert [info.split(" (")[0] for _, _, info in advances] == [
        f"figure {n}/{len(FIGURES)}" for n in range(1, len(FIGURES) + 1)
    ]
    shown = {name for _, _, info in advances for name in info.split(" (", 1)[1].rstrip(")").split(", ")}
    assert {p.name for p in report.parent.glob("*.png")} <= shown
    assert not any(e[0] == "message" and "figure" in e[1] and "/" in e[1] for e in reporter.events)


def test_report_progress_is_plain_lines_off_a_terminal_and_silent_when_quiet(
    runs: dict[str, Path], tmp_path: Path
):
    reporter = _Recorder(terminal=False)
    report = write_report(runs["plain"], tmp_path / "lines", reporter=reporter)
    assert not any(event[0] in ("task", "advance") for event in reporter.events)
    lines = [text for kind, text, _ in reporter.events if kind == "message" and "report: figure" in text]
    assert len(lines) == len(FIGURES)
    assert [line.split(" (")[0] for line in lines] == [
        f"report: figure {n}/{len(FIGURES)}" for n in range(1, len(FIGURES) + 1)
    ]
    assert sum("(auroc_bars.png)" in line for line in lines) == 1  # the only figure a plain run has
    assert sum("(skipped)" in line for line in lines) == len(FIGURES) - 1
    notes = [text for kind, text, label in reporter.events if kind == "message" and label == "note"]
    assert len(notes) == len(FIGURES) - 1 and all(text.startswith("report: skipped") for text in notes)
    assert report.is_file()
    quiet = Reporter(quiet=True, console=Console(file=io.StringIO(), force_terminal=True))
    write_report(runs["plain"], tmp_path / "quiet", reporter=quiet)
    assert quiet.console.file.getvalue() == ""
