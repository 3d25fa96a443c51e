"""Regenerate every number, table and figure that README.md quotes, from fresh runs of the CLI.

    make docs                                           # the built-in benchmarks' runs, then the README test
    make docs DOCS_ARGS="--fmnist PATH"                 # also the fmnist-ood runs (PATH: its benchmark.yaml)
    make docs DOCS_ARGS=--only=mini_scratch             # just some runs (comma-separated names)
    .venv/bin/python docs/make_docs.py --render-only    # rewrite README.md from docs/results/ alone

It lives in ``docs/``, beside what it writes, because it is the build of the documentation; the
scripts under ``benchmarks/`` measure speed and print ratios, which this does not.

The runs (``RUNS``; each command exactly as a user types it). Every default run uses a benchmark
that ships inside the package, so a fresh clone with nothing beside it reproduces them:

- ``mini``: ``harness bench``, what ``make bench`` runs (recipe ``frozen`` on ``fmnist_mini``);
- ``mini_seeds``: the same with ``--seeds 0,1,2``; ``mini_4x4``: the same with ``--recipe frozen-4x4``
  (masks from the cached 4x4 maps, the default before issue 21); ``mini_scratch``: ``--recipe cpu-quick``;
- ``shapes`` / ``shapes_scratch``: ``harness bench --benchmark shapes`` (and ``--recipe cpu-quick``);
- ``mini_all`` (only with ``--only``): every registered detector, 3 seeds;
- with ``--fmnist PATH`` (the benchmark.yaml of a copy of fmnist-ood, the full benchmark
  ``fmnist_mini`` is drawn from), ``fmnist``, ``fmnist_4x4`` and ``fmnist_scratch`` (one seed
  each: about 25 minutes on 2 cores). The records show
  the command with ``fmnist-ood/benchmark.yaml`` in place of PATH, so no local path is written.

For each run:

1. delete and re-create ``runs/docs/<name>/`` (results are never reused) and run the CLI in a
   subprocess with only ``--out runs/docs/<name>/run`` added, ``COLUMNS=80`` (so rich draws the
   table at a fixed width) and a fresh decoded-image cache (``HARNESS_CACHE``, so the time is a
   first run's). stdout, the leaderboard a user sees, is captured; stderr (progress) passes
   through; the wall time is measured around the whole command (every seed, report included);
2. write ``docs/results/<name>_default.csv``: the run's ``results.csv`` copied, or, when the run
   had several seeds (``--out DIR`` then holds ``DIR/seed<k>/``, each with its own ``results.csv``
   and no combined one), every seed's rows concatenated in seed order (``harness.leaderboard``'s
   ``read_csv`` / ``write_csv``: the file ``harness bench --seeds ... --csv FILE`` writes; each row
   keeps its ``seed``, and ``harness.leaderboard.aggregate`` gives mean and std over them);
3. write ``docs/results/<name>_default.json``: the command, wall seconds, machine (CPUs, platform,
   torch version, device), git commit, the captured stdout and ``facts``, what the README's prose
   quotes beyond the table (see ``run_facts``): recipe, network, stage timings, the pseudo masks'
   statistics (``masks.json``), per-set background statistics of the DFB net. With several seeds
   ``facts`` holds their mean (a number that differs between seeds is averaged, a flag is true
   when it is for any seed, anything else is seed 0's) and ``facts["per_seed"]`` each seed's own;
4. copy the report figures the README shows into ``docs/figures/`` (the ``mini`` run's) and the
   mask preview into ``docs/<name>_masks_preview.png``, from the first seed's folder;
5. rewrite README.md from ``docs/results/`` alone: every block between
   ``<!-- make-docs:NAME:start -->`` and ``<!-- make-docs:NAME:end -->`` (see BLOCKS) and every
   single value written ``<!-- make-docs:KEY -->VALUE<!-- /make-docs -->`` (see ``values``). Only
   the runs the README quotes are read, so the README may quote some of the runs and not others.

``tests/test_readme.py`` checks that README.md is exactly what step 5 renders from the committed
files, that the tables' numbers equal the committed CSVs aggregated by ``harness.leaderboard``,
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
#: Stands for the fmnist-ood benchmark YAML in a run's command; ``--fmnist PATH`` says where it is.
FMNIST_BENCHMARK = "fmnist-ood/benchmark.yaml"
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
#: run name -> the command a user types for it (``--out`` is added when running it).
RUNS: dict[str, tuple[str, ...]] = {
    "mini": ("harness", "bench"),  # the default: recipe frozen (pretrained) on the built-in fmnist_mini
    "mini_seeds": ("harness", "bench", "--seeds", "0,1,2"),
    "mini_scratch": ("harness", "bench", "--recipe", "cpu-quick"),
    "mini_4x4": ("harness", "bench", "--seeds", "0,1,2", "--recipe", "frozen-4x4"),
    "shapes": ("harness", "bench", "--benchmark", "shapes"),
    "shapes_scratch": ("harness", "bench", "--benchmark", "shapes", "--recipe", "cpu-quick"),
    "mini_all": ("harness", "bench", "--seeds", "0,1,2", "--post", "all"),
    "fmnist": ("harness", "bench", "--benchmark", FMNIST_BENCHMARK),
    "fmnist_4x4": ("harness", "bench", "--benchmark", FMNIST_BENCHMARK, "--recipe", "frozen-4x4"),
    "fmnist_scratch": ("harness", "bench", "--benchmark", FMNIST_BENCHMARK, "--recipe", "cpu-quick"),
}
DEFAULT_RUNS = ("mini", "mini_seeds", "mini_4x4", "mini_scratch", "shapes", "shapes_scratch")  # `make docs`
FMNIST_RUNS = ("fmnist", "fmnist_4x4", "fmnist_scratch")  # added by --fmnist PATH
# Every registered detector on the built-in benchmark, 3 seeds: only with --only mini_all.


def bench_command(name: str) -> list[str]:
    """The command a user types for this run (``--out`` is added when running it)."""
    if name not in RUNS:
        raise ValueError(f"unknown run {name!r}; the runs are {', '.join(RUNS)}")
    return list(RUNS[name])


def command_seeds(name: str) -> list[int]:
    """The seeds the run's command asks for (``harness bench`` runs seed 0 unless told otherwise)."""
    command = bench_command(name)
    text = command[command.index("--seeds") + 1] if "--seeds" in command else "0"
    return [int(part) for part in text.split(",")]


def _own_output(path: str) -> bool:
    """Whether make_docs writes ``path`` (relative to the repository root)."""
    return (
        path == "README.md"
        or path.startswith(("docs/results/", "docs/figures/"))
        or (path.startswith("docs/") and path.endswith("_masks_preview.png"))
    )


def git_state() -> dict[str, Any]:
    """The commit the code came from and whether tracked files other than make_docs's own outputs
    (README.md, docs/results/, docs/figures/, the mask previews) differed from it: an earlier run of
    the same ``make docs`` rewrites those, which says nothing about the code that ran."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
        return done.stdout if done.returncode == 0 else ""

    # Porcelain lines are "XY path": the status columns may start with a space, so no strip().
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=no").splitlines()]
    return {
        "commit": git("rev-parse", "HEAD").strip() or None,
        "dirty": any(not _own_output(path) for path in changed),
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


def run_bench(name: str, workdir: Path, fmnist: Path | None = None) -> dict[str, Any]:
    """Run the CLI into a fresh folder; the record of what ran, what it printed and how long it took.

    ``fmnist``: where the fmnist-ood benchmark YAML is, for the runs whose command names it; the
    record keeps the command as written in ``RUNS``, so the local path appears nowhere.
    """
    folder = workdir / name
    if folder.exists():
        shutil.rmtree(folder)
    run_dir = folder / "run"
    folder.mkdir(parents=True)
    command = bench_command(name)
    executable = Path(sys.executable).parent / "harness"
    argv = [str(executable)] if executable.is_file() else [sys.executable, "-m", "dfb_ood"]
    if FMNIST_BENCHMARK in command:
        if fmnist is None:
            raise SystemExit(f"make_docs: the {name} run needs --fmnist PATH (fmnist-ood's benchmark.yaml)")
        command_run = [str(fmnist) if part == FMNIST_BENCHMARK else part for part in command]
    else:
        command_run = command
    argv += [*command_run[1:], "--out", str(run_dir)]
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
    if fmnist is not None:
        stdout = stdout.replace(str(fmnist), FMNIST_BENCHMARK)
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


def seed_dirs(run_dir: Path) -> list[Path]:
    """The run folder of each seed, in seed order.

    One seed writes its files into ``--out`` itself; several write ``<out>/seed<k>/`` each and no
    combined ``results.csv``.
    """
    if (run_dir / "results.csv").is_file():
        return [run_dir]
    found = [
        path for path in run_dir.glob("seed*") if path.name[4:].isdigit() and (path / "results.csv").is_file()
    ]
    if not found:
        raise SystemExit(f"make_docs: {run_dir} holds no results.csv, neither itself nor in seed<k>/")
    return sorted(found, key=lambda path: int(path.name[4:]))


#: What each stage's record in ``stages.json`` adds to the facts (besides its key and checksums).
STAGE_FACTS = ("seconds", "images_per_s", "final_loss", "resumed_from", "shape")


def _rounded(timings: dict[str, Any]) -> dict[str, float]:
    return {stage: round(float(seconds), 1) for stage, seconds in timings.items()}


def seed_facts(run_dir: Path) -> dict[str, Any]:
    """What one seed's ``run.json``, ``stages.json`` and ``masks.json`` say (no computation)."""
    from dfb_ood.harness.io import read_json

    record = read_json(run_dir / "run.json")
    recipe = record.get("recipe") or {}
    stages = read_json(run_dir / "stages.json") if (run_dir / "stages.json").is_file() else {}
    # run.json's timings cover what this run computed; a stage it found done has only stages.json's.
    timings = _rounded(record.get("timings_s") or {})
    measured: dict[str, dict[str, Any]] = {}
    for stage, info in stages.items():
        kept = {k: v for k, v in info.items() if k in STAGE_FACTS}
        if "/" not in stage and kept:
            measured[stage] = kept
            if "seconds" in kept:
                timings.setdefault(stage, round(float(kept["seconds"]), 1))
    facts: dict[str, Any] = {
        "seed": (record.get("settings") or {}).get("seed"),
        "run": os.path.relpath(run_dir, ROOT),
        "device": record.get("device"),
        "device_name": record.get("device_name"),
        "torch_threads": record.get("torch_threads"),
        "recipe": recipe.get("name") or (record.get("settings") or {}).get("recipe"),
        "network": record.get("network"),
        "steps": recipe.get("steps"),
        "normalization": record.get("normalization"),
        "eval_size": record.get("eval_size"),
        "versions": record.get("versions"),
        "timings_s": timings,
        "stages": measured,
    }
    if (run_dir / "masks.json").is_file():
        masks = read_json(run_dir / "masks.json")
        facts["masks"] = {k: v for k, v in masks.items() if k != "key"}
    return facts


def pixel_facts(run_dir: Path) -> dict[str, Any]:
    """Per set (ID test and each OOD set), how much of the images the DFB net calls background.

    Images are normalised as the run's pipeline does (``Pipeline.mean`` / ``.std``: a pretrained
    network's own normalisation, else the benchmark's). Empty when the run has no DFB net.
    """
    import numpy as np
    import torch

    from dfb_ood.harness.augment import evaluation_batches
    from dfb_ood.harness.evaluate import DFB
    from dfb_ood.harness.report import open_run

    view = open_run(run_dir)
    if DFB not in view.nets:
        return {}
    net = view.nets[DFB].eval()
    device = next(net.parameters()).device
    pipeline, outputs = view.pipeline, view.outputs[DFB]
    background = net.num_classes  # the DFB net's last output: the ID-background class K
    pixels: dict[str, dict[str, Any]] = {}
    for set_name, set_outputs in {"test": outputs.test, **outputs.ood}.items():
        images, _ = pipeline.arrays(set_name)
        argmax_bg = p_bg = count = 0.0
        batches = evaluation_batches(
            images,
            mean=pipeline.mean,
            std=pipeline.std,
            size=pipeline.eval_size,
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
    return pixels


def _mean_over_seeds(values: list[Any]) -> Any:
    """One value for several seeds' values: equal ones as they are, dicts key by key, numbers averaged,
    flags true when any is, anything else (a string, a list) seed 0's."""
    if all(value == values[0] for value in values):
        return values[0]
    if all(isinstance(value, dict) for value in values):
        keys = list(dict.fromkeys(key for value in values for key in value))
        return {key: _mean_over_seeds([value[key] for value in values if key in value]) for key in keys}
    if all(isinstance(value, bool) for value in values):
        return any(values)
    if all(isinstance(value, (int, float)) and not isinstance(value, bool) for value in values):
        return sum(values) / len(values)
    return values[0]


def combine_facts(per_seed: list[dict[str, Any]]) -> dict[str, Any]:
    """The facts of a run from those of its seeds: their mean (see ``_mean_over_seeds``), ``seeds``
    (the list) and ``per_seed`` (each seed's own, ``run`` naming its folder)."""
    facts = _mean_over_seeds(
        [{k: v for k, v in seed.items() if k not in ("seed", "run")} for seed in per_seed]
    )
    if "timings_s" in facts:
        facts["timings_s"] = _rounded(facts["timings_s"])
    facts["seeds"] = [seed["seed"] for seed in per_seed]
    facts["per_seed"] = [
        {k: seed[k] for k in ("seed", "run", "timings_s", "stages", "masks", "pixels") if k in seed}
        for seed in per_seed
    ]
    return facts


def run_facts(run_dir: Path) -> dict[str, Any]:
    """What the README's prose quotes beyond the table, read or computed from the finished run."""
    per_seed = []
    for folder in seed_dirs(run_dir):
        facts = seed_facts(folder)
        pixels = pixel_facts(folder)
        if pixels:
            facts["pixels"] = pixels
        per_seed.append(facts)
    return combine_facts(per_seed)


def copy_figures(name: str, run_dir: Path, readme: str) -> list[str]:
    """Copy the run's figures that the README shows (the first seed's); the paths written."""
    first = seed_dirs(run_dir)[0]
    copies: dict[Path, Path] = {}
    preview = f"docs/{name}_masks_preview.png"
    if f"]({preview})" in readme:  # the runs whose mask preview the README shows
        copies[first / "masks_preview.png"] = ROOT / preview
    if name == "mini":  # the "Reports" section shows the default bench's report figures
        studies = set()  # figures a benchmark script wrote beside its record, not the run's
        for record_name in STUDIES.values():
            if (RESULTS / record_name).is_file():
                studies.add(json.loads((RESULTS / record_name).read_text(encoding="utf-8")).get("figure"))
        for link in sorted(set(FIGURE_LINK.findall(readme)) - studies):
            copies[first / "report" / Path(link).name] = ROOT / link
    missing = [str(source) for source in copies if not source.is_file()]
    if missing:
        raise SystemExit(f"make_docs: the run wrote no {', '.join(missing)}; the README links them")
    for source, target in copies.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    return [str(target.relative_to(ROOT)) for target in copies.values()]


def write_results_csv(run_dir: Path, target: Path) -> list[int]:
    """``target``: the run's ``results.csv``, or every seed's rows in seed order; the seeds it holds."""
    from dfb_ood.harness.leaderboard import read_csv, write_csv

    folders = seed_dirs(run_dir)
    rows: list[dict[str, object]] = []
    seeds: list[int] = []
    for folder in folders:
        part = read_csv(folder / "results.csv")
        found = sorted({int(str(row["seed"])) for row in part})
        if len(found) != 1 or found[0] in seeds:
            raise SystemExit(f"make_docs: {folder}/results.csv holds seeds {found}; expected one new seed")
        seeds += found
        rows += part
    target.parent.mkdir(parents=True, exist_ok=True)
    if len(folders) == 1:
        shutil.copyfile(folders[0] / "results.csv", target)  # byte for byte
    else:
        write_csv(target, rows)  # what `harness bench --seeds ... --csv FILE` writes
    return seeds


def save_record(
    record: dict[str, Any], facts: dict[str, Any], figures: list[str], results: Path = RESULTS
) -> None:
    """``<results>/<name>_default.csv`` (the run's rows, every seed's) and ``.json`` (everything else)."""
    name, run_dir = record["name"], record["run_dir"]
    csv_path = results / f"{name}_default.csv"
    seeds = write_results_csv(run_dir, csv_path)
    if facts.get("seeds", seeds) != seeds:
        raise SystemExit(f"make_docs: {name}: the facts are of seeds {facts['seeds']}, the CSV of {seeds}")
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
    (results / f"{name}_default.json").write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------ rendering
#: The base detectors whose ``_dfb`` / ``_dfbz`` variants the README counts wins of.
BASES = ("msp", "odin", "energy", "vim")
GROUPS = ("near", "far")
#: The Fashion-MNIST table's column groups: run -> setting.
FMNIST_SETTINGS = {"fmnist": "pretrained", "fmnist_4x4": "4x4 masks", "fmnist_scratch": "from scratch"}
MINI_SETTINGS = {"mini_seeds": "pretrained", "mini_4x4": "4x4 masks", "mini_scratch": "from scratch"}


class Record:
    """One committed run: ``docs/results/<name>_default.json`` and the rows of its CSV."""

    def __init__(self, name: str, results: Path = RESULTS) -> None:
        from dfb_ood.harness.leaderboard import aggregate, read_csv

        self.name = name
        self.json_path = results / f"{name}_default.json"
        self.csv_path = results / f"{name}_default.csv"
        for path in (self.json_path, self.csv_path):
            if not path.is_file():
                raise FileNotFoundError(
                    f"README.md quotes the {name} run, but there is no {path}: run "
                    f"`docs/make_docs.py --only {name}` (or drop the README's {name} markers)"
                )
        self.info: dict[str, Any] = json.loads(self.json_path.read_text(encoding="utf-8"))
        raw = read_csv(self.csv_path)
        self.seeds: list[int] = sorted({int(str(row["seed"])) for row in raw})
        self.rows = aggregate(raw)

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
        """A metric of the aggregated rows (mean over seeds; ``<metric>_std`` their std), as a fraction."""
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

    def wins(self, suffix: str) -> tuple[int, int]:
        """In how many (base detector x near/far) comparisons ``<base><suffix>`` has a strictly higher
        mean AUROC than its base, and how many comparisons there are (both rows present)."""
        won = compared = 0
        for base in BASES:
            for group in GROUPS:
                try:
                    variant = self.metric(f"{base}{suffix}", f"{group}_mean", "auroc")
                    plain = self.metric(base, f"{group}_mean", "auroc")
                except KeyError:
                    continue
                compared += 1
                won += variant > plain
        return won, compared

    def where(self) -> str:
        """The machine in a few words: the GPU's name, or the CPUs the run could use."""
        host = self.info["machine"]
        if str(host.get("device", "cpu")).startswith("cuda"):
            return f"{host.get('device_name')} GPU"
        return f"{host['usable_cpus']}-core CPU"

    def load(self, always: bool = False) -> str:
        """The load average when the run started: when it says the machine was busy, or ``always``."""
        load = (self.info["machine"].get("load_average_at_start") or [0.0])[0]
        busy = load >= 0.5 * self.info["machine"]["usable_cpus"]
        return f", 1-minute load average {load:.1f} when it started" if busy or always else ""

    def provenance(self) -> str:
        git = self.info["git"]
        commit = (git.get("commit") or "unknown")[:7] + (
            " plus uncommitted changes" if git.get("dirty") else ""
        )
        return f"`make docs`, commit {commit}, {self.info['started_utc']}"

    def link(self, what: str = "csv", full: bool = True) -> str:
        """A Markdown link to the committed CSV (or JSON), named by its path or its file name."""
        path = self.csv_path if what == "csv" else self.json_path
        target = f"docs/results/{path.name}"
        return f"[`{target if full else path.name}`]({target})"


def values(records: dict[str, Record]) -> dict[str, str]:
    """Every single value the README may quote, by key, formatted as it is quoted.

    ``<run>.<detector>.<near|far>_<auroc|fpr95>`` percent, one decimal (the mean over seeds), and
    ``<run>.<detector>.<near|far>_auroc_std`` (their std; 0.0 for one seed); ``<run>.acc.<classifier|dfb>``
    percent, one decimal; ``<run>.wall_s``, ``<run>.where``, ``<run>.steps``, ``<run>.seeds`` (how
    many), ``<run>.recipe``, ``<run>.network``; ``<run>.wins.<dfb|dfbz>``: in how many of the
    (msp, odin, energy, vim) x (near, far) comparisons the variant's mean AUROC is higher than its
    base's; ``<run>.timings.<stage>`` seconds (mean over seeds), no decimals; ``<run>.masks.<iou|recall|
    precision>`` two decimals, ``<run>.masks.foreground`` and ``.background`` percent of pixels, no
    decimals; ``<run>.pixels.<set>.bg_argmax`` percent, ``.bg_logit`` one decimal, ``.p_bg`` two
    decimals. Facts are the mean over seeds (see ``combine_facts``).
    """
    out: dict[str, str] = {}
    for name, record in records.items():
        facts = record.facts
        out[f"{name}.wall_s"] = f"{record.info['wall_s']:.0f}"
        out[f"{name}.where"] = record.where()
        out[f"{name}.seeds"] = str(len(record.seeds))
        if facts.get("steps") is not None:
            out[f"{name}.steps"] = f"{facts['steps']:,}"
        for key in ("recipe", "network"):
            if facts.get(key):
                out[f"{name}.{key}"] = str(facts[key])
        for detector in record.detectors():
            for group in GROUPS:
                for metric in ("auroc", "fpr95", "auroc_std"):
                    try:
                        value = record.metric(detector, f"{group}_mean", metric)
                    except KeyError:
                        continue
                    out[f"{name}.{detector}.{group}_{metric}"] = f"{100 * value:.1f}"
        for suffix in ("_dfb", "_dfbz"):
            won, compared = record.wins(suffix)
            if compared:
                out[f"{name}.wins.{suffix[1:]}"] = str(won)
        for network in ("classifier", "dfb"):
            try:
                out[f"{name}.acc.{network}"] = f"{100 * record.accuracy(network):.1f}"
            except KeyError:
                pass
        for stage, seconds in (facts.get("timings_s") or {}).items():
            out[f"{name}.timings.{stage}"] = f"{seconds:.0f}"
        masks = facts.get("masks", {})
        for key, value in (masks.get("vs_true_objects") or {}).items():
            out[f"{name}.masks.{key}"] = f"{value:.2f}"
        if "mean_foreground" in masks:
            out[f"{name}.masks.foreground"] = f"{100 * masks['mean_foreground']:.0f}"
            background = masks.get("mean_background", 1.0 - masks["mean_foreground"])
            out[f"{name}.masks.background"] = f"{100 * background:.0f}"
        for set_name, stats in facts.get("pixels", {}).items():
            out[f"{name}.pixels.{set_name}.bg_argmax"] = f"{100 * stats['bg_argmax_fraction']:.0f}"
            out[f"{name}.pixels.{set_name}.bg_logit"] = f"{stats['mean_bg_logit']:.1f}"
            out[f"{name}.pixels.{set_name}.p_bg"] = f"{stats['mean_p_bg']:.2f}"
    return out


def block_commands(records: dict[str, Record]) -> str:
    shapes = records["mini"]
    return "\n".join(
        [
            "```sh",
            "make bench   # sets up .venv, then runs the whole DFB pipeline on the built-in benchmark "
            f"(~{shapes.info['wall_s']:.0f} s on a {shapes.where()})",
            "make test    # sets up .venv, then runs ruff and the test suite",
            "```",
        ]
    )


def _wrap(text: str, indent: str = "") -> str:
    return textwrap.fill(
        text,
        width=100,
        break_long_words=False,
        break_on_hyphens=False,
        initial_indent=indent,
        subsequent_indent=" " * len(indent),
    )


def _output(record: Record, what: str) -> str:
    """A run's captured stdout in a code fence, after a sentence on what ran where and when."""
    intro = (
        f"Real output{what} ({record.info['wall_s']:.0f} s including the report on a {record.where()}"
        f"{record.load(always=True)}; every number is a percentage), written by {record.provenance()}; "
        "all rows in "
        f"{record.link()}, timing and machine in {record.link('json', full=False)}:"
    )
    return "\n".join([_wrap(intro), "", "```", *record.info["stdout"], "```"])


def block_bench_output(records: dict[str, Record]) -> str:
    return _output(records["mini"], "")


def block_shapes_output(records: dict[str, Record]) -> str:
    shapes = records["shapes"]
    return _output(shapes, f" of `{shapes.info['command']}`")


def block_scratch_output(records: dict[str, Record]) -> str:
    scratch = records["shapes_scratch"]
    return _output(scratch, f" of `{scratch.info['command']}`")


def _auroc_cell(record: Record, detector: str, group: str) -> str:
    """Mean AUROC in percent, ``± std`` with several seeds, bold when a variant beats its base."""
    try:
        mean = record.metric(detector, f"{group}_mean", "auroc")
        std = record.metric(detector, f"{group}_mean", "auroc_std")
    except KeyError:
        return "–"
    text = f"{100 * mean:.2f}" + (f" ± {100 * std:.2f}" if len(record.seeds) > 1 else "")
    base = next((detector[: -len(suffix)] for suffix in ("_dfbz", "_dfb") if detector.endswith(suffix)), None)
    if base is not None:
        try:
            beats = mean > record.metric(base, f"{group}_mean", "auroc")
        except KeyError:
            beats = False
        if beats:
            return f"**{text}**"
    return text


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


def settings_table(records: dict[str, Record], settings: dict[str, str], intro: str) -> str:
    """Near/far AUROC of each base detector, its ``_dfb`` and ``_dfbz`` variants and ``bg``, one column
    pair per setting (run -> its name), then per run: its command, seeds, time and win counts."""
    runs = {name: records[name] for name in settings}
    header = ["detector"] + [f"{setting}: {group} AUROC" for setting in settings.values() for group in GROUPS]
    order = [name for base in BASES for name in (base, f"{base}_dfb", f"{base}_dfbz")] + ["bg"]
    lines = [_wrap(intro), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for detector in order:
        if not any(detector in record.detectors() for record in runs.values()):
            continue
        cells = [_auroc_cell(record, detector, group) for record in runs.values() for group in GROUPS]
        lines.append("| " + " | ".join([detector, *cells]) + " |")
    lines.append("")
    for name, record in runs.items():
        what = [f"{key} `{record.facts[key]}`" for key in ("recipe", "network") if record.facts.get(key)]
        label = f"**{settings[name]}**" + (f" ({', '.join(what)})" if what else "")
        seeds = ", ".join(map(str, record.seeds))
        dfbz, dfb = record.wins("_dfbz"), record.wins("_dfb")
        line = (
            f"{label}: `{record.info['command']}`, "
            f"{_plural(len(record.seeds), 'seed')} ({seeds}), {record.info['wall_s']:.0f} s on a "
            f"{record.where()}{record.load()}; written by {record.provenance()}; all rows in "
            f"{record.link()}. `_dfbz` beats its base in {dfbz[0]} of {dfbz[1]} (detector x near/far) "
            f"comparisons, `_dfb` in {dfb[0]} of {dfb[1]}."
        )
        lines.append(_wrap(line, indent="- "))
    return "\n".join(lines)


_TABLE_NOTE = (
    "near- and far-OOD AUROC, percent, as mean ± std over the seeds where a setting ran several; a "
    "**bold** `_dfb` or `_dfbz` cell has a higher mean than its base detector's in that column."
)


_SETTINGS_NOTE = (
    "three settings: **pretrained** (the default recipe `frozen`: masks from CAMs at 128 px, which "
    "localise the objects), the same with the masks from the cached 4x4 maps (`--recipe frozen-4x4`, "
    "the default before; they do not localise), and **from scratch** (`--recipe cpu-quick`)"
)


def block_mini_table(records: dict[str, Record]) -> str:
    intro = f"The built-in `fmnist_mini` (what `harness bench` runs) in {_SETTINGS_NOTE}: {_TABLE_NOTE}"
    return settings_table(records, MINI_SETTINGS, intro)


def block_fmnist_table(records: dict[str, Record]) -> str:
    intro = (
        f"`--benchmark {FMNIST_BENCHMARK}`: fmnist-ood, the benchmark `fmnist_mini` is drawn from, at "
        "full size (10k train images; every licence, GPL-family sources included; it does not ship with "
        "this repository, so these runs are made only when `make docs` is given its path) in "
        f"{_SETTINGS_NOTE}: {_TABLE_NOTE}"
    )
    return settings_table(records, FMNIST_SETTINGS, intro)


def base_detectors(record: Record) -> list[str]:
    """The run's base detectors (neither a DFB variant nor ``bg``), in the run's order."""
    return [d for d in record.detectors() if "_dfb" not in d and d != "bg"]


def improvements(record: Record, suffix: str) -> dict[str, int]:
    """For how many bases ``<base><suffix>`` has the higher mean AUROC: per group, and in all."""
    counts = {group: 0 for group in GROUPS}
    for base in base_detectors(record):
        for group in GROUPS:
            try:
                counts[group] += record.metric(base + suffix, f"{group}_mean", "auroc") > record.metric(
                    base, f"{group}_mean", "auroc"
                )
            except KeyError:
                continue
    return counts


def block_mini_all(records: dict[str, Record]) -> str:
    """Every base detector beside its ``_dfbz`` and ``_dfb`` variants (near/far AUROC) on the built-in
    benchmark's pretrained setting, then how many bases each kind of variant improves."""
    record = records["mini_all"]
    bases = base_detectors(record)
    intro = (
        f"`{record.info['command']}`: every registered detector on the pretrained setting, "
        f"{_plural(len(record.seeds), 'seed')} ({', '.join(map(str, record.seeds))}), "
        f"{record.info['wall_s']:.0f} s on a {record.where()}{record.load()}; written by "
        f"{record.provenance()}; all rows in {record.link()}. Near- and far-OOD AUROC, percent, mean ± "
        "std over the seeds; a **bold** variant beats its base in that column."
    )
    header = ["base", "near", "far", "`_dfbz` near", "`_dfbz` far", "`_dfb` near", "`_dfb` far"]
    lines = [_wrap(intro), "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for base in bases:
        cells = [
            _auroc_cell(record, name, group)
            for name in (base, f"{base}_dfbz", f"{base}_dfb")
            for group in GROUPS
        ]
        lines.append("| " + " | ".join([base, *cells]) + " |")
    if "bg" in record.detectors():
        lines.append(
            "| bg (alone) | " + " | ".join(_auroc_cell(record, "bg", g) for g in GROUPS) + " | | | | |"
        )
    lines.append("")
    for suffix in ("_dfbz", "_dfb"):
        counts = improvements(record, suffix)
        lines.append(
            _wrap(
                f"`{suffix}` improves {counts['near']} of {len(bases)} bases on near-OOD and {counts['far']} "
                f"of {len(bases)} on far-OOD.",
                indent="- ",
            )
        )
    return "\n".join(lines)


#: README block name -> (the runs it reads, the function that renders it).
BLOCKS: dict[str, tuple[tuple[str, ...], Callable[[dict[str, Record]], str]]] = {
    "commands": (("mini",), block_commands),
    "bench-output": (("mini",), block_bench_output),
    "shapes-output": (("shapes",), block_shapes_output),
    "scratch-output": (("shapes_scratch",), block_scratch_output),
    "mini-table": (tuple(MINI_SETTINGS), block_mini_table),
    "fmnist-table": (tuple(FMNIST_SETTINGS), block_fmnist_table),
    "mini-all": (("mini_all",), block_mini_all),
}


#: Values the README quotes from the benchmark scripts' records (``study.<name>.*``), not from a run.
STUDIES = {
    "cam": "cam_normalisation.json",
    "speed": "bench_frozen.json",
    "openood": "openood_interop.json",
    "checks": "bench_checks.json",
    "classes": "class_study_fmnist.json",
    "lift": "mask_lift.json",
    "probe": "bg_probe.json",
}


def study_values(results: Path = RESULTS) -> dict[str, str]:
    """``study.cam.<benchmark>.<source>.<normalise>.<theta>.<field>`` and ``study.speed.<field>``.

    From ``benchmarks/cam_normalisation.py``'s record (source ``cached``, ``image1``, ``image4``;
    fields ``background`` and ``all_foreground`` percent, ``iou`` and ``lift`` two decimals;
    ``study.cam.default`` the chosen setting) and ``benchmarks/bench_frozen.py``'s (images/s of
    each part, no decimals; ``speedup`` one decimal; ``benchmark`` and ``images``).
    """
    out: dict[str, str] = {}
    sources = {"cached": "cached", "image, scale 1": "image1", "image, 4 scales": "image4"}
    cam_path = results / STUDIES["cam"]
    if cam_path.is_file():
        record = json.loads(cam_path.read_text(encoding="utf-8"))
        for bench, entry in record.get("benchmarks", {}).items():
            out[f"study.cam.{bench}.objects"] = f"{100 * (entry.get('object_pixel_share') or 0):.0f}"
            for row in entry["rows"]:
                key = f"study.cam.{bench}.{sources[row['source']]}.{row['normalise']}.{row['theta']}"
                out[f"{key}.background"] = f"{100 * row['mean_background']:.0f}"
                out[f"{key}.all_foreground"] = f"{100 * row['all_foreground_share']:.0f}"
                for field in ("iou", "lift"):
                    if row.get(field) is not None:
                        out[f"{key}.{field}"] = f"{row[field]:.2f}"
        default = record.get("default") or {}
        if default:
            out["study.cam.default"] = f"{default['normalise']}, theta {default['theta']}"
    speed_path = results / STUDIES["speed"]
    if speed_path.is_file():
        record = json.loads(speed_path.read_text(encoding="utf-8"))
        for part, rate in record["images_per_s"].items():
            out[f"study.speed.{part}"] = f"{rate:,.0f}"
        out["study.speed.speedup"] = f"{record['speedup']:.0f}"
        out["study.speed.benchmark"] = str(record["settings"]["benchmark"])
        out["study.speed.images"] = f"{record['settings']['train_images']:,}"
        out["study.speed.cached_total"] = f"{record['schedule_s']['cached_total']:.0f}"
        out["study.speed.full_total_h"] = f"{record['schedule_s']['full_total'] / 3600:.1f}"
    out.update(_openood_values(results / STUDIES["openood"]))
    out.update(_checks_values(results / STUDIES["checks"]))
    out.update(_classes_values(results / STUDIES["classes"]))
    out.update(_lift_values(results / STUDIES["lift"]))
    out.update(_probe_values(results / STUDIES["probe"]))
    return out


def _probe_values(path: Path) -> dict[str, str]:
    """``study.probe.<recipe>.<set>.<dark|bg_logit|spearman>`` from ``benchmarks/bg_probe.py``'s record
    (the dark share in percent, no decimals; the logit one decimal; Spearman's rho two)."""
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for recipe, entry in json.loads(path.read_text(encoding="utf-8"))["entries"].items():
        for name, row in entry["sets"].items():
            key = f"study.probe.{recipe.replace('-', '_')}.{name}"
            out[f"{key}.dark"] = f"{100 * row['dark_share']:.0f}"
            out[f"{key}.bg_logit"] = f"{row['bg_logit']:.1f}"
            if row["spearman"] is not None:
                out[f"{key}.spearman"] = f"{row['spearman']:.2f}"
    return out


def option_slug(option: str) -> str:
    """A mask_lift option's name as a key: ``"image 128 px + mirror"`` -> ``image_128px_mirror``."""
    return re.sub(r"[^a-z0-9]+", "_", option.lower().replace(" px", "px")).strip("_")


def _lift_values(path: Path) -> dict[str, str]:
    """``study.lift.<benchmark>.<option>.<lift|iou|cost|foreground>`` and ``.objects`` from
    ``benchmarks/mask_lift.py``'s record (lift, IoU two decimals; cost one; percentages none)."""
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    for entry in json.loads(path.read_text(encoding="utf-8"))["entries"]:
        key = f"study.lift.{entry['benchmark']}"
        out[f"{key}.objects"] = f"{100 * entry['object_share']:.0f}"
        for row in entry["rows"]:
            slug = f"{key}.{option_slug(row['option'])}"
            out[f"{slug}.lift"] = f"{row['lift']:.2f}"
            out[f"{slug}.iou"] = f"{row['iou']:.2f}"
            out[f"{slug}.cost"] = f"{row['cost']:.1f}"
            out[f"{slug}.foreground"] = f"{100 * row['foreground']:.0f}"
    return out


def block_mask_lift(records: dict[str, Record], results: Path = RESULTS) -> str:
    """The mask study as a table: each CAM option's lift on every benchmark measured, and its cost."""
    record = json.loads((results / STUDIES["lift"]).read_text(encoding="utf-8"))
    entries = record["entries"]
    first = entries[0]
    header = ["CAMs from", *[f"lift, {e['benchmark']}" for e in entries], f"cost ({first['benchmark']})"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for index, row in enumerate(first["rows"]):
        lifts = [f"{e['rows'][index]['lift']:.2f}" for e in entries]
        chosen = row["option"] == record.get("chosen")
        name = f"**{row['option']}** (the default)" if chosen else row["option"]
        lines.append("| " + " | ".join([name, *lifts, f"{row['cost']:.1f}x"]) + " |")
    host = record["machine"]
    note = (
        f"Lift: precision of the foreground mask on object pixels over the objects' share of the pixels "
        f"(1 = a mask placed at random), on ID-val at theta {first['theta']}, normalise "
        f"{first['normalise']}. Cost: the CAM computation's time over one plain {first['eval_size']} px "
        f"pass of the same images, best of {record.get('repeats', 1)}, measured in one run on "
        f"{host.get('cpus', '?')} CPU cores ({record['written'][:10]}; "
        f"[`benchmarks/mask_lift.py`](benchmarks/mask_lift.py), [record](docs/results/mask_lift.json))."
    )
    return "\n".join([*lines, "", _wrap(note)])


BLOCKS["mask-lift"] = ((), block_mask_lift)


def _openood_values(path: Path) -> dict[str, str]:
    """``study.openood.*`` from ``benchmarks/openood_interop.py``'s record: commit, detectors,
    the largest metric difference (percentage points) and the best.ckpt check."""
    if not path.is_file():
        return {}
    record = json.loads(path.read_text(encoding="utf-8"))
    checkpoint = record["best_ckpt"]
    return {
        "study.openood.commit": str(record["openood_commit"])[:7],
        "study.openood.detectors": ", ".join(f"`{name}`" for name in record["detectors"]),
        "study.openood.max_diff": f"{record['max_abs_metric_diff_percent']:.1e}",
        "study.openood.ckpt": (
            f"identical logits (max difference {checkpoint['max_abs_logit_diff']:g})"
            if checkpoint["passed"]
            else "FAILED"
        ),
    }


def _checks_values(path: Path) -> dict[str, str]:
    """``study.checks.*`` from ``benchmarks/bench_checks.py``'s record: the no-op rerun with and
    without the staleness / integrity checks (seconds, one decimal) and their ratio (two)."""
    if not path.is_file():
        return {}
    record = json.loads(path.read_text(encoding="utf-8"))
    return {
        "study.checks.benchmark": str(record["benchmark"]),
        "study.checks.with": f"{record['median_s']['checks']:.1f}",
        "study.checks.without": f"{record['median_s']['no checks']:.1f}",
        "study.checks.ratio": f"{record['ratio']:.2f}",
        "study.checks.repeats": str(record["repeats"]),
    }


def _classes_values(path: Path) -> dict[str, str]:
    """``study.classes.*`` from ``benchmarks/class_study.py``'s record (the Fig. 7 protocol on fmnist).

    ``counts`` (the class counts C), ``seed`` (the class draw's), ``minutes`` (the whole study),
    ``accuracy.<C>`` (the classifier's ID accuracy), and for every fusion ``<base>_dfb`` /
    ``<base>_dfbz``: ``wins.<group>.<variant>``, in how many of the class counts it beats its base's
    mean AUROC (``"3 of 4"``), and ``wins.<group>.<suffix>`` the same summed over all bases.
    """
    if not path.is_file():
        return {}
    record = json.loads(path.read_text(encoding="utf-8"))
    runs = record["runs"]
    out = {
        "study.classes.counts": ", ".join(str(run["count"]) for run in runs),
        "study.classes.seed": str(record["class_seed"]),
        "study.classes.minutes": f"{record['wall_s'] / 60:.0f}",
    }
    for run in runs:
        out[f"study.classes.accuracy.{run['count']}"] = f"{run['id_accuracy']['classifier']:.1f}"
    for group in GROUPS:
        for suffix in ("_dfb", "_dfbz"):
            won = played = 0
            for variant in runs[0]["auroc"]:
                base = variant.removesuffix(suffix)
                if base == variant or base not in runs[0]["auroc"]:
                    continue
                wins = sum(run["auroc"][variant][group] > run["auroc"][base][group] for run in runs)
                out[f"study.classes.wins.{group}.{variant}"] = f"{wins} of {len(runs)}"
                won, played = won + wins, played + len(runs)
            out[f"study.classes.wins.{group}.{suffix}"] = f"{won} of {played}"
    return out


def needed_runs(readme: str) -> set[str]:
    """The runs whose committed results the README's markers read (``study.*`` values are not runs)."""
    runs = {run for m in BLOCK.finditer(readme) if m["name"] in BLOCKS for run in BLOCKS[m["name"]][0]}
    runs |= {m["key"].split(".", 1)[0] for m in VALUE.finditer(readme)}
    return runs - {"study"}


def load_records(readme: str, results: Path = RESULTS) -> dict[str, Record]:
    """The committed results of every run the README quotes (and of no other)."""
    return {name: Record(name, results) for name in sorted(needed_runs(readme))}


def render(readme: str, records: dict[str, Record], results: Path = RESULTS) -> str:
    """README text with every marked block and value re-rendered from ``records`` and the studies."""
    unknown = sorted({m["name"] for m in BLOCK.finditer(readme)} - set(BLOCKS))
    if unknown:
        raise ValueError(f"README.md has make-docs blocks this script does not know: {unknown}")
    absent = sorted(needed_runs(readme) - set(records))
    if absent:
        raise ValueError(f"README.md quotes runs without records: {absent}")
    table = {**values(records), **study_values(results)}
    missing = sorted({m["key"] for m in VALUE.finditer(readme)} - set(table))
    if missing:
        raise ValueError(f"README.md quotes values the committed results do not have: {missing}")
    readme = BLOCK.sub(
        lambda m: m["start"] + BLOCKS[m["name"]][1](records) + "\n" + m["end"].lstrip("\n"), readme
    )
    return VALUE.sub(lambda m: m["start"] + table[m["key"]] + m["end"], readme)


# ------------------------------------------------------------------------------------ main
def chosen_runs(args: argparse.Namespace) -> list[str]:
    """The runs the command line asks for, in ``RUNS`` order."""
    if args.render_only:
        return []
    if args.only:
        names = [name.strip() for name in args.only.split(",") if name.strip()]
        unknown = [name for name in names if name not in RUNS]
        if unknown or not names:
            raise SystemExit(f"make_docs: --only takes names among {', '.join(RUNS)}; got {args.only!r}")
        return [name for name in RUNS if name in names]
    wanted = ([] if args.no_defaults else list(DEFAULT_RUNS)) + (list(FMNIST_RUNS) if args.fmnist else [])
    return [name for name in RUNS if name in wanted]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--fmnist",
        type=Path,
        metavar="PATH",
        help=f"fmnist-ood's benchmark.yaml: also run {', '.join(FMNIST_RUNS)} (many minutes).",
    )
    parser.add_argument(
        "--no-defaults", action="store_true", help=f"Skip {', '.join(DEFAULT_RUNS)} (keep their results)."
    )
    parser.add_argument(
        "--only",
        metavar="NAME[,NAME]",
        help=f"Run just these (of {', '.join(RUNS)}); instead of --no-defaults (fmnist runs need --fmnist).",
    )
    parser.add_argument(
        "--render-only", action="store_true", help="Run nothing: rewrite README.md from docs/results/."
    )
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="Where the fresh run folders go.")
    args = parser.parse_args(argv)
    if args.only is not None and (args.no_defaults or args.render_only):
        parser.error("--only names the runs itself: drop --no-defaults and --render-only")
    if args.fmnist is not None and not args.fmnist.is_file():
        parser.error(f"--fmnist {args.fmnist}: no such file (give fmnist-ood's benchmark.yaml)")
    fmnist = args.fmnist.resolve() if args.fmnist is not None else None
    for name in chosen_runs(args):
        record = run_bench(name, args.workdir.resolve(), fmnist)
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
