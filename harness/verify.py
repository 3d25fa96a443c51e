"""``harness verify RUN``: is every artifact of a run intact, and was it made from what is there now?

A run folder vouches for its artifacts in ``stages.json``: each stage's key (a hash of everything
it was made from: settings, weights, the data's fingerprints) and the sha256 of each file it
wrote. This module re-derives every key from the run's recorded settings and the data as it is
today, re-hashes every file, and sorts each artifact into one of:

- ``intact``: the bytes match the record and the key matches today's data and code;
- ``stale``: the bytes are intact but what they were made from has changed (an edited list, a
  replaced image, another checkpoint): the next ``harness bench`` recomputes it;
- ``damaged``: missing, a symbolic link, or bytes that differ from the recorded checksum.

It also says which detectors' rows in ``results.json`` were computed from other data. Nothing is
written; the run folder is read under its shared lock, so a running ``bench`` is never disturbed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from dfb_ood.errors import MissingInputError
from dfb_ood.harness.evaluate import CLASSIFIER, DFB
from dfb_ood.harness.io import READ_FIX, READ_WAIT_S, read_json, read_lock
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.runfolder import RESULTS_STAGE, damaged, earlier_results, results_status

STATUSES = ("intact", "stale", "damaged")


@dataclass(frozen=True)
class ArtifactCheck:
    """One file (or one group of results) of a run and what :func:`verify_run` found."""

    stage: str
    file: str
    status: str
    detail: str = ""


def _expected_keys(pipeline: Any) -> dict[str, Callable[[], str]]:
    """The key each whole-stage record should hold today, computed only when asked."""
    return {
        "classifier": pipeline.classifier_key,
        "features": pipeline.features_key,
        "masks": pipeline.masks_key,
        "dense": pipeline.dense_key,
        f"outputs_{CLASSIFIER}": lambda: pipeline.outputs_key(CLASSIFIER),
        f"outputs_{DFB}": lambda: pipeline.outputs_key(DFB),
    }


def _file_checks(
    run_dir: Path, stage: str, record: dict[str, Any], stale_why: Callable[[str], str | None]
) -> list[ArtifactCheck]:
    """Each recorded file of a stage: damaged if its bytes fail, else stale (with why) or intact."""
    checks = []
    for name in record.get("files") or {}:
        problems = damaged(run_dir, record.get("files"), [run_dir / name])
        why = None if problems else stale_why(name)
        if problems:
            checks.append(ArtifactCheck(stage, name, "damaged", "; ".join(problems)))
        elif why:
            checks.append(ArtifactCheck(stage, name, "stale", why))
        else:
            checks.append(ArtifactCheck(stage, name, "intact"))
    return checks


def _stale_reason(
    pipeline: Any, stage: str, record: dict[str, Any], expected: dict[str, Callable[[], str]]
) -> Callable[[str], str | None]:
    """For one stage record: a function from file name to why it is stale (None when current)."""
    try:
        if stage in expected:
            if record.get("key") != expected[stage]():
                return lambda name: "made from other settings, weights or data than the run's today"
            if stage.startswith("outputs_"):
                kind = stage.removeprefix("outputs_")
                sets = record.get("sets")
                if not isinstance(sets, dict):
                    return lambda name: "recorded without per-set data keys (an older version)"

                def per_set(name: str) -> str | None:
                    set_name = Path(name).parent.name  # outputs/<network>/<set>/<array>.npy
                    if sets.get(set_name) != pipeline.outputs_set_key(kind, set_name):
                        return f"set {set_name!r} changed since (its list or image files)"
                    return None

                return per_set
            return lambda name: None
        kind, _, set_name = stage.partition("/")
        set_name = set_name.rpartition("/")[2]
        if kind in (CLASSIFIER, DFB) and set_name:  # a detector's own pass (ODIN, RankFeat)
            source = record.get("source")
            if source is None:
                return lambda name: "recorded without its source key (an older version)"
            if source != pipeline.outputs_set_key(kind, set_name):
                return lambda name: f"set {set_name!r} or its network changed since"
            return lambda name: None
    except (OSError, ValueError) as error:  # e.g. the --checkpoint file is gone
        message = f"cannot derive its key today: {error}"
        return lambda name: message
    return lambda name: "a stage this version does not know"


def verify_run(run_dir: str | Path, reporter: Reporter | None = None) -> list[ArtifactCheck]:
    """Check every artifact recorded in a run's ``stages.json`` and every detector's results."""
    from dfb_ood.harness.run import Pipeline  # the pipeline imports most of the harness: only when verifying

    run_dir = Path(run_dir)
    stages_path = run_dir / "stages.json"
    if not stages_path.is_file():
        raise MissingInputError(f"{run_dir} has no stages.json: not a harness run folder, or nothing ran yet")
    checks: list[ArtifactCheck] = []
    with read_lock(run_dir, wait_s=READ_WAIT_S, fix=READ_FIX):  # run.json too: a bench may be rewriting it
        pipeline = Pipeline.from_run_dir(run_dir, reporter or Reporter(quiet=True))
        stages = read_json(stages_path, follow_symlinks=False)
        expected = _expected_keys(pipeline)
        for stage, record in stages.items():
            if stage == RESULTS_STAGE:  # the results files: their bytes (which rows are stale: below)
                for name in record.get("files") or {}:
                    status, detail = results_status(run_dir, name)
                    checks.append(
                        ArtifactCheck(stage, name, "damaged" if status != "intact" else status, detail)
                    )
                continue
            reason = _stale_reason(pipeline, stage, record, expected)
            checks.extend(_file_checks(run_dir, stage, record, reason))
        rows, _, inputs = earlier_results(run_dir)
        try:
            data: str | None = pipeline.data_key()
        except OSError:  # the data is gone: the per-stage checks above already say so
            data = None
        for detector in dict.fromkeys(str(row["detector"]) for row in rows):
            recorded = inputs.get(detector)
            if recorded == data:
                checks.append(ArtifactCheck("results", f"results.json: {detector}", "intact"))
            else:
                why = (
                    "recorded before data keys were kept" if recorded is None else "computed from other data"
                )
                checks.append(ArtifactCheck("results", f"results.json: {detector}", "stale", why))
    return checks


def summary(checks: list[ArtifactCheck]) -> dict[str, int]:
    """How many checks have each status."""
    return {status: sum(check.status == status for check in checks) for status in STATUSES}


def as_records(checks: list[ArtifactCheck]) -> list[dict[str, str]]:
    """The checks as JSON-able dicts."""
    return [asdict(check) for check in checks]
