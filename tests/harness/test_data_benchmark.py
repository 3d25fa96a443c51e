"""Benchmark YAML schema: shipped configs, the fmnist sample as is, and errors that name file:line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfb_ood.harness.data import available_benchmarks, load_benchmark
from dfb_ood.harness.data.benchmark import default_data_root

REPO = Path(__file__).resolve().parents[2]
FMNIST = REPO.parent / "shared" / "data" / "fmnist-ood"
FMNIST_YAML = FMNIST / "benchmark.yaml"
needs_fmnist = pytest.mark.skipif(
    not FMNIST_YAML.is_file(), reason=f"shared sample data not found at {FMNIST} (the repo's ../shared)"
)

# METHOD.md section 5 (OpenOOD v1.5) and the DFB paper's protocol.
EXPECTED_GROUPS = {
    "cifar10": (["cifar100", "tin"], ["mnist", "svhn", "texture", "places365"]),
    "cifar100": (["cifar10", "tin"], ["mnist", "svhn", "texture", "places365"]),
    "imagenet200": (["ssb_hard", "ninco"], ["inaturalist", "textures", "openimage_o"]),
    "imagenet": (["ssb_hard", "ninco"], ["inaturalist", "textures", "openimage_o"]),
    "imagenet_subset": (["ssb_hard", "ninco"], ["inaturalist", "textures", "openimage_o"]),
    "cifar10_dfb": (["cifar100"], ["svhn", "places365", "texture"]),
    "cifar100_dfb": (["cifar10"], ["svhn", "places365", "texture"]),
    "shapes": (["near_unseen_shapes"], ["plain_textures", "noise"]),
    "fmnist_mini": (["mnist", "glyphs"], ["photos", "textures"]),
}


# -- helpers shared by the data tests (no test_ prefix: importing them collects nothing) --------


def write_png(path: Path, value: int = 128, size: int = 8, mode: str = "RGB") -> None:
    """A small solid image; distinct values let tests tell images apart after loading."""
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "L": 1}[mode]
    array = np.full((size, size, channels), value, dtype=np.uint8)
    if channels == 1:
        array = array[:, :, 0]
    Image.fromarray(array, mode=mode).save(path)


def make_openood_root(root: Path, *, num_classes: int = 3, per_class: int = 2, ood: int = 4) -> Path:
    """A tiny data root in OpenOOD layout: lists under benchmark_imglist/tiny, images under images_classic.

    Returns the path of a benchmark YAML (outside the data root, using ``{data_root}``).
    """
    lists = root / "benchmark_imglist" / "tiny"
    lists.mkdir(parents=True)
    for split in ("train", "val", "test"):
        lines = []
        for label in range(num_classes):
            for i in range(per_class):
                relative = f"tiny/{split}/c{label}/{i:04d}.png"
                write_png(root / "images_classic" / relative, value=10 * label + i)
                lines.append(f"{relative} {label}")
        (lists / f"{split}_tiny.txt").write_text("\n".join(lines) + "\n")
    for name in ("oodval", "near", "far"):
        lines = []
        for i in range(ood):
            relative = f"{name}/{i:04d}.png"
            write_png(root / "images_classic" / relative, value=200 + i, size=12, mode="L")
            lines.append(f"{relative} -1")
        (lists / f"test_{name}.txt").write_text("\n".join(lines) + "\n")
    yaml_path = root.parent / "tiny_benchmark.yaml"
    yaml_path.write_text(
        "name: tiny\n"
        f"num_classes: {num_classes}\n"
        "image_size: 8\n"
        "normalization: {mean: [0.5], std: [0.25]}\n"
        'root: "{data_root}"\n'
        "images: images_classic\n"
        "id:\n"
        "  train: benchmark_imglist/tiny/train_tiny.txt\n"
        "  val: benchmark_imglist/tiny/val_tiny.txt\n"
        "  test: benchmark_imglist/tiny/test_tiny.txt\n"
        "ood:\n"
        "  val: benchmark_imglist/tiny/test_oodval.txt\n"
        "  near:\n"
        "    nearset: benchmark_imglist/tiny/test_near.txt\n"
        "  far:\n"
        "    farset: benchmark_imglist/tiny/test_far.txt\n"
    )
    return yaml_path


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


MINIMAL = """\
name: mini
num_classes: 2
image_size: 8
normalization: {mean: [0.5], std: [0.5]}
id:
  train: train.txt
  val: val.txt
  test: test.txt
ood:
  far:
    noise: noise.txt
"""


# -- shipped configs ---------------------------------------------------------------------------


def test_every_shipped_benchmark_is_listed():
    assert set(available_benchmarks()) == set(EXPECTED_GROUPS)


@pytest.mark.parametrize("name", sorted(EXPECTED_GROUPS))
def test_shipped_config_parses_with_a_dummy_root_and_has_the_right_groups(name, tmp_path):
    dummy = tmp_path / "no-data-here"
    bench = load_benchmark(name, data_root=dummy)
    near, far = EXPECTED_GROUPS[name]
    assert list(bench.near) == near
    assert list(bench.far) == far
    assert bench.ood_val is not None
    assert len(bench.class_names) == bench.num_classes
    assert bench.shipped
    for spec in bench.sets():
        if spec.type == "imglist":
            assert spec.params["list"].is_relative_to(dummy), spec
            assert spec.params["list"].name.endswith(".txt")
    if name not in ("shapes", "fmnist_mini"):  # built in: no data root
        assert bench.uses_data_root and bench.data_root == dummy
        assert bench.hint.startswith(f"run `harness data download {name}`")


def test_openood_statistics_sizes_and_image_folders():
    c10 = load_benchmark("cifar10", data_root=Path("/d"))
    assert c10.mean == (0.4914, 0.4822, 0.4465) and c10.std == (0.2470, 0.2435, 0.2616)
    assert (c10.test_resize, c10.test_crop) == (32, 32)
    assert c10.test.params["list"] == Path("/d/benchmark_imglist/cifar10/test_cifar10.txt")
    assert c10.test.params["images"] == Path("/d/images_classic")
    assert c10.ood_val.params["list"].name == "val_tin.txt"
    c100 = load_benchmark("cifar100", data_root=Path("/d"))
    assert c100.mean == (0.5071, 0.4867, 0.4408) and c100.std == (0.2675, 0.2565, 0.2761)
    assert len(set(c100.class_names)) == 100
    for name in ("imagenet", "imagenet200"):
        bench = load_benchmark(name, data_root=Path("/d"))
        assert (bench.test_resize, bench.test_crop, bench.image_size) == (256, 224, 224)
        assert bench.mean == (0.485, 0.456, 0.406) and bench.std == (0.229, 0.224, 0.225)
        assert bench.test.params["images"] == Path("/d/images_largescale")
        # OpenOOD keeps Textures under images_classic even for the ImageNet benchmarks.
        assert bench.far["textures"].params["images"] == Path("/d/images_classic")
        assert bench.ood_val.params["list"].name == "val_openimage_o.txt"


@pytest.mark.parametrize("name", ["cifar10_dfb", "cifar100_dfb"])
def test_dfb_protocol_is_128px_with_half_normalisation(name):
    bench = load_benchmark(name, data_root=Path("/d"))
    assert bench.image_size == 128 and bench.test_resize == (128, 128)
    assert bench.mean == (0.5, 0.5, 0.5) and bench.std == (0.5, 0.5, 0.5)
    train = {"recipe": "paper", "resize": 160, "crop": 128, "pad": 4, "flip": True}
    assert bench.transforms["train"] == train
    assert bench.transforms["dense"] == {"scale": (0.5, 2.0), "crop": 128, "flip": True, "ignore_index": 255}
    other = "cifar100" if name == "cifar10_dfb" else "cifar10"
    assert set(bench.ood_sets()) == {other, "svhn", "places365", "texture"}


def test_shapes_config_matches_the_generator():
    shapes = pytest.importorskip("dfb_ood.harness.data.shapes")
    bench = load_benchmark("shapes")
    assert bench.class_names == tuple(shapes.SHAPES_CLASSES)
    assert bench.mean == bench.std == (0.5, 0.5, 0.5)
    # `textures` (ID shapes on textures) is a covariate shift, not OOD: left out of the benchmark
    assert {spec.params["set"] for spec in bench.sets()} == set(shapes.SHAPES_SETS) - {"textures"}
    assert set(bench.far) == {"plain_textures", "noise"} and bench.image_size == 64


def test_data_root_defaults_to_env_then_dot_data(monkeypatch, tmp_path):
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path))
    assert default_data_root() == tmp_path
    assert load_benchmark("cifar10").data_root == tmp_path
    monkeypatch.delenv("HARNESS_DATA")
    monkeypatch.chdir(tmp_path)
    assert default_data_root() == tmp_path / "data"


# -- the fmnist sample YAML, as is ---------------------------------------------------------------


@needs_fmnist
def test_fmnist_yaml_is_accepted_as_is():
    bench = load_benchmark(FMNIST_YAML)
    assert bench.name == "fmnist" and bench.num_classes == 10 and bench.image_size == 28
    assert bench.channels == 1
    assert bench.mean == (0.2869,) * 3 and bench.std == (0.3531,) * 3  # broadcast to RGB
    assert bench.class_names[0] == "T-shirt/top"
    assert list(bench.near) == ["mnist", "glyphs"] and list(bench.far) == ["textures", "photos"]
    assert bench.train.params["list"] == FMNIST / "benchmark_imglist/fmnist/train_fmnist.txt"
    assert bench.train.params["images"] == FMNIST  # relative to the YAML's folder
    assert bench.train.source == f"{FMNIST_YAML}:13"
    assert not bench.uses_data_root and bench.extra["seed"] == 0


# -- schema extensions ---------------------------------------------------------------------------


def test_every_set_type_and_the_relative_root(tmp_path):
    yaml_path = write_yaml(
        tmp_path / "b.yaml",
        """\
name: mixed
num_classes: 10
image_size: 32
normalization: {mean: [0.1, 0.2, 0.3], std: [0.4, 0.5, 0.6]}
root: data
images: imgs
transforms:
  test: {resize: 36, crop: 32}
  train: {recipe: paper, resize: 40}
id:
  train: {type: torchvision, dataset: CIFAR10, split: train, subset: [0, 45000]}
  val: {type: torchvision, dataset: CIFAR10, split: train, subset: [45000, 50000]}
  test: {type: torchvision, dataset: CIFAR10, split: test, root: elsewhere, download: true}
ood:
  near:
    lists: {type: imglist, list: lists/x.txt, images: other}
    plain: lists/y.txt
  far:
    folder: {type: folder, path: /abs/folder}
    gen: {type: shapes, set: noise, count: 10, seed: 3}
""",
    )
    bench = load_benchmark(yaml_path)
    data = tmp_path / "data"
    assert bench.root == data and not bench.uses_data_root
    assert bench.ood_val is None
    assert bench.train.params == {
        "subset": (0, 45000),
        "dataset": "CIFAR10",
        "split": "train",
        "root": data,
        "download": False,
        "options": {},
    }
    assert bench.test.params["root"] == data / "elsewhere" and bench.test.params["download"] is True
    assert bench.near["lists"].params["images"] == data / "other"
    plain = {"subset": None, "list": data / "lists/y.txt", "images": data / "imgs"}
    assert bench.near["plain"].params == plain
    assert bench.far["folder"].params["path"] == Path("/abs/folder")
    assert bench.far["gen"].params == {"subset": None, "set": "noise", "count": 10, "seed": 3, "size": 32}
    assert bench.test_resize == 36 and bench.transforms["train"]["resize"] == 40
    assert bench.far["gen"].role == "far" and bench.far["gen"].is_ood and not bench.train.is_ood
    assert [s.name for s in bench.sets()] == ["train", "val", "test", "lists", "plain", "folder", "gen"]
    assert bench.get_set("gen") is bench.far["gen"]


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        (MINIMAL.replace("image_size: 8", "image_sise: 8"), 3, "unknown key 'image_sise'"),
        (MINIMAL.replace("std: [0.5]", "std: [0.5, 0.5]"), 4, "std must be 1 or 3 numbers"),
        (MINIMAL.replace("std: [0.5]", "std: [0]"), 4, "std must be positive"),
        (MINIMAL.replace("  val: val.txt\n", ""), 5, "id.val is required"),
        (
            MINIMAL.replace("noise: noise.txt", "noise: {type: imglst, list: x}"),
            11,
            "set type must be one of",
        ),
        (MINIMAL.replace("noise: noise.txt", "noise: {type: imglist, lst: x.txt}"), 11, "unknown key 'lst'"),
        (MINIMAL.replace("noise: noise.txt", "test: x.txt"), 11, "reserved or repeated"),
        (MINIMAL.replace("noise: noise.txt", "noise: {type: folder, path: x, subset: [5, 2]}"), 11, "subset"),
        (MINIMAL.replace("train: train.txt", 'train: "{dataroot}/t"'), 6, "unknown placeholder {dataroot}"),
        (MINIMAL.replace("  far:\n    noise: noise.txt\n", "  far: {}\n"), 9, "at least one near or far"),
        (MINIMAL + "class_names: [a]\n", 12, "class_names must list num_classes=2"),
        (
            MINIMAL.replace("noise: noise.txt", "noise: {type: shapes, set: noise, count: -5}"),
            11,
            "count must be an integer >= 1, got -5",
        ),
        (
            MINIMAL.replace("noise: noise.txt", "noise: {type: imglist, list: n.txt, subset: [-1, 3]}"),
            11,
            "subset",
        ),
        (
            MINIMAL.replace("num_classes: 2", "num_classes: 0"),
            2,
            "num_classes must be an integer >= 1, got 0",
        ),
        (MINIMAL + "transforms: {test: {resize: 4}}\n", 12, "smaller than the crop"),
        (MINIMAL + "transforms: {train: {recipe: fancy}}\n", 12, "unknown recipe 'fancy'"),
        (MINIMAL.replace("num_classes: 2", "num_classes: two"), 2, "num_classes must be an integer"),
    ],
)
def test_schema_errors_name_the_file_and_line(tmp_path, text, line, message):
    path = write_yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(ValueError) as caught:
        load_benchmark(path)
    assert f"{path}:{line}:" in str(caught.value)
    assert message in str(caught.value)


def test_invalid_yaml_and_unknown_names(tmp_path):
    path = write_yaml(tmp_path / "broken.yaml", MINIMAL + "ood: [unclosed\n")
    with pytest.raises(ValueError, match=r"broken\.yaml: invalid YAML at line"):
        load_benchmark(path)
    with pytest.raises(ValueError, match="unknown benchmark 'cifar11'.*cifar10"):
        load_benchmark("cifar11")
    with pytest.raises(FileNotFoundError, match="benchmark file not found"):
        load_benchmark(tmp_path / "absent.yaml")
    with pytest.raises(ValueError, match="missing required key 'ood'"):
        load_benchmark(write_yaml(tmp_path / "no_ood.yaml", MINIMAL.split("ood:")[0]))


def test_every_complete_example_in_the_docs_parses(tmp_path):
    text = (REPO / "docs" / "benchmarks.md").read_text()
    blocks = [block.split("```", 1)[0] for block in text.split("```yaml\n")[1:]]
    examples = [block for block in blocks if block.startswith("name:")]
    assert len(examples) == 5
    for i, block in enumerate(examples):
        bench = load_benchmark(write_yaml(tmp_path / f"example{i}.yaml", block), data_root=tmp_path)
        assert bench.sets()
    snippet = next(block for block in blocks if block.startswith("# imglist"))
    sets = "\n".join(f"    {line}" for line in snippet.splitlines() if line and not line.startswith("#"))
    bench = load_benchmark(write_yaml(tmp_path / "sets.yaml", MINIMAL.replace("    noise: noise.txt", sets)))
    assert [bench.far[name].type for name in bench.far] == ["imglist", "torchvision", "folder", "shapes"]


def test_yaml_saved_on_windows_is_read(tmp_path):
    text = MINIMAL.replace("\n", "\r\n")
    path = tmp_path / "win.yaml"
    path.write_bytes(text.encode("utf-8-sig"))
    bench = load_benchmark(path)
    assert bench.name == "mini" and bench.test.source == f"{path}:8"
    path.write_bytes(text.encode("utf-16"))
    assert load_benchmark(path).num_classes == 2


def test_a_repeated_key_is_an_error_not_a_lost_set(tmp_path):
    text = MINIMAL.replace("  far:\n", "  near:\n    a: a.txt\n  far:\n") + "  near:\n    b: b.txt\n"
    path = write_yaml(tmp_path / "twice.yaml", text)
    with pytest.raises(ValueError, match=rf"{path}:14: key 'ood.near' appears twice \(first at line 10\)"):
        load_benchmark(path)
