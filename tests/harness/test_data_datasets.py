"""Datasets from image lists, torchvision raw folders, image folders and shapes; and bad input."""

from __future__ import annotations

import pickle
import struct
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import dfb_ood.harness.data
from dfb_ood.harness.data import (
    ArrayDataset,
    DataWarning,
    MaskedArrayDataset,
    build_dataset,
    load_arrays,
    load_benchmark,
)
from dfb_ood.harness.data.images import ImageDecodeError
from dfb_ood.harness.data.transforms import normalize, test_transform
from tests.harness.test_data_benchmark import make_openood_root, write_png, write_yaml

HEAD = """\
name: t
num_classes: 3
class_names: [cat, dog, emu]
image_size: 8
normalization: {mean: [0.5], std: [0.5]}
"""


def stack(dataset):
    items = [dataset[i] for i in range(len(dataset))]
    return torch.stack([x for x, _ in items]), np.array([y for _, y in items])


# -- OpenOOD layout ------------------------------------------------------------------------------


@pytest.fixture
def tiny(tmp_path):
    yaml_path = make_openood_root(tmp_path / "root")
    return load_benchmark(yaml_path, data_root=tmp_path / "root")


def test_openood_layout_through_a_yaml(tiny):
    train = build_dataset(tiny.train, tiny)
    assert len(train) == 6 and list(train.labels) == [0, 0, 1, 1, 2, 2]
    image, label = train[3]
    assert image.dtype == torch.uint8 and image.shape == (3, 8, 8) and label == 1
    assert int(image[0, 0, 0]) == 11  # value 10 * label + i, as written
    far = build_dataset(tiny.far["farset"], tiny)
    image, label = far[0]
    # 12x12 grayscale OOD images: replicated to RGB, fitted to the 8x8 test size, label -1.
    assert image.shape == (3, 8, 8) and label == -1 and torch.equal(image[0], image[2])
    assert set(far.labels) == {-1}


def test_load_arrays_equals_the_dataset_items(tiny):
    for spec in tiny.sets():
        images, labels = load_arrays(spec, tiny)
        expected, expected_labels = stack(build_dataset(spec, tiny))
        assert images.dtype == np.uint8 and images.shape == (len(expected), 8, 8, 3)
        assert np.array_equal(images, expected.permute(0, 2, 3, 1).numpy())
        assert np.array_equal(labels, expected_labels) and labels.dtype == np.int64


def test_a_transform_receives_a_uint8_tensor_and_its_output_is_returned(tiny):
    seen = []

    def spy(image):
        seen.append((image.dtype, tuple(image.shape)))
        return "out"

    far = build_dataset(tiny.far["farset"], tiny, transform=spy)
    assert far[0] == ("out", -1)
    assert seen == [(torch.uint8, (3, 12, 12))]  # stored size, RGB
    normalised, _ = build_dataset(tiny.test, tiny, transform=test_transform(tiny))[0]
    plain, _ = build_dataset(tiny.test, tiny)[0]
    assert torch.allclose(normalised, normalize(plain, tiny.mean, tiny.std))
    assert torch.allclose(normalised, (plain.float() / 255 - 0.5) / 0.25, atol=1e-6)


def test_works_in_a_dataloader(tiny):
    images, labels = next(iter(DataLoader(build_dataset(tiny.train, tiny), batch_size=4)))
    assert images.shape == (4, 3, 8, 8) and labels.dtype == torch.int64


def test_list_label_forms_comments_and_absolute_paths(tmp_path):
    write_png(tmp_path / "a.png", 1)
    write_png(tmp_path / "b.png", 2)
    write_png(tmp_path / "c.png", 3)
    lines = ["# a comment", "", "a.png 1 extra fields ignored", "b.png {'label': 2, 'soft': [0.5]}"]
    (tmp_path / "l.txt").write_text("\n".join([*lines, f"{tmp_path / 'c.png'}\t0"]) + "\n")
    bench = load_benchmark(
        write_yaml(
            tmp_path / "b.yaml",
            HEAD + "id: {train: l.txt, val: l.txt, test: l.txt}\n"
            "ood: {far: {x: {type: imglist, list: l.txt, subset: [1, 3]}}}\n",
        )
    )
    train = build_dataset(bench.train, bench)
    assert list(train.labels) == [1, 2, 0]
    assert [int(train[i][0][0, 0, 0]) for i in range(3)] == [1, 2, 3]
    far = build_dataset(bench.far["x"], bench)
    assert list(far.labels) == [-1, -1] and int(far[0][0][0, 0, 0]) == 2


# -- bad input -------------------------------------------------------------------------------------


def bench_with_list(tmp_path, lines, role="id"):
    (tmp_path / "l.txt").write_text(lines)
    write_png(tmp_path / "ok.png")
    (tmp_path / "ok.txt").write_text("ok.png 0\n")
    if role == "id":
        sets = "id: {train: l.txt, val: ok.txt, test: ok.txt}\nood: {far: {x: ok.txt}}\n"
    else:
        sets = "id: {train: ok.txt, val: ok.txt, test: ok.txt}\nood: {far: {x: l.txt}}\n"
    bench = load_benchmark(write_yaml(tmp_path / "b.yaml", HEAD + sets))
    return bench, bench.train if role == "id" else bench.far["x"]


@pytest.mark.parametrize(
    ("lines", "line", "message", "error"),
    [
        ("ok.png 0\nmissing.png 1\n", 2, "image not found", FileNotFoundError),
        ("ok.png 0\nok.png\n", 2, "no label", ValueError),
        ("ok.png zero\n", 1, "label 'zero' is not an integer", ValueError),
        ("ok.png 0\nok.png 3\n", 2, "label 3 outside 0..2 in an ID list", ValueError),
        ("ok.png -1\n", 1, "label -1 outside 0..2", ValueError),
        ("ok.png {'lable': 1}\n", 1, "have no 'label'", ValueError),
    ],
)
def test_bad_list_entries_name_the_list_file_and_line(tmp_path, lines, line, message, error):
    bench, spec = bench_with_list(tmp_path, lines)
    with pytest.raises(error) as caught:
        build_dataset(spec, bench)
    assert f"{tmp_path / 'l.txt'}:{line}: " in str(caught.value) and message in str(caught.value)
    with pytest.raises(error, match=message):
        load_arrays(spec, bench)


def test_ood_lists_may_carry_any_integer_label(tmp_path):
    bench, spec = bench_with_list(tmp_path, "ok.png 7\nok.png -1\n", role="ood")
    assert list(build_dataset(spec, bench).labels) == [-1, -1]


def test_empty_and_missing_lists(tmp_path):
    bench, spec = bench_with_list(tmp_path, "\n# only a comment\n")
    empty = rf"{tmp_path / 'l.txt'}: the image list is empty \(set defined at .*b.yaml:6\)"
    with pytest.raises(ValueError, match=empty):
        build_dataset(spec, bench)
    (tmp_path / "l.txt").unlink()
    absent = rf"image list not found: {tmp_path / 'l.txt'} \(set defined at .*b.yaml:6"
    with pytest.raises(FileNotFoundError, match=absent):
        build_dataset(spec, bench)


def test_undecodable_image_names_its_list_line(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png at all")
    bench, spec = bench_with_list(tmp_path, "ok.png 0\nbad.png 1\n")
    dataset = build_dataset(spec, bench)  # existence is checked at build time, decoding on access
    assert dataset[0][1] == 0
    with pytest.raises(ImageDecodeError, match=rf"{tmp_path / 'l.txt'}:2: cannot decode image .*bad.png"):
        dataset[1]
    with pytest.raises(ValueError, match=rf"{tmp_path / 'l.txt'}:2: .*cannot decode"):
        load_arrays(spec, bench)


def test_skip_bad_warns_with_the_count_and_first_offenders(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"junk")
    lines = "ok.png 0\nmissing1.png 0\nok.png 9\nbad.png 1\nmissing2.png 2\nok.png 2\n"
    bench, spec = bench_with_list(tmp_path, lines)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dataset = build_dataset(spec, bench, skip_bad=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, DataWarning)]
    assert len(messages) == 3
    assert "skipped 1 bad list lines" in messages[0] and "l.txt:3" in messages[0]
    assert "skipped 2 missing images" in messages[1] and "l.txt:2" in messages[1] and "l.txt:5" in messages[1]
    assert "skipped 1 undecodable images" in messages[2] and "l.txt:4" in messages[2]
    assert list(dataset.labels) == [0, 2]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, labels = load_arrays(spec, bench, skip_bad=True)
    assert [str(w.message).split("skipped ")[1].split(" (--skip-bad)")[0] for w in caught] == [
        "1 bad list lines",
        "2 missing images",
        "1 undecodable images",
    ]
    assert list(labels) == [0, 2] and len(images) == 2


def test_missing_data_root_is_one_clear_error(tmp_path):
    yaml_path = make_openood_root(tmp_path / "root")
    bench = load_benchmark(yaml_path, data_root=tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError) as caught:
        build_dataset(bench.test, bench)
    text = str(caught.value)
    assert f"data root {tmp_path / 'nowhere'} does not exist" in text and "--data-root" in text
    assert f"{yaml_path}:10" in text  # the line of id.test
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_arrays(bench.test, bench)


def test_subset_beyond_the_set_is_an_error(tmp_path):
    bench, _ = bench_with_list(tmp_path, "ok.png 0\n")
    path = write_yaml(
        tmp_path / "s.yaml",
        HEAD + "id: {train: ok.txt, val: ok.txt, test: ok.txt}\n"
        "ood: {far: {x: {type: imglist, list: ok.txt, subset: [0, 5]}}}\n",
    )
    bench = load_benchmark(path)
    with pytest.raises(ValueError, match=r"s.yaml:7: subset \[0, 5\] reaches beyond the set's 1 entries"):
        build_dataset(bench.far["x"], bench)


# -- torchvision raw folders ------------------------------------------------------------------------


def write_fake_cifar10(root: Path, n: int = 6) -> np.ndarray:
    """A ``cifar-10-batches-py`` folder with ``n`` test images, in torchvision's pickle format."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    batch = {"data": images.transpose(0, 3, 1, 2).reshape(n, -1), "labels": [i % 10 for i in range(n)]}
    (folder / "test_batch").write_bytes(pickle.dumps(batch))
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": names}))
    return images


def write_fake_fashion_mnist(root: Path, n: int = 5) -> np.ndarray:
    """``FashionMNIST/raw`` idx files (big-endian header, then bytes), as torchvision reads them."""
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    images = np.random.default_rng(1).integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
    labels = np.arange(n, dtype=np.uint8) % 10
    for prefix in ("train", "t10k"):
        header = struct.pack(">iiii", 0x803, n, 28, 28)  # magic: uint8 data, 3 dimensions
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">ii", 0x801, n) + labels.tobytes())
    return images


@pytest.fixture
def no_cifar_md5(monkeypatch):
    """torchvision checks CIFAR files against the real archives' md5; a fake batch cannot match."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: Path(path).is_file())
    monkeypatch.setattr(cifar.CIFAR10, "_check_integrity", lambda self: True)


def tv_yaml(tmp_path, image_size=32, extra=""):
    text = f"""\
name: tv
num_classes: 10
image_size: {image_size}
normalization: {{mean: [0.5], std: [0.5]}}
root: data
id:
  train: {{type: torchvision, dataset: CIFAR10, split: test, subset: [0, 4]}}
  val: {{type: torchvision, dataset: CIFAR10, split: test, subset: [4, 6]}}
  test: {{type: torchvision, dataset: CIFAR10, split: test}}
ood:
  far:
    fashion: {{type: torchvision, dataset: FashionMNIST, split: test}}
{extra}"""
    return load_benchmark(write_yaml(tmp_path / "tv.yaml", text))


def test_torchvision_cifar10_and_fashion_mnist_from_raw_folders(tmp_path, no_cifar_md5):
    cifar = write_fake_cifar10(tmp_path / "data")
    fashion = write_fake_fashion_mnist(tmp_path / "data")
    bench = tv_yaml(tmp_path)
    test = build_dataset(bench.test, bench)
    assert len(test) == 6 and list(test.labels) == [0, 1, 2, 3, 4, 5]
    image, label = test[2]
    assert torch.equal(image, torch.from_numpy(cifar[2]).permute(2, 0, 1)) and label == 2
    val = build_dataset(bench.val, bench)
    assert list(val.labels) == [4, 5] and torch.equal(val[0][0], torch.from_numpy(cifar[4]).permute(2, 0, 1))
    images, labels = load_arrays(bench.train, bench)
    assert np.array_equal(images, cifar[:4]) and list(labels) == [0, 1, 2, 3]
    fashion_set = build_dataset(bench.far["fashion"], bench)
    image, label = fashion_set[1]
    assert label == -1 and image.shape == (3, 32, 32)  # 28x28 grayscale -> RGB, resized to 32
    images, labels = load_arrays(bench.far["fashion"], bench)
    assert np.array_equal(images, stack(fashion_set)[0].permute(0, 2, 3, 1).numpy())
    assert set(labels) == {-1} and len(images) == len(fashion)


def test_torchvision_sets_resized_for_a_128px_protocol(tmp_path, no_cifar_md5):
    write_fake_cifar10(tmp_path / "data")
    write_fake_fashion_mnist(tmp_path / "data")
    bench = tv_yaml(tmp_path, image_size=128)
    images, _ = load_arrays(bench.test, bench)
    assert images.shape == (6, 128, 128, 3)
    assert np.array_equal(images, stack(build_dataset(bench.test, bench))[0].permute(0, 2, 3, 1).numpy())


def test_missing_torchvision_set_says_how_to_get_it(tmp_path):
    bench = tv_yaml(tmp_path)
    with pytest.raises(FileNotFoundError) as caught:
        build_dataset(bench.far["fashion"], bench)
    text = str(caught.value)
    assert "tv.yaml:12" in text and "FashionMNIST" in text and "download=True" in text
    assert "download: true" in text


def test_torchvision_label_outside_the_id_range(tmp_path, no_cifar_md5):
    write_fake_cifar10(tmp_path / "data")
    cifar = "{type: torchvision, dataset: CIFAR10, split: test}"
    text = HEAD + f"root: data\nid:\n  train: {cifar}\n  val: {cifar}\n  test: {cifar}\n"
    text += f"ood: {{far: {{x: {cifar}}}}}\n"
    bench = load_benchmark(write_yaml(tmp_path / "few.yaml", text))
    with pytest.raises(ValueError, match=r"few.yaml:8: 3 labels outside 0..2 in ID set 'train'"):
        build_dataset(bench.train, bench)
    assert set(build_dataset(bench.far["x"], bench).labels) == {-1}
    bad_split = text.replace("split: test}\n  val", "split: val}\n  val")
    bench = load_benchmark(write_yaml(tmp_path / "split.yaml", bad_split))
    with pytest.raises(ValueError, match="split.yaml:8: CIFAR10 has splits 'train' and 'test', not 'val'"):
        build_dataset(bench.train, bench)


# -- plain image folders --------------------------------------------------------------------------


def test_image_folders_for_id_and_ood(tmp_path):
    for label, name in enumerate(["emu", "cat", "dog"]):  # written out of order on purpose
        for i in range(2):
            write_png(tmp_path / "data" / "train" / name / f"{i}.png", value=10 * label + i)
    write_png(tmp_path / "data" / "ood" / "a.png", 1)
    write_png(tmp_path / "data" / "ood" / "deep" / "b.jpg", 2)
    (tmp_path / "data" / "ood" / "notes.txt").write_text("not an image")
    bench = load_benchmark(
        write_yaml(
            tmp_path / "f.yaml",
            HEAD
            + """\
root: data
id:
  train: {type: folder, path: train}
  val: {type: folder, path: train, classes: [emu, cat, dog]}
  test: {type: folder, path: train}
ood:
  far: {o: {type: folder, path: ood}}
""",
        )
    )
    train = build_dataset(bench.train, bench)
    # labels follow the benchmark's class_names (cat, dog, emu), not the folder creation order
    assert list(train.labels) == [0, 0, 1, 1, 2, 2] and int(train[0][0][0, 0, 0]) == 10
    assert list(build_dataset(bench.val, bench).labels) == [0, 0, 1, 1, 2, 2]
    assert int(build_dataset(bench.val, bench)[0][0][0, 0, 0]) == 0
    ood = build_dataset(bench.far["o"], bench)
    assert len(ood) == 2 and list(ood.labels) == [-1, -1]


def test_bad_image_folders(tmp_path):
    write_png(tmp_path / "data" / "two" / "a" / "0.png")
    write_png(tmp_path / "data" / "two" / "b" / "0.png")
    write_png(tmp_path / "data" / "loose" / "0.png")
    (tmp_path / "data" / "empty").mkdir()
    text = HEAD + "root: data\nid: {train: {type: folder, path: %s}, val: x.txt, test: x.txt}\n"
    text += "ood: {far: {x: x.txt}}\n"
    cases = [
        ("two", ValueError, "found 2 class subfolders"),
        ("loose", ValueError, "images lie directly in it"),
        ("absent", FileNotFoundError, "image folder not found"),
        ("empty", ValueError, "found 0 class"),
    ]
    for folder, error, message in cases:
        bench = load_benchmark(write_yaml(tmp_path / f"{folder}.yaml", text % folder))
        with pytest.raises(error, match=message):
            build_dataset(bench.train, bench)


# -- shapes and in-memory sets --------------------------------------------------------------------


@pytest.fixture
def fake_shapes(monkeypatch):
    """A stand-in for harness.data.shapes with its exact API, so these tests do not depend on it."""
    calls = []

    def generate_set(name, count=None, seed=0, size=32):
        calls.append((name, count, seed, size))
        n = count or 5
        images = np.full((n, size, size, 3), seed, dtype=np.uint8)
        labels = np.arange(n, dtype=np.int64) % 6 if name in ("train", "val", "test") else np.full(n, -1)
        return images, labels

    module = types.ModuleType("dfb_ood.harness.data.shapes")
    module.generate_set = generate_set
    module.SHAPES_CLASSES = ("circle", "square", "triangle", "plus", "ring", "star")
    monkeypatch.setitem(sys.modules, "dfb_ood.harness.data.shapes", module)
    monkeypatch.setattr(dfb_ood.harness.data, "shapes", module, raising=False)
    return calls


def test_shapes_sets_through_the_shipped_yaml(fake_shapes):
    bench = load_benchmark("shapes")
    train = build_dataset(bench.train, bench)
    assert isinstance(train, ArrayDataset) and len(train) == 5 and train[1][1] == 1
    images, labels = load_arrays(bench.far["noise"], bench)
    assert images.shape == (5, 64, 64, 3) and set(labels) == {-1}
    assert ("train", None, 0, 64) in fake_shapes and ("noise", None, 0, 64) in fake_shapes


def test_real_shapes_generator_loads():
    pytest.importorskip("dfb_ood.harness.data.shapes")
    bench = load_benchmark("shapes")
    images, labels = load_arrays(bench.val, bench)
    assert images.dtype == np.uint8 and images.shape[1:] == (64, 64, 3)
    assert labels.min() >= 0 and labels.max() < bench.num_classes
    assert set(load_arrays(bench.near["near_unseen_shapes"], bench)[1]) == {-1}


def test_array_dataset_forms():
    rgb = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    dataset = ArrayDataset(rgb, [3, 4])
    image, label = dataset[1]
    assert image.shape == (3, 4, 4) and label == 4
    assert torch.equal(image, torch.from_numpy(rgb[1]).permute(2, 0, 1))
    gray = ArrayDataset(np.zeros((2, 4, 4), dtype=np.uint8), np.zeros(2), transform=lambda x: x.float().sum())
    assert gray[0] == (0.0, 0) and gray.images.shape == (2, 3, 4, 4)
    fitted = ArrayDataset(np.zeros((1, 6, 10, 3), dtype=np.uint8), [0], fit=(4, 4))
    assert fitted[0][0].shape == (3, 4, 4)
    with pytest.raises(ValueError, match="uint8"):
        ArrayDataset(np.zeros((1, 4, 4, 3), dtype=np.float32), [0])
    with pytest.raises(ValueError, match="2 images but 3 labels"):
        ArrayDataset(rgb, [0, 1, 2])


def test_masked_array_dataset():
    images = np.zeros((2, 4, 4, 3), dtype=np.uint8)
    masks = np.full((2, 4, 4), 7, dtype=np.uint8)
    image, mask = MaskedArrayDataset(images, masks)[0]
    assert image.shape == (3, 4, 4) and mask.dtype == torch.int64 and int(mask[0, 0]) == 7
    joint = MaskedArrayDataset(images, masks, transform=lambda x, m: (x.shape, m.shape))
    assert joint[1] == ((3, 4, 4), (4, 4))


# -- text files from other systems, and what --skip-bad says and does -------------------------------


@pytest.mark.parametrize(
    ("encoding", "newline"),
    [("utf-8-sig", "\r\n"), ("utf-8-sig", "\n"), ("utf-8", "\r\n"), ("utf-8", "\r"), ("utf-16", "\r\n")],
)
def test_lists_saved_on_windows_are_read(tmp_path, encoding, newline):
    # Notepad writes a UTF-8 byte-order mark, PowerShell 5's `>` UTF-16; both write CRLF.
    write_png(tmp_path / "a.png", 1)
    write_png(tmp_path / "b.png", 2)
    bench, spec = bench_with_list(tmp_path, "")
    (tmp_path / "l.txt").write_bytes(newline.join(["a.png 1", "b.png 2", ""]).encode(encoding))
    images, labels = load_arrays(spec, bench)
    assert list(labels) == [1, 2] and [int(image[0, 0, 0]) for image in images] == [1, 2]


def test_a_byte_order_mark_mid_list_is_ignored_and_invisible_characters_are_shown(tmp_path):
    write_png(tmp_path / "a.png", 1)
    write_png(tmp_path / "b.png", 2)
    # Two Windows lists joined with cat: the second one's mark starts line 2.
    bench, spec = bench_with_list(tmp_path, "a.png 0\n\ufeffb.png 1\n")
    assert list(build_dataset(spec, bench).labels) == [0, 1]
    (tmp_path / "l.txt").write_text("a.png 0\nb\u200b.png 1\n")
    with pytest.raises(FileNotFoundError, match=r"invisible characters: .*b\\u200b\.png"):
        build_dataset(spec, bench)


def test_a_list_in_another_encoding_names_the_line_and_the_fix(tmp_path):
    bench, spec = bench_with_list(tmp_path, "")
    (tmp_path / "l.txt").write_bytes("ok.png 0\ncaf\u00e9.png 1\n".encode("latin-1"))
    with pytest.raises(
        ValueError, match=rf"{tmp_path / 'l.txt'}:2: not a UTF-8 text file .*save it as UTF-8"
    ):
        build_dataset(spec, bench)


def test_errors_offer_the_cli_option_and_say_what_it_does(tmp_path):
    bench, spec = bench_with_list(tmp_path, "ok.png 0\nmissing.png 1\nok.png 7\n")
    with pytest.raises(ValueError) as caught:
        load_arrays(spec, bench)
    text = str(caught.value)
    assert "rerun with --skip-bad to leave the bad entries out and go on" in text
    assert "skip_bad=True /" not in text
    (tmp_path / "l.txt").write_text("ok.png 0\nmissing.png 1\n")
    with pytest.raises(FileNotFoundError, match="missing.png; rerun with --skip-bad to leave the bad"):
        load_arrays(spec, bench)


def test_skip_bad_names_every_skipped_file_and_keeps_images_and_labels_aligned(tmp_path):
    lines = []
    for i in range(12):
        if i % 2:
            lines.append(f"gone{i}.png {i % 3}")  # six missing files
        else:
            write_png(tmp_path / f"img{i}.png", value=10 * i)
            lines.append(f"img{i}.png {i % 3}")
    bench, spec = bench_with_list(tmp_path, "\n".join(lines) + "\n")
    with pytest.warns(DataWarning) as caught:
        images, labels = load_arrays(spec, bench, skip_bad=True)
    (warning,) = caught
    message = str(warning.message)
    assert "skipped 6 missing images (--skip-bad)" in message
    for i in range(1, 12, 2):
        assert f"l.txt:{i + 1}: image not found: {tmp_path / f'gone{i}.png'}" in message
    assert len(warning.message.problems) == 6
    kept = range(0, 12, 2)
    assert [int(image[0, 0, 0]) for image in images] == [10 * i for i in kept]
    assert list(labels) == [i % 3 for i in kept]


def test_when_every_entry_is_bad_skip_bad_is_not_offered(tmp_path):
    (tmp_path / "img").mkdir()
    bench, spec = bench_with_list(tmp_path, "img/a.png 0\nimg/b.png 1\n")
    for skip_bad in (False, True):
        with pytest.raises(FileNotFoundError) as caught:
            load_arrays(spec, bench, skip_bad=skip_bad)
        text = str(caught.value)
        assert "all 2 entries of set 'train'" in text and "nothing to go on with" in text
        assert "--skip-bad" not in text and f"read relative to {tmp_path}" in text


def test_a_missing_image_folder_is_named_instead_of_every_file(tmp_path):
    write_png(tmp_path / "ok.png")
    (tmp_path / "l.txt").write_text("a.png 0\nb.png 1\n")
    path = write_yaml(
        tmp_path / "b.yaml",
        HEAD + "id: {train: {type: imglist, list: l.txt, images: pics}, val: l.txt, test: l.txt}\n"
        "ood: {far: {x: l.txt}}\n",
    )
    bench = load_benchmark(path)
    with pytest.raises(FileNotFoundError, match=rf"image folder {tmp_path / 'pics'} does not exist: .*l.txt"):
        load_arrays(bench.train, bench, skip_bad=True)


def test_a_subset_counts_bad_lines_so_skipping_never_shifts_it(tmp_path):
    for i in range(6):
        write_png(tmp_path / f"{i}.png", value=i)
    lines = "0.png 0\n1.png nine\n2.png 2\n3.png 0\n4.png 1\n5.png 2\n"  # line 2 is bad
    bench, _ = bench_with_list(tmp_path, lines)
    path = write_yaml(
        tmp_path / "s.yaml",
        HEAD + "id: {train: ok.txt, val: ok.txt, test: ok.txt}\n"
        "ood: {far: {head: {type: imglist, list: l.txt, subset: [0, 3]},"
        " tail: {type: imglist, list: l.txt, subset: [3, 6]}}}\n",
    )
    bench = load_benchmark(path)
    images, _ = load_arrays(bench.far["tail"], bench)  # the bad line is not in this subset
    assert [int(image[0, 0, 0]) for image in images] == [3, 4, 5]
    with pytest.raises(ValueError, match="l.txt:2: label 'nine'"):
        load_arrays(bench.far["head"], bench)
    with pytest.warns(DataWarning, match="l.txt:2"):
        images, _ = load_arrays(bench.far["head"], bench, skip_bad=True)
    assert [int(image[0, 0, 0]) for image in images] == [0, 2]


def test_skip_bad_also_drops_unreadable_items_of_file_backed_torchvision_sets(tmp_path, monkeypatch):
    class FileBacked(torch.utils.data.Dataset):  # like DTD or Places365: one file per item
        _labels = [0, 1, 2, 1]

        def __len__(self):
            return 4

        def __getitem__(self, index):
            if index == 2:
                raise OSError("image file is truncated")
            return np.full((8, 8, 3), index, dtype=np.uint8), self._labels[index]

    monkeypatch.setattr(dfb_ood.harness.data.datasets, "open_torchvision", lambda spec: FileBacked())
    path = write_yaml(
        tmp_path / "b.yaml",
        HEAD + "id: {train: {type: torchvision, dataset: DTD}, val: ok.txt, test: ok.txt}\n"
        "ood: {far: {x: ok.txt}}\n",
    )
    bench = load_benchmark(path)
    with pytest.raises(
        ValueError, match="DTD item 2: cannot read the image: .*truncated; rerun with --skip-bad"
    ):
        load_arrays(bench.train, bench)
    with pytest.warns(DataWarning, match="skipped 1 undecodable images"):
        images, labels = load_arrays(bench.train, bench, skip_bad=True)
    assert [int(image[0, 0, 0]) for image in images] == [0, 1, 3] and list(labels) == [0, 1, 1]
