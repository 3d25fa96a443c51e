"""The paper's class-subset study (Fig. 7) on real images we have: a benchmark with C drawn classes.

The ImageNet study (``imagenet_subset --classes 200|300|500|1000``) needs ImageNet-1k; this script
runs the same machinery end to end on a smaller benchmark given by ``--benchmark``: an
OpenOOD-layout benchmark YAML whose ID sets are image lists (``id_classes`` keeps the drawn
classes of image-list ID sets only, so the built-in ``fmnist_mini``, whose sets are arrays, will
not do), such as fmnist-ood's benchmark.yaml (Fashion-MNIST, 10 classes, vs digits, glyphs,
textures and photos), which the committed record was made with. A copy of its YAML gains
``id_classes`` (and a ``root`` pointing back at its files), then for each C in ``--classes``
(default 4, 6, 8, 10) ``harness bench --classes C --class-seed S`` trains and evaluates one run
(the default recipe and detectors), and ``harness figure classes`` draws near / far AUROC against C.

Writes ``docs/results/class_study_<name>.json`` (per C: the drawn classes and every detector's
near / far mean AUROC) and ``docs/figures/class_study_<name>.png``, ``<name>`` the benchmark's
``name`` (``fmnist`` for fmnist-ood). Finished runs in ``--folder`` are reused by the harness's own
resume. About 25 minutes on 2 CPU cores for fmnist-ood.

    python benchmarks/class_study.py --benchmark PATH [--classes 4,6,8,10] [--class-seed 0] [--seed 0]
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

from dfb_ood.harness.data import load_benchmark

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"
FIGURES = ROOT / "docs" / "figures"


def class_benchmark(source: Path, folder: Path, class_seed: int) -> tuple[Path, str]:
    """A copy of the benchmark YAML ``source`` with ``id_classes`` added and its paths rooted at
    the original's folder, and the benchmark's name; refused (before any run) unless its ID sets
    are image lists."""
    if not source.is_file():
        raise SystemExit(f"{source}: not found; pass --benchmark an OpenOOD-layout benchmark YAML")
    try:
        original = load_benchmark(source)
    except (ValueError, OSError) as error:
        raise SystemExit(f"{source}: {error}") from None
    raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    raw["id_classes"] = {"count": raw["num_classes"], "seed": class_seed}
    raw["root"] = str(original.root)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{original.name}_classes.yaml"
    text = f"# {source.parent.name} with a class draw, written by benchmarks/class_study.py\n"
    text += yaml.safe_dump(raw, sort_keys=False)
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        path.write_text(text, encoding="utf-8")
    try:
        load_benchmark(path)  # id_classes needs image-list ID sets: say so now, not in the first run
    except (ValueError, OSError) as error:
        path.unlink()
        raise SystemExit(f"{source}: cannot draw classes from it: {error}") from None
    return path, original.name


def harness(*args: str) -> None:
    """Run the CLI as a user would; stop with its exit code when it fails."""
    command = [sys.executable, "-m", "dfb_ood", *args]
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
    parser.add_argument(
        "--benchmark", type=Path, required=True,
        help="an OpenOOD-layout benchmark YAML with image-list ID sets (e.g. fmnist-ood's benchmark.yaml)",
    )  # fmt: skip
    parser.add_argument("--classes", default="4,6,8,10", help="Comma-separated class counts C.")
    parser.add_argument("--class-seed", type=int, default=0, help="Seed of the class draws.")
    parser.add_argument("--seed", type=int, default=0, help="Run seed.")
    parser.add_argument("--folder", type=Path, default=ROOT / "runs" / "class_study")
    parser.add_argument(
        "--json", type=Path, default=None, help="default: docs/results/class_study_<name>.json"
    )
    parser.add_argument(
        "--figure", type=Path, default=None, help="default: docs/figures/class_study_<name>.png"
    )
    args = parser.parse_args()
    counts = [int(part) for part in args.classes.split(",")]
    yaml_path, name = class_benchmark(args.benchmark.resolve(), args.folder, args.class_seed)
    args.json = args.json or RESULTS / f"class_study_{name}.json"
    args.figure = args.figure or FIGURES / f"class_study_{name}.png"
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
        "study": f"class subsets of {name} (the paper's Fig. 7 protocol)",
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
