"""Hostile-input cases for benchmarks/bad_inputs.py: inputs that hang or exhaust memory, and odd
inputs that gave silently wrong numbers.

Hangs: a FIFO (named pipe) where an image, an image list, a benchmark or a recipe YAML is expected
blocks the first ``open`` for ever; a YAML "billion laughs" (nested aliases, under a kilobyte)
expands to billions of values; a declared ``num_classes`` or size of billions is allocated before
anything else is read. Silent wrong numbers: 16-bit PNGs decoded as black and white, a normalisation
with ``.inf`` / ``.nan`` / zero, integer or bool weights cast to float, seeds beyond what numpy takes,
and ID test images that an OOD list names too. Each must be refused (or, for the overlap, announced)
with a message naming the file, line or option.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from bad_inputs import (
    TINY_RECIPE,
    Case,
    Ctx,
    Outcome,
    Prepared,
    bad_benchmark,
    bad_recipe,
    bench,
    bench_with,
    list_variant,
    quick,
    read_rows,
    replace_option,
)
from tiny_config import TINY_BENCHMARK

HANG_S = 60.0  # a case that hangs on the unfixed code is stopped after this long

# Nine levels of nine aliases: 9**9 (387 million) strings once expanded, in 370 bytes.
BOMB = "lol0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)
)


def fifo_benchmark(ctx: Ctx, case_dir: Path) -> Prepared:
    path = case_dir / "my_benchmark.yaml"
    os.mkfifo(path)
    return Prepared(quick(ctx, case_dir / "out", benchmark=str(path)))


def fifo_recipe(ctx: Ctx, case_dir: Path) -> Prepared:
    path = case_dir / "my_recipe.yaml"
    os.mkfifo(path)
    return Prepared(replace_option(quick(ctx, case_dir / "out"), "--recipe", str(path)))


def fifo_image(folder: Path) -> None:
    """The ID test list's ``images/test/2.png`` becomes a named pipe."""
    path = folder / "images" / "test" / "2.png"
    path.unlink()
    os.mkfifo(path)


def fifo_in_folder_set(folder: Path) -> None:
    """The far set becomes a plain image folder, with a named pipe ``zz.png`` among its images."""
    yaml = folder / "benchmark.yaml"
    yaml.write_text(yaml.read_text().replace("far1: lists/far.txt", "far1: {type: folder, path: images/far}"))
    os.mkfifo(folder / "images" / "far" / "zz.png")


def fifo_list(folder: Path) -> None:
    path = folder / "lists" / "far.txt"
    path.unlink()
    os.mkfifo(path)


def benchmark_edit(old: str, new: str) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        yaml = folder / "benchmark.yaml"
        text = yaml.read_text()
        assert old in text, old
        yaml.write_text(text.replace(old, new))

    return change


def overlap(folder: Path) -> None:
    """The far list also names the first three ID test images (as OOD, label -1)."""
    test = (folder / "lists" / "test.txt").read_text().splitlines()[:3]
    with open(folder / "lists" / "far.txt", "a") as handle:
        handle.writelines(f"{line.split()[0]} -1\n" for line in test)


def overlap_warned(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    text = " ".join((outcome.stdout + outcome.stderr).split())
    if "3 of the 11 images of OOD set 'far1'" in text and "ID set 'test'" in text:
        return []
    return ["no warning names the 3 ID test images that the far list far1 also holds"]


# ------------------------------------------------------------------------------------ 16-bit PNG
def grayscale_lists(folder: Path, sixteen: bool) -> None:
    """The ID test and far images as grayscale PNGs: 8-bit, or the same values in 16 bits (v * 257)."""
    import numpy as np
    from PIL import Image

    for name in ("test", "far"):
        for path in sorted((folder / "images" / name).glob("*.png")):
            with Image.open(path) as image:
                gray = np.asarray(image.convert("L"))
            if sixteen:
                Image.fromarray(gray.astype(np.uint16) * 257).save(path)  # mode I;16
            else:
                Image.fromarray(gray).save(path)


def png16(ctx: Ctx, case_dir: Path) -> Prepared:
    """Two copies of the list benchmark, 8-bit and 16-bit; the 8-bit one is run here as the reference."""
    runs = {}
    for label, sixteen in (("png8", False), ("png16", True)):
        folder = case_dir / label
        shutil.copytree(ctx.lists, folder)
        grayscale_lists(folder, sixteen)
        argv = bench(ctx, case_dir / f"out_{label}", "--steps", "6", benchmark=str(folder / "benchmark.yaml"))
        runs[label] = replace_option(argv, "--post", "msp")
    ctx.setup_run(runs["png8"], case_dir, "the 8-bit reference run")
    return Prepared(runs["png16"], values={"reference": case_dir / "out_png8", "run": case_dir / "out_png16"})


METRICS = ("dataset", "detector", "auroc", "fpr95", "aupr_in", "aupr_out", "id_accuracy")


def same_as_8bit(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    run, reference = prepared.values["run"] / "results.csv", prepared.values["reference"] / "results.csv"
    if not run.is_file():
        return ["no results.csv"]
    if [[r[k] for k in METRICS] for r in read_rows(run)] != [
        [r[k] for k in METRICS] for r in read_rows(reference)
    ]:
        return ["the 16-bit copy of the images gives other results than the 8-bit one (decoded otherwise)"]
    return []


# ----------------------------------------------------------------------------------- checkpoints
def checkpoint(kind: str) -> Callable[[Ctx, Path], Prepared]:
    """A 6-class rv2_tiny classifier saved as safetensors, its weights cast to ``kind``."""

    def prepare(ctx: Ctx, case_dir: Path) -> Prepared:
        import torch
        from safetensors.torch import save_file

        from dfb_ood.networks import create_network

        torch.manual_seed(0)
        state = create_network("rv2_tiny", 6).state_dict()
        if kind == "int64":
            state = {k: v.round().to(torch.int64) if v.is_floating_point() else v for k, v in state.items()}
        elif kind == "bool":
            state["head.weight"] = state["head.weight"] > 0
        else:
            state = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()}
        path = case_dir / f"classifier_{kind}.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return Prepared(quick(ctx, case_dir / "out", "--checkpoint", str(path)), protect=[path])

    return prepare


def cases() -> list[Case]:
    out: list[Case] = []

    def add(*args: object, **kwargs: object) -> None:
        out.append(Case(*args, **kwargs))  # type: ignore[arg-type]

    # -- hangs: FIFOs ---------------------------------------------------------------------------
    for command in ("check", "bench"):
        add(
            f"inputs-fifo-image-{command}",
            f"{command}: the ID test list names a FIFO (images/test/2.png)",
            list_variant(fifo_image, command),
            mentions=(("2.png",), ("regular file",)),
            timeout=HANG_S,
            harm="hang",
        )
        add(
            f"inputs-fifo-folder-{command}",
            f"{command}: a FIFO zz.png inside an OOD image folder",
            list_variant(fifo_in_folder_set, command),
            mentions=(("zz.png",), ("regular file",)),
            timeout=HANG_S,
            harm="hang",
        )
    add(
        "inputs-fifo-list-check",
        "data check: the far list file is a FIFO",
        list_variant(fifo_list, "check"),
        mentions=(("far.txt",), ("regular file",)),
        timeout=HANG_S,
        harm="hang",
    )
    add(
        "inputs-fifo-benchmark-yaml",
        "bench --benchmark a FIFO",
        fifo_benchmark,
        mentions=(("my_benchmark.yaml",), ("regular file",)),
        timeout=HANG_S,
        harm="hang",
    )
    add(
        "inputs-fifo-recipe-yaml",
        "bench --recipe a FIFO",
        fifo_recipe,
        mentions=(("my_recipe.yaml",), ("regular file",)),
        timeout=HANG_S,
        harm="hang",
    )
    # -- hangs: YAML bombs and huge declared sizes ----------------------------------------------
    add(
        "inputs-yaml-bomb-benchmark",
        "benchmark YAML with a 370-byte alias bomb (9**9 values)",
        bad_benchmark(TINY_BENCHMARK + BOMB),
        mentions=(("my_benchmark.yaml",), ("alias",)),
        timeout=HANG_S,
        harm="hang",
    )
    add(
        "inputs-yaml-bomb-recipe",
        "recipe YAML whose network_options hold an alias bomb",
        bad_recipe(BOMB + TINY_RECIPE + "network_options: {x: *a8}\n"),
        mentions=(("my_recipe.yaml",), ("alias",)),
        timeout=HANG_S,
        harm="hang",
    )
    add(
        "inputs-yaml-bomb-check",
        "data check of a benchmark YAML with an alias bomb",
        list_variant(benchmark_edit("far1: lists/far.txt\n", "far1: lists/far.txt\n" + BOMB), "check"),
        mentions=(("benchmark.yaml",), ("alias",)),
        timeout=HANG_S,
        harm="hang",
    )
    add(
        "inputs-yaml-anchor-control",
        "benchmark YAML whose val set merges the train set's settings (<<: *shapes; legitimately fine)",
        bad_benchmark(
            TINY_BENCHMARK.replace(
                "train: {type: shapes, set: train, count: 192, size: 16}",
                "train: &shapes {type: shapes, set: train, count: 192, size: 16}",
            ).replace(
                "val: {type: shapes, set: val, count: 48, size: 16}",
                "val: {<<: *shapes, set: val, count: 48}",
            )
        ),
        expect="ok",
        timeout=HANG_S * 3,
        harm="failure",
    )
    add(
        "inputs-num-classes-huge",
        "benchmark YAML with num_classes: 2000000000 (no class_names)",
        bad_benchmark(
            TINY_BENCHMARK.replace("num_classes: 6", "num_classes: 2000000000").replace(
                "class_names: [circle, square, triangle, plus, ring, star]\n", ""
            )
        ),
        mentions=(("num_classes",), ("2000000000",)),
        timeout=HANG_S,
        harm="hang",
    )
    add(
        "inputs-image-size-huge",
        "benchmark YAML with image_size: 1000000",
        bad_benchmark(
            TINY_BENCHMARK.replace("image_size: 16", "image_size: 1000000").replace(
                "{resize: 16, crop: 16}", "{resize: 1000000, crop: 1000000}"
            )
        ),
        mentions=(("image_size",), ("1000000",)),
        timeout=HANG_S,
        harm="hang",
    )
    add(
        "inputs-shapes-count-huge",
        "benchmark YAML with a shapes set of count: 1000000000",
        bad_benchmark(TINY_BENCHMARK.replace("set: train, count: 192", "set: train, count: 1000000000")),
        mentions=(("count",), ("1000000000",)),
        timeout=HANG_S,
        harm="hang",
    )
    # -- silent wrong numbers: normalisation ----------------------------------------------------
    for case_id, old, new, words in (
        ("std-inf", "std: [0.5]", "std: [.inf]", ("std",)),
        ("std-zero", "std: [0.5]", "std: [0]", ("std",)),
        ("mean-nan", "mean: [0.5]", "mean: [.nan]", ("mean",)),
        ("std-length", "std: [0.5]", "std: [0.5, 0.5]", ("std",)),
        ("std-gray-three", "channels: 3", "channels: 1\n# three std values for one channel", ("std",)),
    ):
        text = TINY_BENCHMARK.replace(old, new)
        if case_id == "std-gray-three":
            text = text.replace("{mean: [0.5], std: [0.5]}", "{mean: [0.5], std: [0.2, 0.3, 0.4]}")
        add(
            f"inputs-{case_id}",
            f"benchmark YAML with {new.splitlines()[0]}"
            + (" and std: [0.2, 0.3, 0.4]" if "gray" in case_id else ""),
            bad_benchmark(text),
            mentions=(words, ("my_benchmark.yaml",)),
            harm="silent-wrong",
        )
    add(
        "inputs-mean-nan-check",
        "data check of a list benchmark with mean: [.nan]",
        list_variant(benchmark_edit("mean: [0.5]", "mean: [.nan]"), "check"),
        mentions=(("mean",), ("benchmark.yaml",)),
        harm="silent-wrong",
    )
    # -- silent wrong numbers: decoding ---------------------------------------------------------
    add(
        "inputs-png16-bench",
        "ID test and far images as 16-bit grayscale PNGs: the same results as their 8-bit copies",
        png16,
        expect="ok",
        check=same_as_8bit,
        timeout=HANG_S * 3,
        harm="silent-wrong",
        expectation="exit 0, results.csv metrics equal to those of the same images stored in 8 bits",
    )
    # -- silent wrong numbers: checkpoints ------------------------------------------------------
    add(
        "inputs-checkpoint-int64",
        "bench --checkpoint with every weight stored as int64",
        checkpoint("int64"),
        mentions=(("classifier_int64.safetensors",), ("int64",)),
        harm="silent-wrong",
    )
    add(
        "inputs-checkpoint-bool",
        "bench --checkpoint whose head.weight is a bool tensor",
        checkpoint("bool"),
        mentions=(("head.weight",), ("bool",)),
        harm="silent-wrong",
    )
    add(
        "inputs-checkpoint-float16",
        "bench --checkpoint saved in float16 (legitimately fine: the same numbers)",
        checkpoint("float16"),
        expect="ok",
        harm="failure",
    )
    # -- silent wrong numbers: seeds ------------------------------------------------------------
    add(
        "inputs-seeds-huge",
        "bench --seeds 99999999999999999999",
        bench_with("--seeds", "99999999999999999999"),
        mentions=(("--seeds",), ("4294967295",)),
        harm="silent-wrong",
    )
    add(
        "inputs-eval-seed-huge",
        "eval --seed 18446744073709551616 (2**64)",
        lambda ctx, d: Prepared(["eval", *quick(ctx, d / "out")[1:-1], "--seed", str(2**64)]),
        mentions=(("--seed",), ("4294967295",)),
        harm="silent-wrong",
    )
    add(
        "inputs-seed-max-control",
        "bench --seeds 4294967295 (the largest seed, legitimately fine)",
        bench_with("--seeds", str(2**32 - 1)),
        expect="ok",
        harm="failure",
    )
    # -- silent wrong numbers: ID images also in an OOD list ------------------------------------
    add(
        "inputs-overlap-bench",
        "bench: the far list also names 3 ID test images",
        list_variant(overlap),
        expect="any",
        check=overlap_warned,
        harm="silent-wrong",
        expectation="a warning naming far1, the ID test set and the count (3)",
    )
    add(
        "inputs-overlap-check",
        "data check: the far list also names 3 ID test images",
        list_variant(overlap, "check"),
        mentions=(("far1",), ("'test'",), ("3 of the",)),
        harm="silent-wrong",
    )
    return out
