"""What the staleness and integrity checks cost: a no-op rerun of a finished bench, with and without.

Why: every rerun now fingerprints each set (its entries, and each image's size and mtime) and
re-hashes every artifact it is about to reuse (sha256 against ``stages.json``). A rerun that
finds everything done should still be quick; the goal is that the checks add at most 10% to it.

The script makes (or completes) one run of the benchmark with the default recipe and detectors,
then times the same ``bench`` again, alternating two conditions in one process so that the
machine's state is shared:

- ``checks``: the code as it ships;
- ``no checks``: set fingerprints served from a table computed beforehand and every checksum
  comparison skipped (what a rerun cost before these checks existed; the keys are the same, so
  both conditions skip the same stages).

It prints the median wall time of each and their ratio, and writes
``docs/results/bench_checks.json`` (``--json ''``: nowhere).

    python benchmarks/bench_checks.py [--benchmark shapes] [--repeats 3] [--run-dir DIR]
"""

from __future__ import annotations

import os

# Sleeping OpenMP waits, set before torch loads its runtime (see harness/__init__.py for why).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

from tiny_config import code_version, machine_environment  # benchmarks/ is the script's folder

import dfb_ood.harness.ledger
import dfb_ood.harness.rundata
from dfb_ood.harness.evaluate import default_detectors
from dfb_ood.harness.io import write_json
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.run import Pipeline
from dfb_ood.harness.settings import BenchSettings

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "docs" / "results" / "bench_checks.json"


@contextlib.contextmanager
def checks_off(fingerprints: dict[str, str]) -> Iterator[None]:
    """Fingerprints from a table made beforehand, and no checksum comparisons."""
    with (
        mock.patch.object(
            dfb_ood.harness.rundata, "set_fingerprint", lambda spec, *a, **k: fingerprints[spec.name]
        ),
        mock.patch.object(dfb_ood.harness.ledger, "damaged", lambda *a, **k: []),
    ):
        yield


def timed_rerun(settings: BenchSettings) -> float:
    started = time.perf_counter()
    Pipeline(settings, Reporter(quiet=True)).run()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--benchmark", default="shapes", help="name or YAML (default: the default bench)")
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument("--recipe", default="frozen")
    parser.add_argument("--repeats", type=int, default=3, help="reruns timed per condition")
    parser.add_argument("--run-dir", type=Path, default=None, help="reuse (or make) the run here")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="record path ('' = none)")
    args = parser.parse_args()

    with contextlib.ExitStack() as stack:
        run_dir = args.run_dir or Path(stack.enter_context(tempfile.TemporaryDirectory())) / "run"
        settings = BenchSettings(
            benchmark=args.benchmark,
            recipe=args.recipe,
            data_root=args.data_root,
            out=run_dir,
            detectors=default_detectors(),
            quiet=True,
        )
        print(f"making (or completing) the run in {run_dir} ...", flush=True)
        first = timed_rerun(settings)
        probe = Pipeline(settings, Reporter(quiet=True))
        fingerprints = {name: probe.data_fingerprint(name) for name in probe._set_specs()}
        times: dict[str, list[float]] = {"checks": [], "no checks": []}
        for repeat in range(args.repeats):
            order = ("checks", "no checks") if repeat % 2 == 0 else ("no checks", "checks")
            for condition in order:
                with checks_off(fingerprints) if condition == "no checks" else contextlib.nullcontext():
                    times[condition].append(timed_rerun(settings))
                print(f"  {condition:9s} rerun {repeat + 1}: {times[condition][-1]:.2f} s", flush=True)
        medians = {condition: statistics.median(values) for condition, values in times.items()}
        ratio = medians["checks"] / medians["no checks"]
        artifacts = sum(len(record.get("files", {})) for record in probe._stages().values())
        size_mb = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file()) / 2**20

    print(f"first run (made or completed the run): {first:.1f} s")
    print(
        f"no-op rerun, median of {args.repeats}: {medians['checks']:.2f} s with the checks, "
        f"{medians['no checks']:.2f} s without; ratio {ratio:.3f} (goal <= 1.10); "
        f"{artifacts} artifacts recorded, run folder {size_mb:.0f} MiB"
    )
    if args.json:
        write_json(
            args.json,
            {
                "benchmark": args.benchmark,
                "recipe": args.recipe,
                "repeats": args.repeats,
                "seconds": times,
                "median_s": medians,
                "ratio": ratio,
                "artifacts": artifacts,
                "run_folder_mib": size_mb,
                "environment": machine_environment(),
                "code": code_version(),
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(["python", *sys.argv]),
            },
        )
        print(f"wrote {json.dumps(str(args.json))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
