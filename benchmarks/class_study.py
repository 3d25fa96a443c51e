"""The paper's class-subset study (Fig. 7) on real images we have: fmnist-ood with C drawn classes.

The ImageNet study (``imagenet_subset --classes 200|300|500|1000``) needs ImageNet-1k, which this
machine does not have; this script runs the same machinery end to end on the shared Fashion-MNIST
benchmark (``../shared/data/fmnist-ood``, 10 classes): a copy of its YAML gains
``id_classes`` (and a ``root`` pointing back at its files), then for each C in ``--classes``
(default 4, 6, 8, 10) ``harness bench --classes C --class-seed S`` trains and evaluates one run
(the default recipe and detectors), and ``harness figure classes`` draws near / far AUROC against C.

Writes ``docs/results/class_study_fmnist.json`` (per C: the drawn classes and every detector's
near / far mean AUROC) and ``docs/figures/class_study_fmnist.png``. Finished runs in ``--folder``
are reused by the harness's own resume. About 25 minutes on 2 CPU cores.

    python benchmarks/class_study.py [--classes 4,6,8,10] [--class-seed 0] [--seed 0]
        [--folder runs/class_study] [--json PATH] [--figure PATH]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
FMNIST = ROOT.parent / "shared" / "data" / "fmnist-ood"
DEFAULT_JSON = ROOT / "docs" / "results" / "class_study_fmnist.json"
DEFAULT_FIGURE = ROOT / "docs" / "figures" / "class_study_fmnist.png"


def class_benchmark(folder: Path, class_seed: int) -> Path:
    """fmnist-ood's YAML with ``id_classes`` added and its paths rooted at the shared folder."""
    source = FMNIST / "benchmark.yaml"
    if not source.is_file():
        raise SystemExit(f"{source}: not found; this study needs the shared fmnist-ood benchmark")
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    raw["id_classes"] = {"count": raw["num_classes"], "seed": class_seed}
    raw["root"] = str(FMNIST)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fmnist_classes.yaml"
    text = "# fmnist-ood with a class draw, written by benchmarks/class_study.py\n" + yaml.safe_dump(
        raw, sort_keys=False
    )
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    return path


def harness(*args: str) -> None:
    """Run the CLI as a user would; stop with its exit code when it fails."""
    command = [sys.executable, "-m", "harness", *args]
    print("$", " ".join(command[2:]), flush=True)
    done = subprocess.run(command, cwd=ROOT, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[2:])} failed with exit code {done.returncode}")


def run_summary(run_dir: Path) -> dict[str, object]:
    """The drawn classes (run.json) and each detector's near / far mean AUROC (results.csv), percent."""
    record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    classes = record["benchmark"]["classes"]
    auroc: dict[str, dict[str, float]] = {}
    accuracy: dict[str, float] = {}  # per network the detector reads (classifier, dfb)
    with open(run_dir / "results.csv", newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            group = {"near_mean": "near", "far_mean": "far"}.get(row["dataset"])
            if group:
                auroc.setdefault(row["detector"], {})[group] = 100 * float(row["auroc"])
            if row.get("id_accuracy"):
                accuracy[row["detector_network"]] = 100 * float(row["id_accuracy"])
    return {
        "count": classes["count"],
        "ids": classes["ids"],
        "names": classes["names"],
        "benchmark": record["benchmark"]["name"],
        "id_accuracy": accuracy,
        "stage_seconds": record.get("timings_s"),
        "auroc": auroc,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", default="4,6,8,10", help="Comma-separated class counts C.")
    parser.add_argument("--class-seed", type=int, default=0, help="Seed of the class draws.")
    parser.add_argument("--seed", type=int, default=0, help="Run seed.")
    parser.add_argument("--folder", type=Path, default=ROOT / "runs" / "class_study")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--figure", type=Path, default=DEFAULT_FIGURE)
    args = parser.parse_args()
    counts = [int(part) for part in args.classes.split(",")]
    yaml_path = class_benchmark(args.folder, args.class_seed)
    started = time.perf_counter()
    run_dirs = []
    for count in counts:
        run_dir = args.folder / f"c{count}"
        harness(
            "bench",
            "--benchmark",
            str(yaml_path),
            "--classes",
            str(count),
            "--class-seed",
            str(args.class_seed),
            "--seeds",
            str(args.seed),
            "--out",
            str(run_dir),
            "--quiet",
        )
        run_dirs.append(run_dir)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    harness("figure", "classes", *map(str, run_dirs), "--out", str(args.figure), "--quiet")
    record = {
        "study": "class subsets of fmnist-ood (the paper's Fig. 7 protocol on Fashion-MNIST)",
        "command": " ".join(sys.argv),
        "benchmark_yaml": str(yaml_path.relative_to(ROOT) if yaml_path.is_relative_to(ROOT) else yaml_path),
        "class_seed": args.class_seed,
        "seed": args.seed,
        "measured_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "wall_s": round(time.perf_counter() - started, 1),
        "machine": {"python": platform.python_version(), "machine": platform.machine()},
        "figure": str(args.figure.relative_to(ROOT) if args.figure.is_relative_to(ROOT) else args.figure),
        "runs": [run_summary(run_dir) for run_dir in run_dirs],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(f".{args.json.name}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.replace(args.json)
    for run in record["runs"]:
        best = ", ".join(
            f"{name} {values.get('near', float('nan')):.1f}/{values.get('far', float('nan')):.1f}"
            for name, values in sorted(run["auroc"].items())
        )
        print(f"C={run['count']}: near/far AUROC {best}")
    print(f"wrote {args.json} and {args.figure}")


if __name__ == "__main__":
    main()
