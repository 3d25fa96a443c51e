"""A finished run re-opened read-only for its report: what every figure and report.md read.

Why one view: the report's figures share the run's networks, cached outputs, results rows and
settings, and fitted detectors; opening the run once (:func:`open_run`) and handing the same
:class:`RunView` to each figure keeps them consistent and the run folder untouched.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dfb_ood.errors import MissingInputError
from dfb_ood.harness.evaluate import SetOutputs, network_of
from dfb_ood.harness.io import read_json
from dfb_ood.harness.leaderboard import CONVENTION_TEXT, read_csv
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.report_numbers import PerturbedFn, fit_detector
from dfb_ood.harness.runfolder import check_results_intact
from dfb_ood.postprocessors import registry
from dfb_ood.postprocessors.base import Postprocessor


@dataclass
class Section:
    """One part of report.md: a heading, its figure(s) with captions, or why it was skipped."""

    heading: str
    figures: list[tuple[Path, str]] = field(default_factory=list)
    skipped: str | None = None


@dataclass
class RunView:
    """What the report needs from a finished run, opened once and shared by every figure."""

    run_dir: Path
    pipeline: Any  # harness.run.Pipeline, imported lazily so that harness.run may import this module
    nets: dict[str, Any]
    outputs: dict[str, SetOutputs]
    record: dict[str, Any]
    rows: list[dict[str, Any]]
    detector_reports: list[dict[str, Any]]
    csv_rows: list[dict[str, Any]]
    fpr_convention: str
    overrides: dict[str, dict[str, object]]
    perturbed: PerturbedFn
    _fitted: dict[str, tuple[Postprocessor, SetOutputs]] = field(default_factory=dict)

    @property
    def detectors(self) -> list[str]:
        """Detectors of the table, in its order."""
        seen: list[str] = []
        for row in self.rows:
            if row["detector"] not in seen:
                seen.append(str(row["detector"]))
        return seen

    @property
    def label(self) -> str:
        """benchmark / network / seed: which run a figure shows."""
        first = self.rows[0] if self.rows else {}
        settings = self.record.get("settings", {})
        benchmark = first.get("benchmark") or self.record.get("benchmark", {}).get("name", "?")
        network = first.get("network") or self.record.get("network", "?")
        return f"{benchmark} / {network} / seed {first.get('seed', settings.get('seed', '?'))}"

    @property
    def footnote(self) -> str:
        """The line under every figure: the run and the FPR convention its table uses."""
        convention = CONVENTION_TEXT.get(self.fpr_convention, self.fpr_convention)
        return f"run {self.label}  ·  FPR convention: {self.fpr_convention} ({convention})"

    def table_value(self, detector: str, dataset: str, metric: str = "auroc") -> float | None:
        """A metric of the results table (``results.json``, full precision), or None when absent."""
        for row in self.rows:
            if row["detector"] == detector and row["dataset"] == dataset:
                return float(row[metric])
        return None

    def fitted(self, name: str) -> tuple[Postprocessor, SetOutputs]:
        """A detector built and fitted exactly as the run's evaluation did, with the outputs it read."""
        if name not in self._fitted:
            self._fitted[name] = fit_detector(
                name, self.outputs, overrides=self.overrides, perturbed=self.perturbed
            )
        return self._fitted[name]


def run_overrides(pipeline: Any, record: Mapping[str, Any]) -> dict[str, dict[str, object]]:
    """Per-detector settings the run evaluated with: its foreground choice plus any searched values."""
    overrides = {name: dict(values) for name, values in pipeline.detector_overrides().items()}
    for name, info in (record.get("search") or {}).items():
        overrides.setdefault(name, {}).update(dict(info.get("chosen") or {}))
    return overrides


def open_run(run_dir: str | Path, reporter: Reporter | None = None) -> RunView:
    """Re-open a finished run read-only: networks, cached outputs, results and settings."""
    from dfb_ood.harness.run import Pipeline

    run_dir = Path(run_dir)
    results_path = run_dir / "results.json"
    if not results_path.is_file() and not results_path.is_symlink():
        raise MissingInputError(f"{run_dir} has no results.json; run `harness bench --out {run_dir}` first")
    pipeline = Pipeline.from_run_dir(run_dir, reporter)  # refuses links planted in the run folder
    check_results_intact(run_dir)  # a hand-edited results file is not reported as the run's results
    nets, outputs = pipeline.artifacts()
    results = read_json(results_path, follow_symlinks=False)
    record = read_json(run_dir / "run.json", follow_symlinks=False)
    return RunView(
        run_dir=run_dir,
        pipeline=pipeline,
        nets=nets,
        outputs=outputs,
        record=record,
        rows=list(results["rows"]),
        detector_reports=list(results.get("detectors", [])),
        csv_rows=read_csv(run_dir / "results.csv") if (run_dir / "results.csv").is_file() else [],
        fpr_convention=str(results.get("fpr_convention") or pipeline.settings.fpr_convention),
        overrides=run_overrides(pipeline, record),
        perturbed=pipeline.perturbed_outputs(nets),
    )


def ood_names(view: RunView) -> list[str]:
    """OOD test sets, near before far (each group in benchmark order)."""
    groups = next(iter(view.outputs.values())).groups
    return sorted(groups, key=lambda name: groups[name] != "near")


def dfb_variants(view: RunView) -> list[str]:
    """The run's DFB detectors (``_dfb``, ``_dfbz``), in table order."""
    return [d for d in view.detectors if registry.split_variant(d)[1] is not None]


def network_label(view: RunView, name: str) -> str:
    """The network a detector read in this run (its results row says; else the registry's default)."""
    for row in view.rows:
        if row["detector"] == name:
            return str(row.get("detector_network", ""))
    return network_of(name)


__all__ = [
    "RunView",
    "Section",
    "dfb_variants",
    "network_label",
    "ood_names",
    "open_run",
    "run_overrides",
]
