"""Fault battery: SIGKILL the pipeline in every stage and at random points; resumed results must not change.

A tiny benchmark and recipe (written to a temporary folder, like ``tests/harness/test_pipeline.py``)
run once uninterrupted as the reference. Then, for each kill, a fresh run folder gets the same
command, which is killed with SIGKILL:

* in every stage (classifier training, masks, dense training, outputs, evaluate): the script watches
  the run folder (``run.lock``, ``stages.json``) to see the stage begin, then waits a seeded fraction
  of that stage's duration in the reference run (``run.json`` ``timings_s``) before killing;
* at random points: a seeded delay between 0 and the reference run's wall time.

After each kill the same command runs again until it completes (at most ``--max-reruns`` times) and
its ``results.csv`` must equal the reference's exactly, every column of every row: runs resume
bit-identically in one process configuration (one thread, CPU). Exit code 1 if any result differs
or a rerun never completes.

    python benchmarks/fault_battery.py [--kills 10] [--seed 0] [--steps 48] [--keep]

Writes ``docs/results/fault_battery.json`` (``--json PATH`` elsewhere, ``--json ''`` not at all);
``benchmarks/bad_inputs.py`` folds its summary into ``docs/reliability.md``. About 25 s per kill
on one core.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tiny_config import TINY_BENCHMARK, code_version, tiny_recipe  # benchmarks/ is the script's folder

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_JSON = ROOT / "docs" / "results" / "fault_battery.json"
STAGES = ("classifier", "masks", "dense", "outputs", "evaluate")
DETECTORS = "msp,odin,energy_dfbz,vim_dfb,odin_dfb,bg"
POLL_S = 0.005


# ---------------------------------------------------------------------------------------------- helpers
def bench_command(work: Path, out: Path) -> list[str]:
    return [
        sys.executable, "-m", "dfb_ood", "bench",
        "--benchmark", str(work / "tiny.yaml"),
        "--recipe", str(work / "recipe.yaml"),
        "--out", str(out),
        "--post", DETECTORS,
        "--device", "cpu",
        "--quiet", "--no-report",
    ]  # fmt: skip


def child_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "COLUMNS": "200"}


def read_stages(run_dir: Path) -> dict[str, Any]:
    """stages.json, or {} (it is written atomically; a failed read is retried once)."""
    path = run_dir / "stages.json"
    for _ in range(2):
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return {}
        except (json.JSONDecodeError, OSError):
            time.sleep(POLL_S)
    return {}


def reached(run_dir: Path) -> str:
    """The stage a run folder shows in progress: the first whose completion is not recorded."""
    if not (run_dir / "run.lock").exists() and not (run_dir / "stages.json").exists():
        return "startup"
    stages = read_stages(run_dir)
    for stage in ("classifier", "masks", "dense"):
        if stage not in stages:
            return stage
    if not {"outputs_classifier", "outputs_dfb"} <= set(stages):
        return "outputs"
    if (run_dir / "results.csv").exists():
        return "evaluate (results.csv written)"
    return "evaluate"


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def compare(reference: list[dict[str, str]], got: list[dict[str, str]]) -> list[str]:
    """Every difference (up to a few), as 'detector/dataset column: reference != got'."""
    if len(reference) != len(got):
        return [f"{len(got)} rows, the reference has {len(reference)}"]
    differences = []
    for ref, row in zip(reference, got):
        if set(ref) != set(row):
            differences.append(f"columns {sorted(set(ref) ^ set(row))} differ")
            continue
        for column in ref:
            if ref[column] != row[column]:
                where = f"{ref.get('detector')}/{ref.get('dataset')}"
                differences.append(f"{where} {column}: {ref[column]} != {row[column]}")
    return differences


def litter(run_dir: Path) -> list[str]:
    """Temporary files and resume checkpoints a finished run still holds (left by a killed writer)."""
    return sorted(
        str(p.relative_to(run_dir))
        for p in run_dir.rglob("*")
        if p.is_file() and (p.name.endswith(".tmp") or ".tmp." in p.name or p.name.endswith(".resume.pt"))
    )


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


# ---------------------------------------------------------------------------------------------- runs
def run_to_completion(command: list[str], timeout_s: float) -> tuple[int, float, str]:
    started = time.monotonic()
    try:
        done = subprocess.run(
            command, env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            timeout=timeout_s, check=False,
        )  # fmt: skip
        return done.returncode, time.monotonic() - started, done.stderr
    except subprocess.TimeoutExpired as error:
        return -1, time.monotonic() - started, f"timed out after {timeout_s:.0f} s: {error.stderr or ''}"


def wait_for_stage(process: subprocess.Popen, run_dir: Path, stage: str, deadline: float) -> str:
    """Poll until the run folder shows ``stage`` (or a later one); the stage it shows then."""
    order = ["startup", *STAGES]
    target = order.index(stage)
    while time.monotonic() < deadline and process.poll() is None:
        now = reached(run_dir)
        key = "evaluate" if now.startswith("evaluate") else now
        if order.index(key) >= target:
            return now
        time.sleep(POLL_S)
    return reached(run_dir)


def kill_trial(
    number: int, work: Path, plan: dict[str, Any], timings: dict[str, float], args: argparse.Namespace
) -> dict[str, Any]:
    """One kill in a fresh run folder, then reruns until the run completes; the record of it."""
    run_dir = work / f"kill{number:02d}"
    command = bench_command(work, run_dir)
    record: dict[str, Any] = {"kill": number, "target": plan["target"], "run_dir": str(run_dir)}
    started = time.monotonic()
    log = open(work / f"kill{number:02d}.stderr", "w+b")  # noqa: SIM115 - a file, not a pipe that can fill
    process = subprocess.Popen(command, env=child_env(), stdout=subprocess.DEVNULL, stderr=log)
    deadline = started + args.timeout
    if plan["target"] == "random":
        delay = plan["delay_s"]
        while time.monotonic() < started + delay and process.poll() is None:
            time.sleep(POLL_S)
    else:
        stage = plan["target"]
        seen = wait_for_stage(process, run_dir, stage, deadline)
        record["stage_seen_at_s"] = round(time.monotonic() - started, 3)
        if seen == stage:  # wait a fraction of the stage's reference duration, then kill
            pause = plan["fraction"] * timings.get(stage, 0.0)
            until = time.monotonic() + pause
            while time.monotonic() < until and process.poll() is None:
                time.sleep(POLL_S)
    if process.poll() is None:
        process.send_signal(signal.SIGKILL)
        killed_at = time.monotonic() - started
        process.wait()
        record.update(killed=True, seconds=round(killed_at, 3), reached=reached(run_dir))
    else:
        log.seek(0)
        stderr = log.read().decode(errors="replace")
        record.update(
            killed=False,
            seconds=round(time.monotonic() - started, 3),
            reached=f"exited {process.returncode} before the kill",
            first_exit_message=last_line(stderr),
        )
    log.close()
    record["results_after_kill"] = (run_dir / "results.csv").exists()
    reruns, rc, message = 0, None, ""
    while reruns < args.max_reruns:
        reruns += 1
        rc, _, stderr = run_to_completion(command, args.timeout)
        if rc == 0:
            break
        message = last_line(stderr)
    record.update(reruns=reruns, completed=rc == 0, rerun_error=message if rc != 0 else "")
    if rc == 0:
        record["differences"] = compare(read_rows(work / "reference" / "results.csv"),
                                        read_rows(run_dir / "results.csv"))  # fmt: skip
        record["identical"] = not record["differences"]
        stages = read_stages(run_dir)
        record["resumed_from"] = {
            stage: stages.get(stage, {}).get("resumed_from") for stage in ("classifier", "dense")
        }
        record["litter"] = litter(run_dir)
    else:
        record.update(identical=False, differences=[f"no rerun completed: {message}"], litter=[])
    record["trial_s"] = round(time.monotonic() - started, 2)
    return record


def plan_kills(count: int, seed: int, reference_wall: float) -> list[dict[str, Any]]:
    """One kill per stage (in pipeline order) first, then seeded random points in the run's wall time."""
    rng = random.Random(seed)
    plans: list[dict[str, Any]] = []
    for i in range(count):
        if i < len(STAGES):
            plans.append({"target": STAGES[i], "fraction": round(rng.uniform(0.15, 0.85), 3)})
        else:
            plans.append({"target": "random", "delay_s": round(rng.uniform(0.3, reference_wall), 3)})
    return plans


# ---------------------------------------------------------------------------------------------- output
def table(trials: list[dict[str, Any]]) -> str:
    header = ("kill", "target stage", "s after start", "stage reached", "reruns", "identical", "resumed at",
              "litter")  # fmt: skip
    lines = []
    for t in trials:
        resumed = ", ".join(
            f"{stage[:3]} {step}" for stage, step in (t.get("resumed_from") or {}).items() if step
        )
        target = t["target"] if t["target"] != "random" else f"random ({t['planned_s']:.2f} s)"
        lines.append((
            str(t["kill"]), target, f"{t['seconds']:.2f}", t["reached"], str(t["reruns"]),
            "yes" if t["identical"] else "NO", resumed or "-", str(len(t.get("litter") or [])),
        ))  # fmt: skip
    widths = [max(len(header[i]), *(len(row[i]) for row in lines)) for i in range(len(header))]
    rule = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)), rule]
    out += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in lines]
    return "\n".join(out)


def environment() -> dict[str, Any]:
    from importlib import metadata

    versions = {"python": platform.python_version()}
    for name in ("torch", "numpy"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "versions": versions}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10, help="Kills: one per stage, then random.")
    parser.add_argument("--seed", type=int, default=0, help="Seeds the kill points (not the training).")
    parser.add_argument("--steps", type=int, default=48, help="Training steps of the tiny recipe.")
    parser.add_argument("--max-reruns", type=int, default=3, help="Reruns allowed after a kill.")
    parser.add_argument("--timeout", type=float, default=600.0, help="Seconds allowed per process.")
    parser.add_argument("--keep", action="store_true", help="Keep the temporary folder.")
    parser.add_argument("--json", default=str(DEFAULT_JSON), help="Where to write the record ('' = nowhere).")
    args = parser.parse_args()
    if args.kills < 1 or args.steps < 1 or args.max_reruns < 1:
        parser.error("--kills, --steps and --max-reruns must be at least 1")

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="fault_battery_"))
    try:
        (work / "tiny.yaml").write_text(TINY_BENCHMARK)
        (work / "recipe.yaml").write_text(tiny_recipe(args.steps, checkpoint_every_s=0.5))
        print(f"reference run (uninterrupted) in {work / 'reference'} ...", flush=True)
        rc, wall, stderr = run_to_completion(bench_command(work, work / "reference"), args.timeout)
        if rc != 0:
            print(f"the reference run failed (exit {rc}): {last_line(stderr)}", file=sys.stderr)
            return 2
        run_record = json.loads((work / "reference" / "run.json").read_text())
        timings = {k: float(v) for k, v in run_record.get("timings_s", {}).items()}
        print(
            f"reference: {wall:.1f} s wall; stages "
            + ", ".join(f"{s} {timings.get(s, 0):.2f} s" for s in STAGES),
            flush=True,
        )
        trials = []
        for number, plan in enumerate(plan_kills(args.kills, args.seed, wall), start=1):
            trial = kill_trial(number, work, plan, timings, args)
            if plan["target"] == "random":
                trial["planned_s"] = plan["delay_s"]
            else:
                trial["fraction"] = plan["fraction"]
            trials.append(trial)
            differences = "; ".join(trial["differences"][:3])
            status = "identical" if trial["identical"] else f"DIFFERENT: {differences}"
            print(
                f"kill {number}/{args.kills}: {trial['target']} at {trial['seconds']:.2f} s, reached "
                f"{trial['reached']}, {trial['reruns']} rerun(s), {status}",
                flush=True,
            )
        print()
        print(table(trials))
        differ = [t for t in trials if not t["identical"]]
        kills = sum(t["killed"] for t in trials)
        missed = [t["kill"] for t in trials if not t["killed"]]
        litter_runs = [t["kill"] for t in trials if t.get("litter")]
        runtime = time.monotonic() - started
        summary = {
            "kills_planned": len(trials),
            "kills_done": kills,
            "missed": missed,
            "identical": len(trials) - len(differ),
            "different": [t["kill"] for t in differ],
            "stages_reached": sorted({t["reached"] for t in trials if t["killed"]}),
            "runs_with_litter": litter_runs,
            "runtime_s": round(runtime, 1),
        }
        print()
        print(
            f"{kills} kills ({len(missed)} missed: the run finished first), "
            f"{summary['identical']}/{len(trials)} results identical to the uninterrupted run; "
            f"runtime {runtime:.0f} s"
        )
        if litter_runs:
            print(f"note: runs {litter_runs} finished with temporary files or resume checkpoints left behind")
        for t in differ:
            print(f"kill {t['kill']}: " + "; ".join(t["differences"][:10]))
        if args.json:
            record = {
                "generated_by": "benchmarks/fault_battery.py",
                "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(["python benchmarks/fault_battery.py", *sys.argv[1:]]),
                "settings": {
                    "kills": args.kills,
                    "seed": args.seed,
                    "steps": args.steps,
                    "max_reruns": args.max_reruns,
                    "detectors": DETECTORS,
                    "omp_num_threads": 1,
                },  # fmt: skip
                "environment": environment(),
                "code": code_version(),
                "reference": {"wall_s": round(wall, 2), "timings_s": timings},
                "trials": trials,
                "summary": summary,
            }
            path = Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(record, indent=2) + "\n")
            print(f"wrote {path}")
        return 1 if differ else 0
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
