"""Regenerate every number, table and figure that README.md quotes, from fresh runs of the CLI.

    make docs                                           # the default bench, then tests/test_readme.py
    make docs DOCS_ARGS=--fmnist                        # also the Fashion-MNIST section (minutes more)
    .venv/bin/python docs/make_docs.py --render-only    # rewrite README.md from docs/results/ alone

It lives in ``docs/``, beside what it writes, because it is the build of the documentation; the
scripts under ``benchmarks/`` measure speed and print ratios, which this does not.

For each run (``shapes``: exactly ``harness bench``, what ``make bench`` runs; ``fmnist``, with
``--fmnist``: ``harness bench --benchmark ../shared/data/fmnist-ood/benchmark.yaml``):

1. delete and re-create ``runs/docs/<name>/`` (results are never reused) and run the CLI in a
   subprocess with only ``--out runs/docs/<name>/run`` added, ``COLUMNS=80`` (so rich draws the
   table at a fixed width) and a fresh decoded-image cache (``HARNESS_CACHE``, so the time is a
   first run's). stdout, the leaderboard a user sees, is captured; stderr (progress) passes
   through; the wall time is measured around the whole command, report included;
2. copy the run's ``results.csv`` to ``docs/results/<name>_default.csv`` and write
   ``docs/results/<name>_default.json``: the command, wall seconds, machine (CPUs, platform,
   torch version, device), git commit, the captured stdout and the facts the README's prose quotes
   (pseudo-mask quality from ``masks.json``; per-set background statistics of the DFB net);
3. copy the report figures the README shows into ``docs/figures/`` and the mask preview into
   ``docs/<name>_masks_preview.png``;
4. rewrite README.md from ``docs/results/`` alone: every block between
   ``<!-- make-docs:NAME:start -->`` and ``<!-- make-docs:NAME:end -->`` (see BLOCKS) and every
   single value written ``<!-- make-docs:KEY -->VALUE<!-- /make-docs -->`` (see ``values``).

``tests/test_readme.py`` checks that README.md is exactly what step 4 renders from the committed
files, that the leaderboard's numbers equal the committed CSV aggregated by ``harness.leaderboard``,
and that the README's claims in words still hold for those numbers.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results"
WORKDIR = ROOT / "runs" / "docs"
FMNIST_BENCHMARK = "../shared/data/fmnist-ood/benchmark.yaml"  # relative to the repository root
COLUMNS = 80  # the terminal width the leaderboard is rendered at

BLOCK = re.compile(
    r"(?P<start><!-- make-docs:(?P<name>[a-z0-9-]+):start -->\n)(?P<body>.*?)"
    r"(?P<end>\n?<!-- make-docs:(?P=name):end -->)",
    re.S,
)
VALUE = re.compile(
    r"(?P<start><!-- make-docs:(?P<key>[a-z0-9_.]+) -->)(?P<value>.*?)(?P<end><!-- /make-docs -->)"
)
FIGURE_LINK = re.compile(r"\]\((docs/figures/[\w.-]+\.png)\)")


# ------------------------------------------------------------------------------------ the runs
def bench_command(name: str) -> list[str]:
    """The command a user types for this run (``--out`` is added when running it)."""
    if name == "shapes":
        return ["harness", "bench"]
    if name == "fmnist":
        return ["harness", "bench", "--benchmark", FMNIST_BENCHMARK]
    raise ValueError(f"unknown run {name!r}")


def git_state() -> dict[str, Any]:
    """The commit the code came from and whether tracked files differed from it."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    return {
        "commit": git("rev-parse", "HEAD") or None,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """Where the run was timed (the device the run used is added from its run.json)."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_count": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_model": cpu_model(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": metadata.version("torch"),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }


def run_bench(name: str, workdir: Path) -> dict[str, Any]:
    """Run the CLI into a fresh folder; the record of what ran, what it printed and how long it took."""
    folder = workdir / name
    if folder.exists():
        shutil.rmtree(folder)
    run_dir = folder / "run"
    folder.mkdir(parents=True)
    command = bench_command(name)
    executable = Path(sys.executable).parent / "harness"
    argv = [str(executable)] if executable.is_file() else [sys.executable, "-m", "harness"]
    argv += [*command[1:], "--out", str(run_dir)]
    env = {**os.environ, "COLUMNS": str(COLUMNS), "HARNESS_CACHE": str(folder / "cache")}
    env.pop("FORCE_COLOR", None)
    env.pop("LINES", None)
    state, host = git_state(), machine()
    print(f"make_docs: running `{' '.join(command)}` into {run_dir}", file=sys.stderr, flush=True)
    started_at = datetime.now(timezone.utc)
    started = time.perf_counter()
    done = subprocess.run(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, check=False)
    wall = time.perf_counter() - started
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        raise SystemExit(f"make_docs: `{' '.join(argv)}` failed with exit code {done.returncode}")
    stdout = re.sub(r"\x1b\[[0-9;]*m", "", done.stdout)  # no colours, whatever the environment asked
    record = {
        "name": name,
        "command": " ".join(command),
        "ran": " ".join(command + ["--out", os.path.relpath(run_dir, ROOT)]),
        "wall_s": round(wall, 1),
        "started_utc": started_at.strftime("%Y-%m-%d %H:%M UTC"),
        "git": state,
        "machine": host,
        "columns": COLUMNS,
        "stdout": [line.rstrip() for line in stdout.rstrip("\n").split("\n")],  # as seen, minus padding
    }
    # Kept beside the run, so that a failure after the bench still leaves what it printed and its time.
    (folder / "bench.json").write_text(
        json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return {**record, "run_dir": run_dir}


def run_facts(run_dir: Path) -> dict[str, Any]:
    """What the README's prose quotes beyond the table, read or computed from the finished run."""
    import numpy as np
    import torch

    from harness.augment import evaluation_batches
    from harness.evaluate import DFB
    from harness.io import read_json
    from harness.report import open_run

    record = read_json(run_dir / "run.json")
    facts: dict[str, Any] = {
        "device": record.get("device"),
        "device_name": record.get("device_name"),
        "torch_threads": record.get("torch_threads"),
        "steps": (record.get("recipe") or {}).get("steps"),
        "recipe": (record.get("settings") or {}).get("recipe"),
        "network": record.get("network"),
        "versions": record.get("versions"),
        "timings_s": {k: round(float(v), 1) for k, v in (record.get("timings_s") or {}).items()},
    }
    if (run_dir / "masks.json").is_file():
        masks = read_json(run_dir / "masks.json")
        facts["masks"] = {k: v for k, v in masks.items() if k != "key"}
    view = open_run(run_dir)
    if DFB not in view.nets:
        return facts
    net = view.nets[DFB].eval()
    device = next(net.parameters()).device
    bench, outputs = view.pipeline.benchmark, view.outputs[DFB]
    background = net.num_classes  # the DFB net's last output: the ID-background class K
    pixels: dict[str, dict[str, Any]] = {}
    for set_name, set_outputs in {"test": outputs.test, **outputs.ood}.items():
        images, _ = view.pipeline.arrays(set_name)
        argmax_bg = p_bg = count = 0.0
        batches = evaluation_batches(
            images,
            mean=bench.mean,
            std=bench.std,
            size=view.pipeline.eval_size,
            device=device,
            batch_size=256,
        )
        with torch.no_grad():
            for _, batch in batches:
                logits = net.dense(batch).float()
                argmax_bg += float((logits.argmax(dim=1) == background).sum())
                p_bg += float(torch.softmax(logits, dim=1)[:, background].sum())
                count += logits[:, 0].numel()
        pixels[set_name] = {
            "group": "id" if set_name == "test" else outputs.groups.get(set_name, "far"),
            "images": int(images.shape[0]),
            "bg_argmax_fraction": argmax_bg / count,
            "mean_p_bg": p_bg / count,
            "mean_bg_logit": float(np.mean(np.asarray(set_outputs.logits)[:, background])),
        }
    facts["pixels"] = pixels
    return facts


def copy_figures(name: str, run_dir: Path, readme: str) -> list[str]:
    """Copy the run's figures that the README shows; the paths written, relative to the root."""
    copies: dict[Path, Path] = {run_dir / "masks_preview.png": ROOT / "docs" / f"{name}_masks_preview.png"}
    if name == "shapes":  # the "Reports" section shows the default bench's report figures
        for link in sorted(set(FIGURE_LINK.findall(readme))):
            copies[run_dir / "report" / Path(link).name] = ROOT / link
    missing = [str(source) for source in copies if not source.is_file()]
    if missing:
        raise SystemExit(f"make_docs: the run wrote no {', '.join(missing)}; the README links them")
    for source, target in copies.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return [str(target.relative_to(ROOT)) for target in copies.values()]


def save_record(record: dict[str, Any], facts: dict[str, Any], figures: list[str]) -> None:
    """``docs/results/<name>_default.csv`` (the run's rows) and ``.json`` (everything else)."""
    name, run_dir = record["name"], record["run_dir"]
    RESULTS.mkdir(parents=True, exist_ok=True)
    csv_path = RESULTS / f"{name}_default.csv"
    shutil.copyfile(run_dir / "results.csv", csv_path)
    record = {k: v for k, v in record.items() if k != "run_dir"}
    record["machine"] = {
        **record["machine"],
        **{k: facts.pop(k) for k in ("device", "device_name", "torch_threads") if k in facts},
    }
    record.update(
        results_csv=csv_path.name,
        results_sha256=hashlib.sha256(csv_path.read_bytes()).hexdigest(),
        figures=figures,
        facts=facts,
    )
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    (RESULTS / f"{name}_default.json").write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------ rendering
class Record:
    """One committed run: ``docs/results/<name>_default.json`` and the rows of its CSV."""

    def __init__(self, name: str, results: Path = RESULTS) -> None:
        from harness.leaderboard import aggregate, read_csv

        self.name = name
        self.json_path = results / f"{name}_default.json"
        self.csv_path = results / f"{name}_default.csv"
        self.info: dict[str, Any] = json.loads(self.json_path.read_text(encoding="utf-8"))
        self.rows = aggregate(read_csv(self.csv_path))

    @property
    def facts(self) -> dict[str, Any]:
        return self.info.get("facts", {})

    def detectors(self) -> list[str]:
        seen: list[str] = []
        for row in self.rows:
            if row["detector"] not in seen:
                seen.append(str(row["detector"]))
        return seen

    def metric(self, detector: str, dataset: str, metric: str) -> float:
        """A metric of the aggregated rows, as a fraction."""
        for row in self.rows:
            if row["detector"] == detector and row["dataset"] == dataset:
                return float(row[metric])
        raise KeyError(f"{self.csv_path.name} has no {detector} / {dataset} row")

    def accuracy(self, network: str) -> float:
        """ID accuracy of the classifier (``classifier``) or the DFB net (``dfb``), as a fraction."""
        for row in self.rows:
            if row.get("detector_network") == network:
                return float(row["id_accuracy"])
        raise KeyError(f"{self.csv_path.name} has no row read from the {network} network")

    def where(self) -> str:
        """The machine in a few words: the GPU's name, or the CPUs the run could use."""
        host = self.info["machine"]
        if str(host.get("device", "cpu")).startswith("cuda"):
            return f"{host.get('device_name')} GPU"
        return f"{host['usable_cpus']}-core CPU"

    def load(self) -> str:
        """The load average when the run started, when it says the machine was busy (else nothing)."""
        load = (self.info["machine"].get("load_average_at_start") or [0.0])[0]
        busy = load >= 0.5 * self.info["machine"]["usable_cpus"]
        return f", 1-minute load average {load:.1f} when it started" if busy else ""

    def provenance(self) -> str:
        git = self.info["git"]
        commit = (git.get("commit") or "unknown")[:7] + (
            " plus uncommitted changes" if git.get("dirty") else ""
        )
        return f"`make docs`, commit {commit}, {self.info['started_utc']}"


def values(records: dict[str, Record]) -> dict[str, str]:
    """Every single value the README may quote, by key, formatted as it is quoted.

    ``<run>.<detector>.<near|far>_<auroc|fpr95>`` percent, one decimal; ``<run>.acc.<classifier|dfb>``
    percent, one decimal; ``<run>.wall_s``, ``<run>.steps``; ``<run>.masks.<iou|recall|precision>``
    two decimals and ``<run>.masks.foreground`` percent; ``<run>.pixels.<set>.bg_argmax`` percent,
    ``.bg_logit`` one decimal, ``.p_bg`` two decimals.
    """
    out: dict[str, str] = {}
    for name, record in records.items():
        out[f"{name}.wall_s"] = f"{record.info['wall_s']:.0f}"
        out[f"{name}.where"] = record.where()
        if record.facts.get("steps") is not None:
            out[f"{name}.steps"] = f"{record.facts['steps']:,}"
        for detector in record.detectors():
            for group in ("near", "far"):
                for metric in ("auroc", "fpr95"):
                    try:
                        value = record.metric(detector, f"{group}_mean", metric)
                    except KeyError:
                        continue
                    out[f"{name}.{detector}.{group}_{metric}"] = f"{100 * value:.1f}"
        for network in ("classifier", "dfb"):
            try:
                out[f"{name}.acc.{network}"] = f"{100 * record.accuracy(network):.1f}"
            except KeyError:
                pass
        masks = record.facts.get("masks", {})
        for key, value in (masks.get("vs_true_objects") or {}).items():
            out[f"{name}.masks.{key}"] = f"{value:.2f}"
        if "mean_foreground" in masks:
            out[f"{name}.masks.foreground"] = f"{100 * masks['mean_foreground']:.0f}"
        for set_name, stats in record.facts.get("pixels", {}).items():
            out[f"{name}.pixels.{set_name}.bg_argmax"] = f"{100 * stats['bg_argmax_fraction']:.0f}"
            out[f"{name}.pixels.{set_name}.bg_logit"] = f"{stats['mean_bg_logit']:.1f}"
            out[f"{name}.pixels.{set_name}.p_bg"] = f"{stats['mean_p_bg']:.2f}"
    return out


def block_commands(records: dict[str, Record]) -> str:
    shapes = records["shapes"]
    return "\n".join(
        [
            "```sh",
            "make bench   # sets up .venv, then runs the whole DFB pipeline on the built-in benchmark "
            f"(~{shapes.info['wall_s']:.0f} s on a {shapes.where()})",
            "make test    # sets up .venv, then runs ruff and the test suite",
            "```",
        ]
    )


def _wrap(text: str) -> str:
    return textwrap.fill(text, width=100, break_long_words=False, break_on_hyphens=False)


def block_bench_output(records: dict[str, Record]) -> str:
    shapes = records["shapes"]
    intro = (
        f"Real output ({shapes.info['wall_s']:.0f} s including the report on a {shapes.where()}"
        f"{shapes.load()}; every number is a percentage), written by {shapes.provenance()}; all rows in "
        "[`docs/results/shapes_default.csv`](docs/results/shapes_default.csv), timing and machine in "
        "[`shapes_default.json`](docs/results/shapes_default.json):"
    )
    return "\n".join(
        [
            _wrap(intro),
            "",
            "```",
            *shapes.info["stdout"],
            "```",
        ]
    )


def block_fmnist_table(records: dict[str, Record]) -> str:
    """Near/far AUROC of each base detector beside its ``_dfb`` variant, and ``bg``."""
    fmnist = records["fmnist"]
    detectors = fmnist.detectors()
    bases = [d for d in detectors if "_dfb" not in d and d != "bg"]
    best = {
        group: max(fmnist.metric(d, f"{group}_mean", "auroc") for d in detectors if not d.endswith("_dfbz"))
        for group in ("near", "far")
    }

    def cells(detector: str | None) -> list[str]:
        if detector is None or detector not in detectors:
            return ["", "", ""]
        out = [detector]
        for group in ("near", "far"):
            value = fmnist.metric(detector, f"{group}_mean", "auroc")
            text = f"{100 * value:.2f}"
            out.append(f"**{text}**" if value == best[group] else text)
        return out

    intro = (
        f"`{fmnist.info['command']}` (the small real-image benchmark in OpenOOD layout that ships beside "
        f"this repository; 10k train images; {fmnist.info['wall_s']:.0f} s on a {fmnist.where()}"
        f"{fmnist.load()}). Written by {fmnist.provenance()}; all rows in "
        "[`docs/results/fmnist_default.csv`](docs/results/fmnist_default.csv):"
    )
    lines = [
        _wrap(intro),
        "",
        "| detector | near AUROC | far AUROC | | detector | near AUROC | far AUROC |",
        "|---|---|---|---|---|---|---|",
    ]
    rows = [[*cells(base), "", *cells(f"{base}_dfb")] for base in bases]
    if "bg" in detectors:
        rows.append(["", "", "", "", *cells("bg")])
    lines += ["|" + "|".join(f" {cell} " if cell else " " for cell in row) + "|" for row in rows]
    return "\n".join(lines)


#: README block name -> (the run it needs, the function that renders it).
BLOCKS: dict[str, tuple[str, Callable[[dict[str, Record]], str]]] = {
    "commands": ("shapes", block_commands),
    "bench-output": ("shapes", block_bench_output),
    "fmnist-table": ("fmnist", block_fmnist_table),
}


def needed_runs(readme: str) -> set[str]:
    """The runs whose committed results the README's markers read."""
    runs = {BLOCKS[m["name"]][0] for m in BLOCK.finditer(readme) if m["name"] in BLOCKS}
    runs |= {m["key"].split(".", 1)[0] for m in VALUE.finditer(readme)}
    return runs


def load_records(readme: str, results: Path = RESULTS) -> dict[str, Record]:
    return {name: Record(name, results) for name in sorted(needed_runs(readme))}


def render(readme: str, records: dict[str, Record]) -> str:
    """README text with every marked block and value re-rendered from ``records``."""
    unknown = sorted({m["name"] for m in BLOCK.finditer(readme)} - set(BLOCKS))
    if unknown:
        raise ValueError(f"README.md has make-docs blocks this script does not know: {unknown}")
    table = values(records)
    missing = sorted({m["key"] for m in VALUE.finditer(readme)} - set(table))
    if missing:
        raise ValueError(f"README.md quotes values the committed results do not have: {missing}")
    readme = BLOCK.sub(
        lambda m: m["start"] + BLOCKS[m["name"]][1](records) + "\n" + m["end"].lstrip("\n"), readme
    )
    return VALUE.sub(lambda m: m["start"] + table[m["key"]] + m["end"], readme)


# ------------------------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fmnist", action="store_true", help=f"Also run {FMNIST_BENCHMARK} (a few minutes).")
    parser.add_argument("--no-shapes", action="store_true", help="Skip the default bench (keep its results).")
    parser.add_argument(
        "--render-only", action="store_true", help="Run nothing: rewrite README.md from docs/results/."
    )
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="Where the fresh run folders go.")
    args = parser.parse_args(argv)
    chosen = (("shapes", not args.no_shapes), ("fmnist", args.fmnist))
    runs = [] if args.render_only else [name for name, wanted in chosen if wanted]
    for name in runs:
        record = run_bench(name, args.workdir.resolve())
        facts = run_facts(record["run_dir"])
        figures = copy_figures(name, record["run_dir"], README.read_text(encoding="utf-8"))
        save_record(record, facts, figures)
        print(
            f"make_docs: {name}: {record['wall_s']:.0f} s; "
            f"wrote docs/results/{name}_default.csv/.json, {', '.join(figures)}"
        )
    readme = README.read_text(encoding="utf-8")  # read now: the README may have changed during the runs
    rendered = render(readme, load_records(readme))
    if rendered != readme:
        README.write_text(rendered, encoding="utf-8")
        print("make_docs: README.md rewritten")
    else:
        print("make_docs: README.md unchanged")


if __name__ == "__main__":
    main()
