"""Stages 5-6 in a run folder: the detectors' hyper-parameter search, evaluation and results files.

:mod:`harness.evaluate` scores cached outputs and knows nothing of files; this module feeds it a
run's outputs and its detectors' settings, says what it noted, and merges the rows into the
run's ``results.csv`` / ``results.json`` without mixing rows of two versions of the data.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from dfb_ood.harness.detector_spec import DFB
from dfb_ood.harness.evaluate import SetOutputs, evaluate_detectors
from dfb_ood.harness.io import content_hash, write_json
from dfb_ood.harness.leaderboard import write_csv
from dfb_ood.harness.result_row import ResultRow
from dfb_ood.harness.runfolder import (
    RESULTS_FILES,
    RESULTS_STAGE,
    earlier_results,
    merge_reports,
    merge_rows,
    results_status,
)
from dfb_ood.harness.search import is_searchable, search_detector
from dfb_ood.harness.stage_context import StageContext
from dfb_ood.harness.stage_outputs import perturbed_outputs
from dfb_ood.networks import OODNet


def detector_overrides(ctx: StageContext) -> dict[str, dict[str, object]]:
    """Per-detector settings from the run: where DFB variants take their foreground score."""
    return {spec.name: spec.overrides for spec in ctx.plan.detectors if spec.overrides}


def stage_evaluate(
    ctx: StageContext, outputs: dict[str, SetOutputs], nets: dict[str, OODNet]
) -> list[ResultRow]:
    """Search (with ``--search``), evaluate every detector, say its notes, write the results (rank 0)."""
    plan, settings = ctx.plan, ctx.plan.settings
    eval_started = time.perf_counter()
    overrides = detector_overrides(ctx)
    if settings.search:
        overrides = _search(ctx, outputs, nets, overrides)
    rows, reports = evaluate_detectors(
        settings.detectors,
        outputs,
        fpr_convention=settings.fpr_convention,
        overrides=overrides,
        perturbed=perturbed_outputs(ctx, nets),
    )
    ctx.timings["evaluate"] = time.perf_counter() - eval_started
    for report in reports:
        for note in report.notes:
            text = note if note.startswith(report.name) else f"{report.name}: {note}"
            ctx.reporter.message(text, label="note")
        if report.clamped:
            ctx.reporter.message(
                f"{report.name}: background logit clamped before the log on "
                + ", ".join(f"{count} {name}" for name, count in report.clamped.items()),
                label="note",
            )
    for row in rows:
        row.update(benchmark=plan.benchmark.name, network=plan.network, seed=settings.seed)
        searched = ctx.search_results.get(str(row["detector"]), {}).get("chosen", {})
        row["hyperparameters"] = ", ".join(f"{k}={v}" for k, v in searched.items())
    _write_results(ctx, rows, [asdict(r) for r in reports])
    return rows


def _search(
    ctx: StageContext,
    outputs: dict[str, SetOutputs],
    nets: dict[str, OODNet],
    overrides: dict[str, dict[str, object]],
) -> dict[str, dict[str, object]]:
    """Choose each searchable detector's hyper-parameters on ID-val vs OOD-val (cached outputs)."""
    started = time.perf_counter()
    chosen = {name: dict(values) for name, values in overrides.items()}
    for spec in ctx.plan.detectors:
        name = spec.name
        if not is_searchable(name):
            continue
        result = search_detector(
            name,
            outputs[spec.network],
            network=spec.network,
            perturbed=perturbed_outputs(ctx, nets),
            fixed=overrides.get(name, {}),
            background=outputs[DFB] if spec.from_classifier else None,
        )
        chosen.setdefault(name, {}).update(result.chosen)
        ctx.search_results[name] = {
            "chosen": result.chosen,
            "val_auroc": result.best_auroc,
            "grid_points": len(result.tried),
            "tried": result.tried,
        }
        ctx.reporter.message(
            f"search {name}: "
            + (", ".join(f"{k}={v}" for k, v in result.chosen.items()) or "no grid")
            + f" (ID-val vs OOD-val AUROC {100 * result.best_auroc:.2f}, {len(result.tried)} points)"
        )
    ctx.timings["search"] = time.perf_counter() - started
    return chosen


def _write_results(ctx: StageContext, rows: list[ResultRow], reports: list[dict[str, Any]]) -> None:
    """Add this evaluation's rows to the run's results, replacing earlier rows of the same detectors.

    Earlier rows are kept only when they were computed from the data the sets hold now: a
    detector evaluated before a list or an image changed is dropped, and the message says
    which, so that a results file never mixes rows of two versions of a data set.
    """
    run_dir = ctx.plan.run_dir
    earlier_rows, earlier_reports, earlier_inputs = earlier_results(run_dir)
    if results_status(run_dir, "results.json")[0] == "damaged":  # edited: not the run's rows
        ctx.reporter.message(
            "results: results.json was changed after harness wrote it; its earlier rows are not kept "
            f"({', '.join(sorted({str(r['detector']) for r in earlier_rows})) or 'none'}): evaluate "
            "them again with --post",
            label="warning:",
        )
        earlier_rows, earlier_reports, earlier_inputs = [], [], {}
    data = ctx.data.key()
    latest = {str(row["detector"]) for row in rows}
    earlier = {str(row["detector"]) for row in earlier_rows} - latest
    outdated = sorted(name for name in earlier if earlier_inputs.get(name) != data)
    if outdated:
        ctx.reporter.message(
            f"results: dropped {len(outdated)} detector(s) evaluated earlier on other data (a list or "
            f"an image changed since, or they predate this record): {', '.join(outdated)}; evaluate "
            "them again with --post",
            label="warning:",
        )
        earlier_rows = [row for row in earlier_rows if str(row["detector"]) not in outdated]
        earlier_reports = [report for report in earlier_reports if report.get("name") not in outdated]
    kept = earlier - set(outdated)
    if kept:
        ctx.reporter.message(
            f"results: {len(kept)} detector(s) evaluated earlier in this run folder are kept "
            f"({', '.join(sorted(kept))})"
        )
    ctx.evaluated = sorted(latest | set(outdated))
    all_rows = merge_rows(earlier_rows, rows)
    inputs = {name: earlier_inputs[name] for name in kept} | {name: data for name in latest}
    write_csv(run_dir / "results.csv", all_rows)
    write_json(
        run_dir / "results.json",
        {
            "rows": all_rows,
            "detectors": merge_reports(earlier_reports, reports),
            "fpr_convention": ctx.plan.settings.fpr_convention,
            "inputs": inputs,
        },
    )
    # checksums, like every artifact: a hand-edited results file is then refused by every reader
    results = [run_dir / name for name in RESULTS_FILES]
    ctx.ledger.mark(RESULTS_STAGE, content_hash(inputs), results)
