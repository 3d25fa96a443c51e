"""``run.json``, what a run folder says about its run, and the message for a disk that filled up.

``run.json`` records what defines the run (its identity, which the run folder checks on every
later run), how it ran (device, versions, timings) and where it got to; readers find the run's
settings there when they re-open it.
"""

from __future__ import annotations

import errno
import os
import platform
import shutil
import subprocess
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from dfb_ood.harness import distributed
from dfb_ood.harness.data.streaming import data_workers, in_memory_limit_mb
from dfb_ood.harness.detector_spec import CLASSIFIER, DFB
from dfb_ood.harness.errors import SystemResourceError
from dfb_ood.harness.io import write_json
from dfb_ood.harness.runfolder import git_commit, merge_search, package_versions, read_record
from dfb_ood.harness.stage_context import StageContext

STAGES = ("classifier", "masks", "dense", "outputs", "evaluate")
#: The errors of a full disk (or of a used-up quota).
DISK_FULL = (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC))


def utc_now() -> str:
    """The time now, UTC, ISO 8601 to the second (``2026-12-08T01:02:03Z``)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def git_dirty(folder: Path) -> bool | None:
    """Whether the checkout has uncommitted changes to tracked files; None if it is no git checkout.

    Local and cheap (no network, untracked files not listed), so every ``run.json`` can say
    whether its commit alone describes the code that ran.
    """
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return bool(result.stdout.strip()) if result.returncode == 0 else None


def write_record(ctx: StageContext, status: str, replacing: bool) -> None:
    """``run.json``: what defines the run, how it ran, and where it got to.

    ``started_utc`` is when the run began (its first bench call; an ``--overwrite`` replacement starts
    again), ``finished_utc`` when the latest call completed (None while one runs); neither enters
    any key or result, like the timings.
    """
    plan, settings, benchmark = ctx.plan, ctx.plan.settings, ctx.plan.benchmark
    current = read_record(plan.run_dir) or {}
    earlier = {} if replacing else current
    now = utc_now()
    # the run began with its first bench call (kept by resumes, reruns and `harness eval`; a
    # replacement of the run starts again); this call's "running" record holds it when it completes
    started = (earlier if status == "running" else current).get("started_utc")
    started = started if isinstance(started, str) else now
    code = Path(__file__).resolve().parent.parent
    search = merge_search(earlier.get("search") or {}, ctx.search_results, ctx.evaluated)
    world = distributed.world()
    write_json(
        plan.run_dir / "run.json",
        {
            "status": status,
            "cwd": os.getcwd(),  # what the relative paths in "settings" are relative to
            "identity": plan.identity(),
            "settings": asdict(settings),
            "benchmark": {
                "name": benchmark.name,
                "source": benchmark.source,
                "num_classes": benchmark.num_classes,
                "image_size": benchmark.image_size,
                "mean": benchmark.mean,
                "std": benchmark.std,
                "classes": subset.record() if (subset := benchmark.class_subset) else None,
            },
            "recipe": plan.recipe.as_dict(),
            "network": plan.network,
            "normalization": {"mean": list(plan.mean), "std": list(plan.std)},
            "eval_size": plan.eval_size,
            # how this invocation read the sets (not part of the identity: both paths give the
            # same outputs); streamed_sets names those it streamed, so a rerun that found every
            # stage done, and read no images, records none
            "data_path": {
                "in_memory_mb": in_memory_limit_mb(settings.in_memory_mb),
                "workers": data_workers(settings.data_workers),
                "streamed_sets": sorted(ctx.data.streamed),
            },
            "device": str(plan.device),
            "device_name": torch.cuda.get_device_name(plan.device)
            if plan.device.type == "cuda"
            else platform.processor() or platform.machine(),
            "torch_threads": torch.get_num_threads(),
            "distributed": {"world_size": world.size, "backend": world.backend},
            "versions": package_versions(),
            "git_commit": git_commit(code),
            "git_dirty": git_dirty(code),
            "started_utc": started,
            "finished_utc": None if status == "running" else now,
            "timings_s": ctx.timings,
            "search": search,
            "stages": ctx.ledger.records() if ctx.ledger.path.is_file() else {},
        },
    )


def disk_full(run_dir: Path, stages: dict, error: OSError) -> SystemResourceError:
    """A full disk: say which file system, what it was writing, and what was kept for a resume."""
    try:
        free_mb = shutil.disk_usage(run_dir).free / 2**20
        free = f"{free_mb:.0f} MiB free"
    except OSError:
        free = "free space unknown"
    order = [*STAGES[:3], f"outputs_{CLASSIFIER}", f"outputs_{DFB}"]
    kept = [
        name
        for name in order
        if name in stages and all((run_dir / f).is_file() for f in stages[name].get("files", {}))
    ]
    kept += [p.name for p in sorted(run_dir.glob("*.resume.pt"))]
    return SystemResourceError(
        error.errno,
        f"no space left on the file system holding {run_dir.resolve()} ({free}) while writing "
        f"{error.filename or 'an artifact'}; kept: {', '.join(kept) or 'nothing yet'}. Free some space "
        "and run the same command again: it resumes from what was kept",
    )
