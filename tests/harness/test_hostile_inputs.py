"""Hostile inputs (issue 22): nothing hangs or exhausts memory, no odd input gives a silent wrong number.

Hangs are tried in a child process with a deadline and an address-space limit, so that a
regression fails the test instead of blocking or swapping the machine: a FIFO where an image, a
list or a YAML is expected, a YAML alias bomb, a declared size of billions. The silent wrong
numbers are tried in process: 16-bit and other image modes, normalisation with inf / nan / 0,
integer and bool weights, seeds beyond 2**32-1, ID test images that an OOD list names too.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfb_ood.harness.data.benchmark import load_benchmark
from dfb_ood.harness.data.check import check_benchmark
from dfb_ood.harness.data.images import decode_rgb, header_ok
from dfb_ood.harness.data.problems import OverlapWarning
from dfb_ood.harness.preflight import check_benchmark_data, check_settings
from dfb_ood.harness.settings import BenchSettings
from dfb_ood.networks import CheckpointError, create_network, load_foreign_state_dict

ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 30
MEMORY = 4 << 30

BENCH = """\
name: hostile
num_classes: 2
class_names: [dark, light]
image_size: 8
channels: 3
normalization: {mean: [0.5], std: [0.5]}
id:
  train: lists/train.txt
  val: lists/val.txt
  test: lists/test.txt
ood:
  far:
    far1: lists/far.txt
"""

BOMB = "lol0: &a0 [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"lol{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]\n" for i in range(1, 9)
)

RECIPE = """\
name: tiny
network: rv2_tiny
optimizer: {lr: 0.05, momentum: 0.9, weight_decay: 0.0005}
batch_size: 8
steps: 2
"""


def write_bench(folder: Path, text: str = BENCH) -> Path:
    """A two-class list benchmark of 8x8 PNGs: 4 images per set, the far set images of its own."""
    (folder / "lists").mkdir(parents=True, exist_ok=True)
    for name in ("train", "val", "test", "far"):
        (folder / "images" / name).mkdir(parents=True, exist_ok=True)
        lines = []
        for i in range(4):
            value = 40 + 50 * i if name != "far" else 200
            Image.new("RGB", (8, 8), (value, value, value)).save(folder / "images" / name / f"{i}.png")
            lines.append(f"images/{name}/{i}.png {-1 if name == 'far' else i % 2}")
        (folder / "lists" / f"{name}.txt").write_text("\n".join(lines) + "\n")
    (folder / "benchmark.yaml").write_text(text)
    return folder / "benchmark.yaml"


def in_child(code: str) -> str:
    """Run ``code`` in a fresh interpreter with a deadline and a memory cap; its stdout (a message)."""

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=DEADLINE_S,
            env=env,
            preexec_fn=cap,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"no answer within {DEADLINE_S} s (blocked on a FIFO, or expanding without bound)")
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


# -- class 1: inputs that hang or exhaust memory --------------------------------------------------
def fifo_image(folder: Path) -> tuple[str, tuple[str, ...]]:
    path = folder / "images" / "test" / "2.png"
    path.unlink()
    os.mkfifo(path)
    code = f"""
        from dfb_ood.harness.data.images import decode_rgb, header_ok, ImageDecodeError
        print(header_ok({str(path)!r}))
        try:
            decode_rgb({str(path)!r}, "test.txt:3")
        except ImageDecodeError as error:
            print(error)
    """
    return code, ("2.png", "FIFO", "test.txt:3", "regular file")


def fifo_in_folder(folder: Path) -> tuple[str, tuple[str, ...]]:
    yaml = folder / "benchmark.yaml"
    yaml.write_text(yaml.read_text().replace("far1: lists/far.txt", "far1: {type: folder, path: images/far}"))
    os.mkfifo(folder / "images" / "far" / "zz.png")
    code = f"""
        from dfb_ood.harness.data.benchmark import load_benchmark
        from dfb_ood.harness.preflight import check_benchmark_data
        try:
            check_benchmark_data(load_benchmark({str(yaml)!r}), skip_bad=False)
        except ValueError as error:
            print(error)
    """
    return code, ("zz.png", "FIFO")


def fifo_list(folder: Path) -> tuple[str, tuple[str, ...]]:
    path = folder / "lists" / "far.txt"
    path.unlink()
    os.mkfifo(path)
    code = f"""
        from dfb_ood.harness.data.benchmark import load_benchmark
        from dfb_ood.harness.data.check import check_benchmark
        for report in check_benchmark(load_benchmark({str(folder / "benchmark.yaml")!r})):
            print(report.error)
    """
    return code, ("far.txt", "FIFO", "an image list")


def fifo_yaml(loader: str) -> Callable[[Path], tuple[str, tuple[str, ...]]]:
    def make(folder: Path) -> tuple[str, tuple[str, ...]]:
        path = folder / "mine.yaml"
        os.mkfifo(path)
        module = "dfb_ood.harness.data.benchmark" if loader == "load_benchmark" else "dfb_ood.harness.recipes"
        code = f"""
            from {module} import {loader}
            try:
                {loader}({str(path)!r})
            except OSError as error:
                print(error)
        """
        return code, ("mine.yaml", "FIFO")

    return make


def yaml_text(loader: str, text: str) -> Callable[[Path], tuple[str, tuple[str, ...]]]:
    def make(folder: Path) -> tuple[str, tuple[str, ...]]:
        path = folder / "mine.yaml"
        path.write_text(text)
        module = "dfb_ood.harness.data.benchmark" if loader == "load_benchmark" else "dfb_ood.harness.recipes"
        code = f"""
            from {module} import {loader}
            try:
                {loader}({str(path)!r})
            except ValueError as error:
                print(error)
        """
        return code, ("mine.yaml:",)

    return make


HANGS = {
    "fifo-image": (fifo_image, ()),
    "fifo-in-folder-set": (fifo_in_folder, ()),
    "fifo-list": (fifo_list, ()),
    "fifo-benchmark-yaml": (fifo_yaml("load_benchmark"), ()),
    "fifo-recipe-yaml": (fifo_yaml("load_recipe"), ()),
    "bomb-benchmark": (yaml_text("load_benchmark", BENCH + BOMB), ("alias", "100000")),
    "bomb-recipe": (yaml_text("load_recipe", BOMB + RECIPE + "network_options: {x: *a8}\n"), ("alias",)),
    "recursive-alias": (yaml_text("load_recipe", "a: &a [*a]\n" + RECIPE), ("recursive",)),
    "num-classes-2e9": (
        yaml_text(
            "load_benchmark",
            BENCH.replace("num_classes: 2", "num_classes: 2000000000").replace(
                "class_names: [dark, light]\n", ""
            ),
        ),
        ("num_classes", "2000000000", "100000"),
    ),
    "image-size-1e6": (
        yaml_text("load_benchmark", BENCH.replace("image_size: 8", "image_size: 1000000")),
        ("image_size", "1000000", "4096"),
    ),
}


@pytest.mark.parametrize("case", list(HANGS))
def test_inputs_that_hung_are_refused_at_once(tmp_path: Path, case: str) -> None:
    make, words = HANGS[case]
    write_bench(tmp_path)
    code, named = make(tmp_path)
    message = in_child(code)
    for word in (*named, *words):
        assert word in message, (word, message)


# -- class 2: odd inputs that gave silently wrong numbers -----------------------------------------
def sixteen_bit_png(tmp_path: Path) -> None:
    """A 16-bit grayscale PNG keeps its contrast: value v * 257 decodes to v, not to 0 / 255."""
    gray = np.arange(256, dtype=np.uint16).reshape(16, 16)
    Image.fromarray(gray * 257).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    decoded = np.asarray(decode_rgb(tmp_path / "g16.png"))
    assert decoded.shape == (16, 16, 3) and (decoded == gray.astype(np.uint8)[..., None]).all()


def other_modes(tmp_path: Path) -> None:
    """32-bit integer (I), 1-bit, palette with transparency, LA: the values a user sees; F refused."""
    Image.fromarray(np.arange(16, dtype=np.int32).reshape(4, 4) * 4369).save(tmp_path / "i.tif")
    assert np.asarray(decode_rgb(tmp_path / "i.tif"))[..., 0].tolist() == [
        [17 * k for k in range(r, r + 4)] for r in range(0, 16, 4)
    ]
    Image.fromarray(np.eye(4, dtype=bool)).save(tmp_path / "b.png")
    assert (np.asarray(decode_rgb(tmp_path / "b.png"))[..., 1] == np.eye(4) * 255).all()
    palette = Image.new("P", (4, 4))
    palette.putpalette([0, 0, 0, 250, 10, 20] + [0] * 762)
    palette.putpixel((1, 1), 1)
    palette.save(tmp_path / "p.png", transparency=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow warns when a palette image with transparency is converted
        assert np.asarray(decode_rgb(tmp_path / "p.png"))[1, 1].tolist() == [250, 10, 20]
    Image.new("LA", (4, 4), (100, 50)).save(tmp_path / "la.png")
    assert np.asarray(decode_rgb(tmp_path / "la.png"))[0, 0].tolist() == [100, 100, 100]
    Image.fromarray(np.full((4, 4), 0.5, dtype=np.float32)).save(tmp_path / "f.tif")
    assert "floating-point" in (header_ok(tmp_path / "f.tif") or "")
    with pytest.raises(ValueError, match=r"f\.tif.*floating-point"):
        decode_rgb(tmp_path / "f.tif")


def normalisation(value: str, word: str) -> Callable[[Path], None]:
    def check(tmp_path: Path) -> None:
        yaml = write_bench(tmp_path, BENCH.replace("{mean: [0.5], std: [0.5]}", value))
        with pytest.raises(ValueError, match=rf"benchmark\.yaml:6: .*{word}") as error:
            load_benchmark(yaml)
        assert "normalization" in str(error.value) or word in str(error.value)

    return check


def checkpoint_dtypes(tmp_path: Path) -> None:
    """int64 or bool tensors for float weights are refused, naming the tensor; float16 is loaded."""
    torch.manual_seed(0)
    source = create_network("rv2_tiny", 2).state_dict()
    as_int = {k: v.round().long() if v.is_floating_point() else v for k, v in source.items()}
    with pytest.raises(CheckpointError, match=r"backbone\.stem\.weight is torch\.int64"):
        load_foreign_state_dict(create_network("rv2_tiny", 2), as_int, head="require")
    as_bool = {**source, "head.weight": source["head.weight"] > 0}
    with pytest.raises(CheckpointError, match=r"head\.weight is torch\.bool"):
        load_foreign_state_dict(create_network("rv2_tiny", 2), as_bool, head="require")
    half = {k: v.half() if v.is_floating_point() else v for k, v in source.items()}
    net = create_network("rv2_tiny", 2)
    load_foreign_state_dict(net, half, head="require")
    assert torch.equal(net.head.weight, source["head.weight"].half().float().reshape(net.head.weight.shape))


def seeds(tmp_path: Path) -> None:
    """Seeds above 2**32-1 are refused with one message naming the option and the range."""
    from dfb_ood.harness.cli_bench import _split_ints

    with pytest.raises(ValueError, match=r"--seeds.*4294967295"):
        _split_ints("99999999999999999999")
    with pytest.raises(ValueError, match=r"--seed.*4294967295"):
        check_settings(BenchSettings(seed=2**64))
    assert _split_ints("0,4294967295") == [0, 2**32 - 1]


def overlap(tmp_path: Path) -> None:
    """ID test images that the far list names too: bench warns (both sets, the count), data check reports."""
    yaml = write_bench(tmp_path)
    with open(tmp_path / "lists" / "far.txt", "a") as handle:
        handle.write("images/test/1.png -1\nimages/./test/3.png -1\n")
    benchmark = load_benchmark(yaml)
    with pytest.warns(OverlapWarning, match=r"2 of the 6 images of OOD set 'far1'.*ID set 'test'"):
        check_benchmark_data(benchmark, skip_bad=False)
    reports = {r.name: r for r in check_benchmark(benchmark)}
    assert reports["far1"].status == "bad" and "far.txt" in reports["far1"].overlaps[0]
    assert all(r.ok for name, r in reports.items() if name != "far1")


SILENT = {
    "png-16-bit": sixteen_bit_png,
    "other-image-modes": other_modes,
    "std-inf": normalisation("{mean: [0.5], std: [.inf]}", "finite"),
    "std-zero": normalisation("{mean: [0.5], std: [0]}", "positive"),
    "mean-nan": normalisation("{mean: [.nan], std: [0.5]}", "finite"),
    "std-two-values": normalisation("{mean: [0.5], std: [0.5, 0.5]}", "1 or 3 numbers"),
    "checkpoint-int64-bool": checkpoint_dtypes,
    "seeds-beyond-2**32": seeds,
    "id-test-in-far-list": overlap,
}


@pytest.mark.parametrize("case", list(SILENT))
def test_odd_inputs_give_no_silent_wrong_number(tmp_path: Path, case: str) -> None:
    SILENT[case](tmp_path)


def test_a_legitimate_list_benchmark_has_no_overlap_and_passes(tmp_path: Path) -> None:
    benchmark = load_benchmark(write_bench(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error", OverlapWarning)
        check_benchmark_data(benchmark, skip_bad=False)
    assert all(report.ok for report in check_benchmark(benchmark))
