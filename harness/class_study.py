"""The class-subset study across runs: AUROC against the number of ID classes (the paper's Fig. 7).

Each run of a class-subset benchmark (``imagenet_subset --classes C``) records its drawn classes
in ``run.json`` (``benchmark.classes``); this module reads the class count from there (or the
benchmark's ``num_classes`` for a run of a whole benchmark, e.g. plain ``imagenet`` as C = 1000)
and the near/far mean AUROC rows from ``results.csv``, and averages runs of one count (several
seeds, or several class draws). Nothing is recomputed: the figure is made from finished runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dfb_ood.errors import InputError, MissingInputError
from dfb_ood.harness.io import read_json
from dfb_ood.harness.leaderboard import load_run_rows

#: The results rows the figure reads: the near- and far-OOD means of each detector.
GROUP_ROWS = {"near": "near_mean", "far": "far_mean"}


@dataclass
class ClassStudy:
    """AUROC fractions of every detector, by group and class count, over the runs given."""

    counts: list[int]
    values: dict[str, dict[str, dict[int, list[float]]]] = field(default_factory=dict)
    benchmarks: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)
    runs: int = 0

    def curves(
        self, detectors: list[str] | None = None
    ) -> dict[str, dict[str, list[tuple[float, float] | None]]]:
        """Per detector and group, one (mean, std) per count (std over runs; None where none measured it)."""
        names = detectors if detectors is not None else list(self.values)
        out: dict[str, dict[str, list[tuple[float, float] | None]]] = {}
        for name in names:
            out[name] = {}
            for group, by_count in self.values[name].items():
                points: list[tuple[float, float] | None] = []
                for count in self.counts:
                    found = by_count.get(count)
                    if not found:
                        points.append(None)
                        continue
                    array = np.asarray(found, dtype=np.float64)
                    points.append((float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0))
                out[name][group] = points
        return out


def class_count(run_dir: Path) -> tuple[int, str]:
    """(number of ID classes, benchmark name) of a finished run, from its ``run.json``."""
    record_path = run_dir / "run.json"
    if not record_path.is_file():
        raise MissingInputError(f"{run_dir} has no run.json; run `harness bench --out {run_dir}` first")
    benchmark = read_json(record_path).get("benchmark") or {}
    classes = benchmark.get("classes")
    count = classes.get("count") if isinstance(classes, dict) else benchmark.get("num_classes")
    if not isinstance(count, int):
        raise InputError(f"{record_path}: records no class count (benchmark.classes.count or num_classes)")
    return count, str(benchmark.get("name", "?"))


def collect(run_dirs: list[Path]) -> ClassStudy:
    """Read every run (class count and near/far mean AUROC rows); several counts are needed for a curve."""
    if not run_dirs:
        raise InputError("give the run directories to compare, e.g. runs/imagenet_subset_c*/*/seed0")
    per_run = []
    for run_dir in run_dirs:
        count, benchmark = class_count(Path(run_dir))
        per_run.append((count, benchmark, load_run_rows(run_dir)))  # reads every run before drawing
    counts = sorted({count for count, _, _ in per_run})
    if len(counts) < 2:
        raise InputError(
            f"all {len(run_dirs)} run(s) have {counts[0]} ID classes: AUROC against the number of "
            "classes needs runs of at least two class counts (e.g. `harness bench --id imagenet_subset "
            "--classes 300`)"
        )
    study = ClassStudy(counts=counts, runs=len(run_dirs))
    for count, benchmark, rows in per_run:
        if benchmark not in study.benchmarks:
            study.benchmarks.append(benchmark)
        for row in rows:
            group = next((g for g, dataset in GROUP_ROWS.items() if row["dataset"] == dataset), None)
            if group is None:
                continue
            network = str(row["network"])
            if network not in study.networks:
                study.networks.append(network)
            by_group = study.values.setdefault(str(row["detector"]), {})
            by_group.setdefault(group, {}).setdefault(count, []).append(float(row["auroc"]))  # type: ignore[arg-type]
    if not study.values:
        raise InputError("no near_mean / far_mean rows in these runs' results.csv: nothing to plot")
    return study


def write_class_figure(run_dirs: list[Path], out: Path, detectors: list[str] | None = None) -> Path:
    """Draw AUROC against the number of ID classes from finished runs into ``out`` (format by its ending)."""
    from dfb_ood.harness import plots

    plots.figure_format_of(out)  # a bad ending fails before any run is read
    study = collect(run_dirs)
    if detectors is not None:
        unknown = [name for name in detectors if name not in study.values]
        if unknown:
            raise InputError(
                f"--post {', '.join(unknown)}: not in these runs' results; they have "
                f"{', '.join(study.values)}"
            )
    networks = ", ".join(study.networks)
    if len(study.networks) > 1:
        raise InputError(
            f"these runs use several networks ({networks}); give the runs of one network, so each curve "
            "compares class counts only"
        )
    plots.auroc_vs_classes(
        study.counts,
        study.curves(detectors),
        out,
        title=f"AUROC against the number of ID classes ({networks})",
        footnote=(
            f"{study.runs} run(s) of {', '.join(study.benchmarks)}; near/far mean AUROC from each "
            "results.csv; error bars: std over runs of one class count (seeds or class draws)"
        ),
    )
    return out
