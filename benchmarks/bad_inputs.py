"""Bad inputs and faults, tried through the CLI the way a new user would; writes docs/reliability.md.

Each case runs ``harness ...`` as a subprocess (from an empty working folder, with ``$HARNESS_DATA``
pointing at an empty data root and no GPU needed) and records the exit code, whether a traceback
appeared, and the first line of the error. The expectation for a bad input: exit code != 0, no
traceback, an error that names the option or file (and the fix), and nothing created or
overwritten: no run folder left behind by a validation failure, no user file touched. Some inputs
are legitimately fine (a list with a UTF-8 BOM, the same bench twice) and must exit 0; faults in a
finished run (a truncated artifact) must be either repaired (exit 0, the same results) or reported
clearly.

    python benchmarks/bad_inputs.py [--only REGEX] [--list] [--keep] [--no-write]

Writes ``docs/results/bad_inputs.json`` and ``docs/reliability.md`` (with the summary of
``docs/results/fault_battery.json`` from ``benchmarks/fault_battery.py`` when present); with
``--only`` nothing is written unless ``--write`` is given. Exit code 1 if any expectation fails.
About nine minutes on one core.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import fcntl
import hashlib
import importlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tiny_config import TINY_BENCHMARK, code_version, tiny_recipe  # benchmarks/ is the script's folder

TINY_RECIPE = tiny_recipe()

ROOT = Path(__file__).resolve().parents[1]
DOCS_MD = ROOT / "docs" / "reliability.md"
RESULTS_JSON = ROOT / "docs" / "results" / "bad_inputs.json"
FAULT_JSON = ROOT / "docs" / "results" / "fault_battery.json"
DETECTORS = "msp,odin,energy_dfbz,vim_dfb,odin_dfb,bg"
STAGES = ("classifier", "masks", "dense", "outputs", "evaluate")


LIST_BENCHMARK = """\
name: tiny_list
num_classes: 3
class_names: [red, green, blue]
image_size: 16
channels: 3
normalization: {mean: [0.5], std: [0.5]}
id:
  train: lists/train.txt
  val: lists/val.txt
  test: lists/test.txt
ood:
  val: lists/ood_val.txt
  near:
    near1: lists/near.txt
  far:
    far1: lists/far.txt
"""
LIST_SIZES = {"train": 48, "val": 12, "test": 12, "ood_val": 8, "near": 8, "far": 8}


# ---------------------------------------------------------------------------------------------- files
def png_bytes(rgb: tuple[int, int, int], size: int = 16) -> bytes:
    """A solid-colour RGB PNG, written by hand (no imaging library needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    row = b"\x00" + bytes(rgb) * size
    header = size.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(row * size))
        + chunk(b"IEND", b"")
    )


def write_list_benchmark(folder: Path) -> None:
    """A tiny OpenOOD-layout benchmark: PNGs, image lists (``<path> <label>``) and its YAML."""
    (folder / "lists").mkdir(parents=True)
    for name, count in LIST_SIZES.items():
        lines = []
        images = folder / "images" / name
        images.mkdir(parents=True)
        for i in range(count):
            label = i % 3
            ood = name in ("ood_val", "near", "far")
            base = [40, 40, 40] if ood else [30, 30, 30]
            base[label] = 200 if not ood else 40 + 25 * (i % 8)
            (images / f"{i}.png").write_bytes(png_bytes((base[0], base[1], base[2] + 7 * (i % 5))))
            lines.append(f"images/{name}/{i}.png {-1 if ood else label}")
        (folder / "lists" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (folder / "benchmark.yaml").write_text(LIST_BENCHMARK)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "absent"


def snapshot(folder: Path) -> dict[str, tuple[int, int, str]]:
    """Every file under a folder (not following symlinks): size, mtime and a content hash."""
    out: dict[str, tuple[int, int, str]] = {}
    if not folder.exists():
        return out
    for path in sorted(folder.rglob("*")):
        if path.is_symlink() or not path.is_file():
            out[str(path.relative_to(folder))] = (-1, 0, "link" if path.is_symlink() else "dir")
            continue
        stat = path.stat()
        out[str(path.relative_to(folder))] = (stat.st_size, stat.st_mtime_ns, sha(path))
    return out


def changes(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    created = sorted(set(after) - set(before))
    deleted = sorted(set(before) - set(after))
    modified = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    out = []
    for label, names in (("created", created), ("deleted", deleted), ("modified", modified)):
        if names:
            more = f" (+{len(names) - 3} more)" if len(names) > 3 else ""
            out.append(f"{label} {', '.join(names[:3])}{more}")
    return out


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------- cases
#: The classes a failed case counts in, worst first. ``security``: something outside the place the
#: user named was written, replaced or revealed; ``data-loss``: a file of the user's or a run's own
#: was replaced or removed; ``silent-wrong``: a wrong number, or a bad input accepted without a
#: word; ``hang``: no answer within the case's time, or memory exhausted; ``traceback``: a Python
#: traceback instead of a message; ``unclear``: an error that does not say what and how to fix;
#: ``failure``: a good input refused.
HARMS = ("security", "data-loss", "silent-wrong", "hang", "traceback", "unclear", "failure")

#: Address space each command may use (bytes): a YAML bomb or a huge declared size must be refused
#: before it allocates, not after it has taken the machine. PyTorch itself needs about 3 GiB of it.
MEMORY_LIMIT = 6 << 30

#: Modules under benchmarks/ that add cases (each has ``cases() -> list[Case]``), one per class of
#: hostile input, so that the battery grows without one ever-longer function.
CASE_MODULES = ("hostile_paths", "hostile_results", "hostile_inputs", "hostile_runs")


@dataclass
class Ctx:
    """The shared fixtures: the tiny benchmark and recipe, a list benchmark, a finished run."""

    work: Path
    harness: list[str]
    env: dict[str, str]
    timeout: float
    known_options: set[str] = field(default_factory=set)
    _base: Path | None = None

    @property
    def tiny(self) -> Path:
        return self.work / "tiny.yaml"

    @property
    def recipe(self) -> Path:
        return self.work / "recipe.yaml"

    @property
    def lists(self) -> Path:
        return self.work / "listbench"

    def base(self) -> Path:
        """A finished run of the tiny benchmark (built once, on first use; cases take copies)."""
        if self._base is None:
            out = self.work / "base"
            print("  (building the finished run the run-folder cases copy ...)", flush=True)
            self.setup_run(bench(self, out), self.work, "the finished run for the run-folder cases")
            self._base = out
        return self._base

    def setup_run(self, argv: list[str], cwd: Path, what: str) -> None:
        """Run ``harness ARGV`` as part of a case's setup; a failure stops the battery, naming ``what``
        (a broken fixture must not pass for a case's result)."""
        done = subprocess.run(
            [*self.harness, *argv],
            cwd=cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed:\n{done.stderr[-2000:]}")

    def copy_base(self, case_dir: Path, name: str = "run") -> Path:
        target = case_dir / name
        shutil.copytree(self.base(), target, symlinks=True)
        return target


def bench(
    ctx: Ctx, out: Path | str, *extra: str, benchmark: str | None = None, post: str = DETECTORS
) -> list[str]:
    """A bench command line on the tiny benchmark (what the pipeline tests run)."""
    return [
        "bench", "--benchmark", benchmark or str(ctx.tiny), "--recipe", str(ctx.recipe), "--out", str(out),
        "--post", post, "--device", "cpu", "--quiet", "--no-report", *extra,
    ]  # fmt: skip


def quick(ctx: Ctx, out: Path | str, *extra: str, benchmark: str | None = None) -> list[str]:
    """The same with MSP alone (no masks, no dense stage): cheap where validation is missing."""
    return bench(ctx, out, *extra, benchmark=benchmark, post="msp")


@dataclass
class Prepared:
    """What a case's setup hands the runner: the argv, files to protect, a lock to hold."""

    argv: list[str]
    protect: list[Path] = field(default_factory=list)
    watch: Path | None = None  # a folder whose files must not change (default: the case folder)
    hold_lock: Path | None = None
    wrap_readonly: Path | None = None  # run with this folder mounted read-only
    values: dict[str, Any] = field(default_factory=dict)
    #: A ``sh -c`` script to run instead of ``harness ARGV`` (a pipe, a closed stdout): ``"$@"`` in
    #: it is the harness command, ``argv`` is then only what the report shows.
    shell: str | None = None


@dataclass
class Outcome:
    exit_code: int
    traceback: bool
    first_line: str
    stdout: str
    stderr: str
    seconds: float


@dataclass
class Case:
    """One bad input (or control) and what a user should get."""

    id: str
    title: str
    prepare: Callable[[Ctx, Path], Prepared]
    expect: str = "fail"  # fail | ok | any | repaired (exit 0 with unchanged results, or a clear error)
    mentions: tuple[tuple[str, ...], ...] = ()  # each group: at least one alternative in the output
    check: Callable[[Ctx, Path, Prepared, Outcome], list[str]] | None = None
    traceback_ok: bool = False
    unchanged: bool | None = None  # nothing created or modified under the watched folder (default: fail)
    expectation: str = ""
    skip: Callable[[], str | None] | None = None
    timeout: float | None = None
    #: What a failure of this case would mean for a user (see HARMS): the class it counts in.
    #: A timeout or exhausted memory always counts as "hang", a traceback as "traceback".
    harm: str = "unclear"


def simple(*argv: str) -> Callable[[Ctx, Path], Prepared]:
    """A case that is only a command line; ``{out}`` etc. are filled in by the runner."""
    return lambda ctx, case_dir: Prepared(list(argv))


def bench_with(
    *extra: str, benchmark: str | None = None, steps: str | None = None
) -> Callable[..., Prepared]:
    def prepare(ctx: Ctx, case_dir: Path) -> Prepared:
        argv = quick(ctx, case_dir / "out", benchmark=benchmark)
        if extra[:1] == ("--post",):  # replace the default detector rather than add to it
            return Prepared([*replace_option(argv, "--post", extra[1]), *extra[2:]])
        more = ["--steps", steps] if steps else []
        return Prepared([*argv, *extra, *more])

    return prepare


def replace_option(argv: list[str], option: str, value: str) -> list[str]:
    argv = list(argv)
    argv[argv.index(option) + 1] = value
    return argv


def bad_recipe(text: str, *extra: str) -> Callable[[Ctx, Path], Prepared]:
    def prepare(ctx: Ctx, case_dir: Path) -> Prepared:
        path = case_dir / "my_recipe.yaml"
        path.write_text(text)
        return Prepared(replace_option(quick(ctx, case_dir / "out", *extra), "--recipe", str(path)))

    return prepare


def bad_benchmark(text: str) -> Callable[[Ctx, Path], Prepared]:
    def prepare(ctx: Ctx, case_dir: Path) -> Prepared:
        path = case_dir / "my_benchmark.yaml"
        path.write_text(text)
        return Prepared(quick(ctx, case_dir / "out", benchmark=str(path)))

    return prepare


def list_variant(change: Callable[[Path], None], command: str = "bench") -> Callable[[Ctx, Path], Prepared]:
    """A copy of the list benchmark with one change, then ``bench`` (short training) or ``data check``."""

    def prepare(ctx: Ctx, case_dir: Path) -> Prepared:
        folder = case_dir / "mydata"
        shutil.copytree(ctx.lists, folder)
        change(folder)
        yaml_path = str(folder / "benchmark.yaml")
        if command == "check":
            return Prepared(["data", "check", yaml_path])
        argv = bench(ctx, case_dir / "out", "--steps", "6", benchmark=yaml_path)
        return Prepared(replace_option(argv, "--post", "msp,bg"))

    return prepare


def on_finished_run(
    change: Callable[[Path, Path], None] | None, argv: Callable[[Ctx, Path, Path], list[str]] | None = None
) -> Callable[[Ctx, Path], Prepared]:
    """A copy of the finished run, changed, then (by default) the same bench command again."""

    def prepare(ctx: Ctx, case_dir: Path) -> Prepared:
        run = ctx.copy_base(case_dir)
        if change is not None:
            change(run, case_dir)
        command = argv(ctx, case_dir, run) if argv else bench(ctx, run)
        return Prepared(command, values={"run": run})

    return prepare


def cuda_present() -> str | None:
    import torch

    return "CUDA is available here" if torch.cuda.is_available() else None


def results_unchanged(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    run = prepared.values["run"]
    if not (run / "results.csv").is_file():
        return ["results.csv is gone"]
    if read_rows(run / "results.csv") != read_rows(ctx.base() / "results.csv"):
        return ["results.csv differs from the finished run's"]
    return []


def weights_untouched(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    run = prepared.values["run"]
    problems = []
    for name in ("classifier.safetensors", "dfb.safetensors", "masks.npy", "results.csv"):
        if sha(run / name) != sha(ctx.base() / name):
            problems.append(f"{name} was rewritten")
    return problems


def brackets_kept(path_key: str) -> Callable[[Ctx, Path, Prepared, Outcome], list[str]]:
    """The folder name ``x[y]`` must print as is: rich markup must not eat ``[y]`` (nor ``[download]``)."""

    def check(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
        text = outcome.stdout + outcome.stderr
        full = str(prepared.values[path_key])
        stripped = full.replace("[y]", "")
        problems = []
        if re.search(re.escape(stripped) + r"(?!\[y\])", text):
            problems.append(f"printed {stripped!r}: the '[y]' of the folder name was eaten as markup")
        if "pip install" in text and "[download]" not in text:
            problems.append("the pip install hint lost its '[download]' extra (eaten as markup)")
        return problems

    return check


def debug_after(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    text = outcome.stdout + outcome.stderr
    if outcome.traceback or "harness --debug" in text:
        return []
    return ["--debug after the subcommand is neither honoured nor redirected to `harness --debug ...`"]


def debug_before(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    return [] if outcome.traceback else ["--debug did not show the traceback"]


def report_written(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    return [] if (case_dir / "elsewhere" / "report.md").is_file() else ["no report.md in the --out folder"]


def symlink_target(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    target = case_dir / "my_notes.txt"
    return [] if target.read_text() == "my precious notes\n" else ["the symlink's target file was modified"]


def make_cases() -> list[Case]:
    cases: list[Case] = []

    def add(*args: Any, **kwargs: Any) -> None:
        cases.append(Case(*args, **kwargs))

    # -- names --------------------------------------------------------------------------------
    add(
        "unknown-benchmark",
        "bench --benchmark cifar11",
        bench_with(benchmark="cifar11"),
        mentions=(("cifar11",), ("cifar10",)),
    )
    add(
        "missing-benchmark-file",
        "bench --benchmark my.yaml (no such file)",
        bench_with(benchmark="my.yaml"),
        mentions=(("my.yaml",),),
    )
    add(
        "benchmark-is-folder",
        "bench --benchmark configs/ (a folder)",
        bench_with(benchmark=str(ROOT / "configs")),
        mentions=(("configs",),),
    )
    add(
        "unknown-network",
        "bench --network resnet9000",
        bench_with("--network", "resnet9000"),
        mentions=(("resnet9000",), ("rv2_tiny",)),
    )
    add(
        "unknown-recipe",
        "bench --recipe warp-speed",
        lambda ctx, d: Prepared(replace_option(quick(ctx, d / "out"), "--recipe", "warp-speed")),
        mentions=(("warp-speed",), ("cpu-quick",)),
    )
    add(
        "missing-recipe-file",
        "bench --recipe mine.yaml (no such file)",
        lambda ctx, d: Prepared(replace_option(quick(ctx, d / "out"), "--recipe", str(d / "mine.yaml"))),
        mentions=(("mine.yaml",),),
    )
    add("unknown-detector", "bench --post mps", bench_with("--post", "mps"), mentions=(("mps",), ("msp",)))
    add(
        "unknown-detector-in-list",
        "bench --post msp,energi",
        bench_with("--post", "msp,energi"),
        mentions=(("energi",),),
    )
    add("empty-detector", "bench --post ''", bench_with("--post", ""), mentions=(("--post", "detector"),))
    add("unknown-list", "list detektors", simple("list", "detektors"), mentions=(("detektors",),))
    # -- numbers ------------------------------------------------------------------------------
    add("steps-zero", "bench --steps 0", bench_with(steps="0"), mentions=(("--steps", "steps"),))
    add("steps-negative", "bench --steps -5", bench_with(steps="-5"), mentions=(("--steps", "steps"),))
    add("steps-text", "bench --steps abc", bench_with(steps="abc"), mentions=(("--steps",),))
    add("seeds-negative", "bench --seeds -1", bench_with("--seeds", "-1"), mentions=(("--seeds", "seed"),))
    add("seeds-text", "bench --seeds a", bench_with("--seeds", "a"), mentions=(("--seeds",),))
    add("seeds-empty", "bench --seeds ''", bench_with("--seeds", ""), mentions=(("--seeds",),))
    add("seeds-repeated", "bench --seeds 0,0", bench_with("--seeds", "0,0"), expect="any")
    add(
        "batch-zero",
        "bench --batch-size 0",
        bench_with("--batch-size", "0"),
        mentions=(("--batch-size", "batch"),),
    )
    add(
        "batch-negative",
        "bench --batch-size -3",
        bench_with("--batch-size", "-3"),
        mentions=(("--batch-size", "batch"),),
    )
    add(
        "eval-seed-negative",
        "eval --seed -1",
        lambda ctx, d: Prepared(["eval", *quick(ctx, d / "out")[1:-1], "--seed", "-1"]),
        mentions=(("--seed", "seed"),),
    )
    # -- recipe YAML --------------------------------------------------------------------------
    add(
        "recipe-lr-fast",
        "recipe YAML with optimizer lr: fast",
        bad_recipe(TINY_RECIPE.replace("lr: 0.05", "lr: fast")),
        mentions=(("lr",), ("my_recipe.yaml",)),
    )
    add(
        "recipe-unknown-key",
        "recipe YAML with a typo (stpes: 10)",
        bad_recipe(TINY_RECIPE + "stpes: 10\n"),
        mentions=(("stpes",),),
    )
    add(
        "recipe-malformed",
        "recipe YAML with an unclosed bracket",
        bad_recipe(TINY_RECIPE.replace("[0.7]", "[0.7")),
        mentions=(("my_recipe.yaml",),),
    )
    add(  # --steps 4 bounds the run should the empty file be taken for the defaults (1000 steps)
        "recipe-empty",
        "empty recipe YAML",
        bad_recipe("", "--steps", "4"),
        mentions=(("my_recipe.yaml",),),
    )
    add(
        "recipe-steps-negative",
        "recipe YAML with steps: -1",
        bad_recipe(TINY_RECIPE.replace("steps: 24", "steps: -1")),
        mentions=(("steps",),),
    )
    add(
        "recipe-batch-zero",
        "recipe YAML with batch_size: 0",
        bad_recipe(TINY_RECIPE.replace("batch_size: 32", "batch_size: 0")),
        mentions=(("batch_size",),),
    )
    add(
        "recipe-unknown-network",
        "recipe YAML with network: resnet9000",
        bad_recipe(TINY_RECIPE.replace("rv2_tiny", "resnet9000")),
        mentions=(("resnet9000",),),
    )
    # -- benchmark YAML -----------------------------------------------------------------------
    add(
        "benchmark-malformed",
        "benchmark YAML with a tab and an unclosed brace",
        bad_benchmark(TINY_BENCHMARK.replace("{resize: 16, crop: 16}", "{resize: 16,\tcrop: 16")),
        mentions=(("my_benchmark.yaml",),),
    )
    add("benchmark-empty", "empty benchmark YAML", bad_benchmark(""), mentions=(("my_benchmark.yaml",),))
    add(
        "benchmark-list",
        "benchmark YAML that is a list",
        bad_benchmark("- a\n- b\n"),
        mentions=(("my_benchmark.yaml",),),
    )
    add(
        "benchmark-no-classes",
        "benchmark YAML without num_classes",
        bad_benchmark(TINY_BENCHMARK.replace("num_classes: 6\n", "")),
        mentions=(("num_classes",),),
    )
    add(
        "benchmark-names-mismatch",
        "benchmark YAML: 5 class_names for 6 classes",
        bad_benchmark(TINY_BENCHMARK.replace(", star]", "]")),
        mentions=(("class_names",),),
    )
    # -- image lists --------------------------------------------------------------------------
    add("list-control", "a valid image-list benchmark (control)", list_variant(lambda f: None), expect="ok")
    add(
        "list-missing",
        "benchmark naming a list file that does not exist",
        list_variant(lambda f: (f / "lists" / "far.txt").unlink()),
        mentions=(("far.txt",),),
    )
    add(
        "list-empty-ood",
        "an empty OOD list",
        list_variant(lambda f: (f / "lists" / "far.txt").write_text("")),
        mentions=(("far.txt",),),
    )
    add(
        "list-missing-image",
        "an OOD list naming a missing image",
        list_variant(lambda f: (f / "images" / "near" / "3.png").unlink()),
        mentions=(("3.png", "near.txt"),),
    )

    def add_bom(folder: Path) -> None:
        path = folder / "lists" / "train.txt"
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())

    def crlf(folder: Path) -> None:
        path = folder / "lists" / "test.txt"
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))

    def label_out_of_range(folder: Path) -> None:
        path = folder / "lists" / "train.txt"
        path.write_text(path.read_text().replace("images/train/5.png 2", "images/train/5.png 7"))

    def label_text(folder: Path) -> None:
        path = folder / "lists" / "val.txt"
        path.write_text(path.read_text().replace("images/val/1.png 1", "images/val/1.png green"))

    def undecodable(folder: Path) -> None:
        (folder / "images" / "test" / "2.png").write_text("not an image")

    add("list-bom", "a list saved with a UTF-8 BOM (legitimately fine)", list_variant(add_bom), expect="ok")
    add(
        "list-bom-check", "data check of a list with a UTF-8 BOM", list_variant(add_bom, "check"), expect="ok"
    )
    add(
        "list-crlf-check",
        "data check of a list with CRLF line ends",
        list_variant(crlf, "check"),
        expect="ok",
    )
    add(
        "list-label-range",
        "ID train list with label 7 for 3 classes",
        list_variant(label_out_of_range),
        mentions=(("train.txt",), ("7",)),
    )
    add(
        "list-label-text",
        "ID val list with label 'green'",
        list_variant(label_text),
        mentions=(("val.txt",),),
    )
    add(
        "list-undecodable",
        "a text file saved as test/2.png",
        list_variant(undecodable),
        mentions=(("2.png",),),
    )
    # -- devices, data, options ---------------------------------------------------------------
    add(
        "device-cuda",
        "bench --device cuda (no CUDA here)",
        lambda ctx, d: Prepared(replace_option(quick(ctx, d / "out"), "--device", "cuda")),
        mentions=(("cuda", "CUDA"),),
        skip=cuda_present,
    )
    add(
        "device-unknown",
        "bench --device tpu",
        lambda ctx, d: Prepared(replace_option(quick(ctx, d / "out"), "--device", "tpu")),
        mentions=(("tpu",),),
    )
    add(
        "cifar10-no-data",
        "bench --benchmark cifar10 (no data downloaded)",
        bench_with(benchmark="cifar10"),
        mentions=(("harness data download cifar10",),),
    )
    add(
        "cifar10-bad-root",
        "bench --benchmark cifar10 --data-root /nonexistent",
        bench_with("--data-root", "/nonexistent/data", benchmark="cifar10"),
        mentions=(("/nonexistent/data",),),
    )
    add(
        "fpr-convention",
        "bench --fpr-convention x",
        bench_with("--fpr-convention", "x"),
        mentions=(("--fpr-convention",),),
    )
    add("foreground", "bench --foreground x", bench_with("--foreground", "x"), mentions=(("--foreground",),))
    add("launcher", "bench --launcher x", bench_with("--launcher", "x"), mentions=(("--launcher",),))
    add(
        "nproc-alone", "bench --nproc 2 (no --launcher)", bench_with("--nproc", "2"), mentions=(("--nproc",),)
    )
    add(
        "checkpoint-missing",
        "bench --checkpoint nothere.safetensors",
        lambda ctx, d: Prepared(quick(ctx, d / "out", "--checkpoint", str(d / "nothere.safetensors"))),
        mentions=(("nothere.safetensors",),),
    )

    def garbage_checkpoint(ctx: Ctx, case_dir: Path) -> Prepared:
        (case_dir / "notes.safetensors").write_text("these are my notes, not weights\n")
        return Prepared(quick(ctx, case_dir / "out", "--checkpoint", str(case_dir / "notes.safetensors")))

    add(
        "checkpoint-garbage",
        "bench --checkpoint a text file",
        garbage_checkpoint,
        mentions=(("notes.safetensors",),),
    )

    def csv_folder(ctx: Ctx, case_dir: Path) -> Prepared:
        (case_dir / "tables").mkdir()
        return Prepared(quick(ctx, case_dir / "out", "--csv", str(case_dir / "tables")))

    add("csv-is-folder", "bench --csv pointing at a folder", csv_folder, mentions=(("--csv", "tables"),))
    add(
        "debug-after",
        "bench --benchmark cifar11 --debug (--debug after the subcommand)",
        bench_with("--debug", benchmark="cifar11"),
        check=debug_after,
        traceback_ok=True,
        expectation="exit != 0; --debug honoured (traceback) or the error says `harness --debug bench ...`",
    )
    add(
        "debug-before",
        "harness --debug bench --benchmark cifar11 (control)",
        lambda ctx, d: Prepared(["--debug", *quick(ctx, d / "out", benchmark="cifar11")]),
        check=debug_before,
        traceback_ok=True,
        expectation="exit != 0 with the traceback, nothing created",
    )
    add("no-arguments", "harness (no arguments)", simple(), expect="any", unchanged=True)
    add("bench-help", "bench --help", simple("bench", "--help"), expect="ok", unchanged=True)
    add("list-recipes", "list recipes (control)", simple("list", "recipes"), expect="ok", unchanged=True)
    # -- harness data -------------------------------------------------------------------------
    add(
        "data-check-unknown",
        "data check cifar11",
        simple("data", "check", "cifar11"),
        mentions=(("cifar11",),),
    )
    add(
        "data-check-no-data",
        "data check cifar10 (no data)",
        simple("data", "check", "cifar10"),
        mentions=(("harness data download cifar10",),),
    )

    def bracket_root(command: str) -> Callable[[Ctx, Path], Prepared]:
        def prepare(ctx: Ctx, case_dir: Path) -> Prepared:
            root = case_dir / "my data[y]"
            return Prepared(["data", command, "cifar10", "--data-root", str(root)], values={"root": root})

        return prepare

    add(
        "data-download-brackets",
        "data download cifar10 --data-root 'my data[y]' (offline)",
        bracket_root("download"),
        check=brackets_kept("root"),
        unchanged=False,
        timeout=180,
        expectation="exit != 0 (offline), messages print the folder and `pip install 'dfb-ood[download]'` "
        "with their brackets",
    )
    add(
        "data-check-brackets",
        "data check cifar10 --data-root 'my data[y]'",
        bracket_root("check"),
        check=brackets_kept("root"),
        mentions=(("harness data download cifar10",),),
    )
    add(
        "data-download-unknown",
        "data download cifar11",
        simple("data", "download", "cifar11"),
        mentions=(("cifar11",),),
    )
    add(
        "data-check-tiny",
        "data check tiny.yaml (control)",
        lambda ctx, d: Prepared(["data", "check", str(ctx.tiny)]),
        expect="ok",
        unchanged=True,
    )
    # -- run folders --------------------------------------------------------------------------

    def own_results(ctx: Ctx, case_dir: Path) -> Prepared:
        out = case_dir / "out"
        out.mkdir()
        (out / "results.csv").write_text("model,accuracy\nmine,0.93\n")
        (out / "run.json").write_text('{"my": "experiment"}\n')
        return Prepared(quick(ctx, out), protect=[out / "results.csv", out / "run.json"])

    add(
        "out-user-folder",
        "bench --out a folder holding my own results.csv and run.json",
        own_results,
        mentions=(("--out", "--overwrite"),),
        harm="data-loss",
    )

    def out_is_file(ctx: Ctx, case_dir: Path) -> Prepared:
        (case_dir / "out").write_text("a file, not a folder\n")
        return Prepared(quick(ctx, case_dir / "out"), protect=[case_dir / "out"])

    add(
        "out-is-file",
        "bench --out pointing at a file",
        out_is_file,
        mentions=(("out",),),
        harm="data-loss",
    )
    add(
        "rerun-same",
        "the same bench again in a finished run (control)",
        on_finished_run(None),
        expect="ok",
        check=weights_untouched,
        expectation="exit 0, no weight or result rewritten",
    )
    add(
        "rerun-other-steps",
        "a second bench in a finished run with --steps 12 (first had 24)",
        on_finished_run(None, lambda ctx, d, run: bench(ctx, run, "--steps", "12")),
        mentions=(("--overwrite", "--out"),),
        check=weights_untouched,
        expectation="exit != 0 naming --overwrite / another --out; the finished run untouched",
        harm="data-loss",
    )

    def truncate_in_run(name: str) -> Callable[[Path, Path], None]:
        return lambda run, case_dir: truncate(run / name)

    repaired = "exit 0 with the same results (artifact redone), or exit != 0 naming the file"
    for case_id, name in (
        ("truncated-outputs", "outputs/dfb/test/logits.npy"),
        ("truncated-masks", "masks.npy"),
        ("truncated-classifier", "classifier.safetensors"),
    ):
        add(
            case_id,
            f"{name} truncated in a finished run, same bench again",
            on_finished_run(truncate_in_run(name)),
            expect="repaired",
            mentions=((Path(name).name,),),
            check=results_unchanged,
            expectation=repaired,
            harm="silent-wrong",
        )
    add(
        "truncated-outputs-report",
        "report on a run whose outputs/dfb/test/logits.npy is truncated",
        on_finished_run(
            truncate_in_run("outputs/dfb/test/logits.npy"),
            lambda ctx, d, run: ["report", str(run), "--out", str(d / "elsewhere"), "--quiet"],
        ),
        mentions=(("test/logits.npy",),),
        unchanged=False,
    )

    def corrupt_stages(run: Path, case_dir: Path) -> None:
        (run / "stages.json").write_text('{"classifier": {"key": ')

    add(
        "corrupt-stages",
        "stages.json cut short in a finished run, same bench again",
        on_finished_run(corrupt_stages),
        expect="repaired",
        mentions=(("stages.json",),),
        check=results_unchanged,
        expectation=repaired,
    )

    def bad_resume(run: Path, case_dir: Path) -> None:
        stages = json.loads((run / "stages.json").read_text())
        stages.pop("dense")
        (run / "stages.json").write_text(json.dumps(stages))
        (run / "dfb.safetensors").unlink()
        (run / "dfb.resume.pt").write_bytes(b"PK\x03\x04 half a checkpoint")

    add(
        "bad-resume-checkpoint",
        "an unreadable dfb.resume.pt in an unfinished run",
        on_finished_run(bad_resume),
        expect="repaired",
        mentions=(("dfb.resume.pt",),),
        check=results_unchanged,
        expectation=repaired,
    )

    def lock_symlink(run: Path, case_dir: Path) -> None:
        notes = case_dir / "my_notes.txt"
        notes.write_text("my precious notes\n")
        (run / "run.lock").unlink()
        (run / "run.lock").symlink_to(notes)

    add(
        "lock-symlink",
        "run.lock replaced by a symlink to my notes, same bench again",
        on_finished_run(lock_symlink),
        expect="any",
        check=symlink_target,
        unchanged=False,
        expectation="the symlink's target file is not modified; no traceback",
        harm="security",
    )

    def locked(ctx: Ctx, case_dir: Path) -> Prepared:
        run = ctx.copy_base(case_dir)
        return Prepared(bench(ctx, run), hold_lock=run / "run.lock", values={"run": run})

    add(
        "lock-held",
        "bench in a run folder another process holds",
        locked,
        mentions=(("in use",),),
        check=weights_untouched,
        unchanged=False,
        harm="data-loss",
    )

    def readonly_report(ctx: Ctx, case_dir: Path) -> Prepared:
        run = ctx.copy_base(case_dir)
        return Prepared(
            ["report", str(run), "--out", str(case_dir / "elsewhere"), "--quiet"],
            watch=run,
            wrap_readonly=run,
        )

    add(
        "report-readonly",
        "report on a read-only run folder with --out elsewhere",
        readonly_report,
        expect="ok",
        unchanged=True,
        check=report_written,
        expectation="exit 0, the report in --out, nothing written in the run folder",
        harm="security",
    )

    def not_a_run(ctx: Ctx, case_dir: Path) -> Prepared:
        (case_dir / "empty").mkdir()
        return Prepared(["report", str(case_dir / "empty")])

    add(
        "report-not-a-run",
        "report on a folder that is not a run",
        not_a_run,
        mentions=(("run.json", "results.json"), ("harness bench",)),
    )
    add(
        "report-missing",
        "report on a folder that does not exist",
        lambda ctx, d: Prepared(["report", str(d / "nowhere")]),
        mentions=(("nowhere",),),
    )

    def no_results(ctx: Ctx, case_dir: Path) -> Prepared:
        (case_dir / "empty").mkdir()
        return Prepared(["leaderboard", str(case_dir / "empty")])

    add(
        "leaderboard-no-results",
        "leaderboard on a folder without results",
        no_results,
        mentions=(("results.csv",), ("harness bench",)),
    )
    add(
        "leaderboard-reference-foo",
        "leaderboard --reference foo on a finished run",
        on_finished_run(None, lambda ctx, d, run: ["leaderboard", str(run), "--reference", "foo"]),
        mentions=(("foo",), ("dfb-paper",)),
    )
    add(
        "leaderboard-control",
        "leaderboard on a finished run (control)",
        on_finished_run(None, lambda ctx, d, run: ["leaderboard", str(run), "--reference", "dfb-paper"]),
        expect="ok",
        unchanged=True,
    )
    for module_name in CASE_MODULES:
        cases.extend(importlib.import_module(module_name).cases())
    ids = [case.id for case in cases]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise RuntimeError(f"case ids used twice: {repeated}")
    unknown = sorted({case.harm for case in cases} - set(HARMS))
    if unknown:
        raise RuntimeError(f"unknown harm classes {unknown}; known: {HARMS}")
    return cases


# ---------------------------------------------------------------------------------------------- running
BOX = "│╭╮╰╯─┃━┏┓┗┛┡┩└┘┌┐├┤"
_BOX_EDGES = re.compile(f"^[\\s{BOX}]+|[\\s{BOX}]+$")
_ERRORISH = re.compile(
    r"^error\b|\berror:|no such|invalid|not found|does not exist|unknown|refus", re.IGNORECASE
)


def first_error_line(stdout: str, stderr: str, traceback: bool, failed: bool = True) -> str:
    """The line a user reads first: the exception of a traceback, else the first error-like line
    (after a success: the first line of the output)."""
    if traceback:
        lines = [line.strip() for line in stderr.splitlines() if line.strip()]
        return lines[-1] if lines else ""
    for text in (stderr, stdout) if failed else ():
        lines = [_BOX_EDGES.sub("", line) for line in text.splitlines()]
        lines = [line for line in lines if line]
        for i, line in enumerate(lines):
            if line == "Error" and i + 1 < len(lines):  # click's boxed usage errors
                return f"Error: {lines[i + 1]}"
            if _ERRORISH.search(line):
                return line
    for text in (stderr, stdout) if failed else (stdout, stderr):
        lines = [_BOX_EDGES.sub("", line) for line in text.splitlines() if _BOX_EDGES.sub("", line)]
        if lines:
            return lines[0]
    return ""


OPTIONS_SCRIPT = """
import json, typer.main
from dfb_ood.harness.cli import app

def walk(command):
    for param in command.params:
        yield from (o for o in [*param.opts, *param.secondary_opts] if o.startswith("--"))
    yield "--help"
    for sub in getattr(command, "commands", {}).values():  # typer may vendor its own click
        yield from walk(sub)

print(json.dumps(sorted(set(walk(typer.main.get_command(app))))))
"""
_OPTION = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def known_options(ctx: Ctx) -> set[str]:
    """Every option of every ``harness`` command, to check the options an error message suggests."""
    python = Path(ctx.harness[0]).parent / "python" if len(ctx.harness) == 1 else Path(ctx.harness[0])
    done = subprocess.run(
        [str(python), "-c", OPTIONS_SCRIPT], env=ctx.env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        print(f"warning: could not list the CLI's options ({done.stderr.strip()[-300:]})")
        return set()
    return set(json.loads(done.stdout))


def unknown_suggestions(ctx: Ctx, text: str) -> list[str]:
    """Options an error message names that no ``harness`` command has (a fix the user cannot apply)."""
    if not ctx.known_options:
        return []
    named = set(_OPTION.findall(text))
    return sorted(named - ctx.known_options)


def readonly_command(folder: Path, argv: list[str]) -> list[str] | None:
    """Run ``argv`` with ``folder`` bind-mounted read-only in a private mount namespace (root only)."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return None
    quoted = " ".join(_shell_quote(a) for a in argv)
    script = (
        f"mount --bind {_shell_quote(str(folder))} {_shell_quote(str(folder))} && "
        f"mount -o remount,ro,bind {_shell_quote(str(folder))} && exec {quoted}"
    )
    return ["unshare", "-m", "sh", "-c", script]


def _shell_quote(text: str) -> str:
    return "'" + text.replace("'", "'\"'\"'") + "'"


@contextlib.contextmanager
def held_lock(path: Path | None) -> Iterator[None]:
    if path is None:
        yield
        return
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def limit_memory() -> None:
    """In the child before it runs: cap its address space at MEMORY_LIMIT."""
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


_OUT_OF_MEMORY = re.compile(r"MemoryError|Cannot allocate memory|std::bad_alloc|DefaultCPUAllocator")


def harm_of(case: Case, outcome: Outcome, problems: list[str]) -> str | None:
    """The class a failed case counts in (None when it passed)."""
    if not problems:
        return None
    if outcome.exit_code == -9 or _OUT_OF_MEMORY.search(outcome.stdout + outcome.stderr):
        return "hang"
    if outcome.traceback and not case.traceback_ok:
        return "traceback"
    if case.expect == "ok" and outcome.exit_code != 0 and case.harm == "unclear":
        return "failure"
    return case.harm


def run_case(ctx: Ctx, case: Case) -> dict[str, Any]:
    case_dir = ctx.work / "cases" / case.id
    case_dir.mkdir(parents=True)
    cwd = case_dir / "cwd"
    cwd.mkdir()
    record: dict[str, Any] = {"id": case.id, "input": case.title, "expect": case.expect, "class": case.harm}
    reason = case.skip() if case.skip else None
    if reason:
        record.update(status="skipped", problems=[reason], expectation=expectation_text(case))
        return record
    prepared = case.prepare(ctx, case_dir)
    argv = [*ctx.harness, *prepared.argv]
    if prepared.shell is not None:
        argv = ["sh", "-c", prepared.shell, "sh", *ctx.harness]
    watch = prepared.watch or case_dir
    protected = {path: sha(path) for path in prepared.protect}
    readonly_note = ""
    if prepared.wrap_readonly is not None:
        wrapped = readonly_command(prepared.wrap_readonly, argv)
        if wrapped is None:  # not root: plain permissions do it
            subprocess.run(["chmod", "-R", "a-w", str(prepared.wrap_readonly)], check=True)
        else:
            argv = wrapped
            readonly_note = " (read-only bind mount)"
    before = snapshot(watch)
    started = time.monotonic()
    with held_lock(prepared.hold_lock):
        try:
            done = subprocess.run(
                argv,
                cwd=cwd,
                env=ctx.env,
                capture_output=True,
                text=True,
                timeout=case.timeout or ctx.timeout,
                check=False,
                preexec_fn=limit_memory,
            )
            exit_code, stdout, stderr = done.returncode, done.stdout, done.stderr
        except subprocess.TimeoutExpired as error:
            exit_code = -9
            stdout = (error.stdout or b"").decode(errors="replace") if isinstance(error.stdout, bytes) else ""
            stderr = f"timed out after {case.timeout or ctx.timeout:.0f} s"
    seconds = time.monotonic() - started
    if prepared.wrap_readonly is not None:
        subprocess.run(["chmod", "-R", "u+w", str(prepared.wrap_readonly)], check=False)
    traceback = "Traceback (most recent call last)" in stdout + stderr
    first = first_error_line(stdout, stderr, traceback, failed=exit_code != 0)
    outcome = Outcome(exit_code, traceback, first, stdout, stderr, seconds)
    problems = judge(ctx, case, case_dir, prepared, outcome, before, watch, protected)
    shown = ["harness", *prepared.argv]
    command = " ".join(_shell_quote(a) if (" " in a or not a) else a for a in shown)
    if prepared.shell is not None:
        command = prepared.shell.replace('"$@"', "harness")
    record.update(
        command=command.replace(str(ctx.work), "$W"),
        expectation=expectation_text(case) + readonly_note,
        exit_code=exit_code,
        traceback=traceback,
        first_line=outcome.first_line.replace(str(ctx.work), "$W"),
        error_lines=len([line for line in stderr.splitlines() if line.strip()]),
        seconds=round(seconds, 1),
        status="pass" if not problems else "FAIL",
        harm=harm_of(case, outcome, problems),
        problems=[p.replace(str(ctx.work), "$W") for p in problems],
        stderr_tail=stderr[-1500:].replace(str(ctx.work), "$W"),
    )
    return record


def judge(
    ctx: Ctx,
    case: Case,
    case_dir: Path,
    prepared: Prepared,
    outcome: Outcome,
    before: dict[str, Any],
    watch: Path,
    protected: dict[Path, str],
) -> list[str]:
    """Every way the outcome falls short of the case's expectation."""
    problems: list[str] = []
    text = outcome.stdout + outcome.stderr
    failed = outcome.exit_code != 0
    if outcome.exit_code == -9:
        problems.append("timed out")
    if case.expect == "fail" and not failed:
        problems.append("exit code 0: the bad input was accepted")
    if case.expect == "ok" and failed:
        problems.append(f"exit code {outcome.exit_code}, expected 0")
    if outcome.traceback and not case.traceback_ok:
        problems.append("a traceback instead of a one-line error")
    if failed and not outcome.first_line.strip():
        problems.append("no error message")
    wants_message = case.expect == "fail" or (case.expect in ("repaired", "any") and failed)
    if failed and not outcome.traceback:
        for option in unknown_suggestions(ctx, outcome.stderr):
            problems.append(f"the message suggests {option}, which no harness command has")
    if wants_message:
        lowered = text.lower()
        for group in case.mentions:
            if not any(alternative.lower() in lowered for alternative in group):
                problems.append(f"the error does not mention {' / '.join(repr(a) for a in group)}")
    unchanged = case.unchanged if case.unchanged is not None else case.expect == "fail"
    if unchanged:
        diff = changes(before, snapshot(watch))
        if diff:
            problems.append("left changes behind: " + "; ".join(diff))
    for path, digest in protected.items():
        if sha(path) != digest:
            problems.append(f"{path.name} (the user's file) was modified or removed")
    if case.check is not None:
        extra = case.check(ctx, case_dir, prepared, outcome)
        if case.expect == "repaired" and failed:
            extra = [
                p for p in extra if "results.csv" not in p
            ]  # a clear refusal may leave results as they were
        problems.extend(extra)
    return problems


def expectation_text(case: Case) -> str:
    if case.expectation:
        return case.expectation
    if case.expect == "ok":
        return "exit 0"
    if case.expect == "any":
        return "any exit code, no traceback"
    names = " and ".join("/".join(group) for group in case.mentions)
    text = "exit != 0, one line" + (f" naming {names}" if names else "")
    unchanged = case.unchanged if case.unchanged is not None else True
    return text + (", nothing created" if unchanged else "")


# ---------------------------------------------------------------------------------------------- report
def cell(text: Any, limit: int = 160) -> str:
    text = str(text).replace("\n", " ").replace("|", "\\|").strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe_code(code: dict[str, Any]) -> str:
    text = f"commit {str(code.get('commit'))[:10]}"
    if code.get("uncommitted_changes"):
        text += " with uncommitted changes"
    if code.get("pythonpath"):
        text += f", PYTHONPATH={code['pythonpath']}"
    return text


def fault_battery_section() -> list[str]:
    lines = ["## Fault battery: SIGKILL in every stage, then resume", ""]
    if not FAULT_JSON.is_file():
        return [
            *lines,
            "No `docs/results/fault_battery.json` yet: run `python benchmarks/fault_battery.py`.",
            "",
        ]
    data = json.loads(FAULT_JSON.read_text())
    summary = data["summary"]
    settings = data["settings"]
    timings = data["reference"]["timings_s"]
    lines += [
        f"From `{FAULT_JSON.relative_to(ROOT)}` ({data['date']}, {describe_code(data.get('code', {}))}, "
        f"`{data['command']}`). "
        "A tiny shapes benchmark "
        f"({settings['steps']} training steps, detectors {settings['detectors']}, one thread on the CPU) ran "
        f"uninterrupted in {data['reference']['wall_s']:.1f} s (stages: "
        + ", ".join(f"{k} {float(timings[k]):.2f} s" for k in STAGES if k in timings)
        + "). Each kill below started the same command in a fresh run folder, killed it with SIGKILL, "
        "then reran it until it completed and compared every column of `results.csv` with the "
        "uninterrupted run's.",
        "",
        f"**{summary['kills_done']} kills, "
        f"{summary['identical']}/{summary['kills_planned']} results identical**"
        + (f"; different: kills {summary['different']}" if summary["different"] else "")
        + (f"; missed (the run finished first): {summary['missed']}" if summary["missed"] else "")
        + f"; runtime {summary['runtime_s']:.0f} s.",
        "",
        "| kill | target stage | s after start | stage reached | reruns | identical | resumed at step | "
        "left behind |",
        "|---:|---|---:|---|---:|---|---|---|",
    ]
    for t in data["trials"]:
        target = t["target"] if t["target"] != "random" else f"random ({t.get('planned_s', 0):.2f} s)"
        resumed = ", ".join(f"{k} {v}" for k, v in (t.get("resumed_from") or {}).items() if v) or "-"
        left = ", ".join(t.get("litter") or []) or "-"
        same = "yes" if t["identical"] else "**no**: " + cell("; ".join(t["differences"][:3]))
        lines.append(
            f"| {t['kill']} | {target} | {t['seconds']:.2f} | {cell(t['reached'])} | {t['reruns']} | "
            f"{same} | {resumed} | "
            f"{cell(left)} |"
        )
    return [*lines, ""]


def harm_summary(records: list[dict[str, Any]]) -> str:
    """``security 0, data-loss 0, ...``: how many failed cases count in each class."""
    counts = {harm: 0 for harm in HARMS}
    for r in records:
        if r["status"] == "FAIL":
            counts[r.get("harm") or "unclear"] += 1
    return ", ".join(f"{harm} {count}" for harm, count in counts.items())


def write_markdown(records: list[dict[str, Any]], runtime: float, path: Path) -> None:
    failed = [r for r in records if r["status"] == "FAIL"]
    passed = [r for r in records if r["status"] == "pass"]
    skipped = [r for r in records if r["status"] == "skipped"]
    lines = [
        "<!-- Generated by benchmarks/bad_inputs.py (and the JSON of benchmarks/fault_battery.py): "
        "do not edit by hand, rerun the scripts. -->",
        "",
        "# Reliability",
        "",
        "Generated by `python benchmarks/bad_inputs.py` on "
        f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} ({describe_code(code_version())}). "
        "Two batteries: killed runs must resume "
        "to identical results, and bad inputs must get a one-line error that names the problem and the fix, "
        "with nothing left behind.",
        "",
        *fault_battery_section(),
        "## Bad inputs",
        "",
        f"**{len(passed)} of {len(records) - len(skipped)} cases meet their expectation**"
        + (f" ({len(skipped)} skipped)" if skipped else "")
        + f"; runtime {runtime:.0f} s. Each case ran `harness ...` as a subprocess from an empty folder, "
        "with `$HARNESS_DATA` at an empty data root; `$W` is the battery's temporary folder. "
        "The expectation of a bad input: exit code != 0, no traceback, an error naming the "
        "option or file, and nothing created or modified (no run folder left behind). Each command ran "
        f"under a time limit and a {MEMORY_LIMIT >> 30} GiB address-space limit.",
        "",
        "Failures by class (`class` column: what a failure of that case would mean): "
        + harm_summary(records)
        + ".",
        "",
        "| # | input | class | expected | exit | first line of the output | result |",
        "|---:|---|---|---|---:|---|---|",
    ]
    for i, r in enumerate(records, start=1):
        if r["status"] == "skipped":
            lines.append(
                f"| {i} | {cell(r['input'])} | {r.get('class', '')} | {cell(r['expectation'])} | - | - | "
                "skipped: "
                f"{cell('; '.join(r['problems']))} |"
            )
            continue
        exit_text = f"{r['exit_code']}" + (" + traceback" if r["traceback"] else "")
        result = "pass" if r["status"] == "pass" else "**FAIL**: " + cell("; ".join(r["problems"]), 300)
        lines.append(
            f"| {i} | {cell(r['input'])} | {r.get('class', '')} | {cell(r['expectation'])} | {exit_text} | "
            f"`` {cell(r['first_line'] or '(no output)').replace('``', '` `')} `` "
            f"| {result} |"
        )
    lines += ["", "Commands, in the order above (`harness` is the console script):", ""]
    lines += [f"{i}. `` {cell(r.get('command', ''), 400)} ``" for i, r in enumerate(records, start=1)]
    if failed:
        lines += ["", f"Failing: {', '.join(r['id'] for r in failed)}."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="Run only the cases whose id matches this regular expression.")
    parser.add_argument("--list", action="store_true", help="List the cases and exit.")
    parser.add_argument(
        "--keep", action="store_true", help="Keep the temporary folder (its path is printed)."
    )
    parser.add_argument("--no-write", action="store_true", help="Write neither the JSON nor the Markdown.")
    parser.add_argument("--write", action="store_true", help="Write them even with --only.")
    parser.add_argument("--timeout", type=float, default=300.0, help="Seconds allowed per command.")
    parser.add_argument("--verbose", "-v", action="store_true", help="Print each failing case's stderr.")
    args = parser.parse_args()

    sys.modules.setdefault("bad_inputs", sys.modules[__name__])  # the case modules import this one
    cases = make_cases()
    if args.list:
        for case in cases:
            print(f"{case.id:28s} {case.harm:12s} {case.title}")
        return 0
    if args.only:
        cases = [c for c in cases if re.search(args.only, c.id)]
        if not cases:
            parser.error(f"no case id matches {args.only!r}")
    write = not args.no_write and (args.write or not args.only)

    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="bad_inputs_"))
    console_script = Path(sys.executable).parent / "harness"
    harness = [str(console_script)] if console_script.is_file() else [sys.executable, "-m", "dfb_ood"]
    (work / "empty-data").mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "COLUMNS": "200",  # rich wraps at 80 columns when not on a terminal; keep messages on one line
        "HARNESS_DATA": str(work / "empty-data"),
        "MPLBACKEND": "Agg",
    }
    ctx = Ctx(work=work, harness=harness, env=env, timeout=args.timeout)
    ctx.known_options = known_options(ctx)
    ctx.tiny.write_text(TINY_BENCHMARK)
    ctx.recipe.write_text(TINY_RECIPE)
    write_list_benchmark(ctx.lists)
    records = []
    try:
        for number, case in enumerate(cases, start=1):
            record = run_case(ctx, case)
            records.append(record)
            extra = f": {'; '.join(record['problems'])}" if record["status"] != "pass" else ""
            seconds = f"{record.get('seconds', 0):5.1f} s"
            print(f"[{number:2d}/{len(cases)}] {record['status']:7s} {seconds} {case.id}{extra}", flush=True)
            if args.verbose and record["status"] == "FAIL":
                print("    " + record.get("stderr_tail", "").replace("\n", "\n    "))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    runtime = time.monotonic() - started
    failed = [r for r in records if r["status"] == "FAIL"]
    skipped = [r for r in records if r["status"] == "skipped"]
    print()
    print(
        f"{len(records) - len(failed) - len(skipped)}/{len(records) - len(skipped)} expectations met"
        + (f", {len(skipped)} skipped" if skipped else "")
        + f"; runtime {runtime:.0f} s; failures by class: {harm_summary(records)}"
    )
    for r in failed:
        print(f"  FAIL {r['id']}: exit {r['exit_code']}; {'; '.join(r['problems'])}")
        print(f"       first line: {r['first_line']}")
    if write:
        RESULTS_JSON.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "generated_by": "benchmarks/bad_inputs.py",
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "runtime_s": round(runtime, 1),
            "code": code_version(),
            "summary": {
                "cases": len(records),
                "failed": [r["id"] for r in failed],
                "failed_by_class": {h: [r["id"] for r in failed if r.get("harm") == h] for h in HARMS},
                "skipped": [r["id"] for r in skipped],
            },  # fmt: skip
            "cases": records,
        }
        RESULTS_JSON.write_text(json.dumps(record, indent=2) + "\n")
        write_markdown(records, runtime, DOCS_MD)
        print(f"wrote {RESULTS_JSON.relative_to(ROOT)} and {DOCS_MD.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
