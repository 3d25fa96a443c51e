"""Array sets (``type: arrays``) and the built-in fmnist_mini benchmark they carry."""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from dfb_ood.harness.data import load_benchmark
from dfb_ood.harness.data.check import check_benchmark
from dfb_ood.harness.data.datasets import load_arrays
from dfb_ood.harness.data.fingerprint import set_fingerprint

REPO = Path(__file__).resolve().parents[2]
MINI = REPO / "configs" / "benchmarks" / "fmnist_mini"
SIZES = {"train": 2000, "val": 500, "test": 1000, "ood_val": 500, "mnist": 1000, "glyphs": 643,
         "photos": 876, "textures": 125}  # fmt: skip
PERMISSIVE_WORDS = ("MIT", "BSD", "Apache", "CC0", "public domain", "public-domain", "CC-BY-2.0", "OFL")


def test_fmnist_mini_loads_every_set_with_its_size_and_balanced_classes():
    bench = load_benchmark("fmnist_mini")
    assert bench.near.keys() == {"mnist", "glyphs"} and bench.far.keys() == {"photos", "textures"}
    for spec in bench.sets():
        images, labels = load_arrays(spec, bench)
        assert images.dtype == np.uint8 and images.shape == (SIZES[spec.name], 28, 28, 3), spec.name
        assert np.array_equal(images[..., 0], images[..., 2])  # grayscale, replicated
        if spec.is_ood:
            assert (labels == -1).all()
        else:  # the build draws the same count from every class
            assert Counter(labels.tolist()) == {c: SIZES[spec.name] // 10 for c in range(10)}


def test_fmnist_mini_sources_are_permissive_and_account_for_every_image():
    with open(MINI / "sources.tsv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert Counter(row["set"] for row in rows) == SIZES
    for row in rows:
        licence = row["licence"]
        assert "GPL" not in licence and "SA" not in licence.replace("SIL", ""), row
        assert any(word in licence for word in PERMISSIVE_WORDS), row
    # one row per array index, no duplicates within a set
    assert len({(row["set"], row["index"]) for row in rows}) == len(rows)
    licences = (MINI / "LICENSES.md").read_text(encoding="utf-8")
    for package, count in Counter(row["package"] for row in rows).items():
        assert f"| {package} |" in licences and f"| {count} |" in licences, package


def test_the_recorded_checksum_is_the_file_and_a_damaged_copy_is_refused(tmp_path):
    yaml_text = (REPO / "configs" / "benchmarks" / "fmnist_mini.yaml").read_text(encoding="utf-8")
    digest = hashlib.sha256((MINI / "fmnist_mini.npz").read_bytes()).hexdigest()
    assert yaml_text.count(f"sha256: {digest}") == 8
    shutil.copytree(MINI, tmp_path / "fmnist_mini")
    (tmp_path / "mini.yaml").write_text(yaml_text, encoding="utf-8")
    data = bytearray((tmp_path / "fmnist_mini" / "fmnist_mini.npz").read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "fmnist_mini" / "fmnist_mini.npz").write_bytes(bytes(data))
    bench = load_benchmark(str(tmp_path / "mini.yaml"))
    with pytest.raises(ValueError, match=r"fmnist_mini\.npz: SHA-256 .* does not match"):
        load_arrays(bench.test, bench)
    reports = check_benchmark(bench)
    assert all(not r.ok and "does not match" in r.error for r in reports)


def _write_bench(tmp_path: Path, arrays: dict[str, np.ndarray], extra: str = "") -> Path:
    np.savez(tmp_path / "sets.npz", **arrays)
    path = tmp_path / "bench.yaml"
    sets = {
        key: f"{{type: arrays, file: sets.npz, key: {key}{extra}}}" for key in ("tr", "va", "te", "ov", "nr")
    }
    path.write_text(
        "name: tiny_arrays\nnum_classes: 2\nimage_size: 8\nchannels: 1\n"
        "normalization: {mean: [0.5], std: [0.5]}\n"
        f"id:\n  train: {sets['tr']}\n  val: {sets['va']}\n  test: {sets['te']}\n"
        f"ood:\n  val: {sets['ov']}\n  near:\n    nr: {sets['nr']}\n",
        encoding="utf-8",
    )
    return path


def _tiny_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    out = {}
    for key in ("tr", "va", "te", "ov", "nr"):
        out[f"{key}_images"] = rng.integers(0, 256, (6, 8, 8), dtype=np.uint8)
        if key in ("tr", "va", "te"):
            out[f"{key}_labels"] = np.array([0, 1] * 3)
    return out


def test_a_set_fingerprint_covers_its_own_arrays_only(tmp_path):
    arrays = _tiny_arrays()
    bench = load_benchmark(str(_write_bench(tmp_path, arrays)))
    before = {spec.name: set_fingerprint(spec, bench) for spec in bench.sets()}
    arrays["te_images"][0, 0, 0] ^= 1
    bench = load_benchmark(str(_write_bench(tmp_path, arrays)))
    after = {spec.name: set_fingerprint(spec, bench) for spec in bench.sets()}
    assert [name for name in before if before[name] != after[name]] == ["test"]
    images, labels = load_arrays(bench.test, bench)
    assert np.array_equal(images[..., 1], arrays["te_images"]) and labels.tolist() == [0, 1] * 3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a.update(te_images=a["te_images"].astype(np.int16)), "must be uint8"),
        (lambda a: a.pop("te_images"), "no array 'te_images'.*keys in the file"),
        (lambda a: a.update(te_labels=np.array([0, 1, 2, 0, 1, 0])), "labels outside 0..1"),
        (lambda a: a.update(te_labels=np.array([0, 1])), "expected 6 integer labels"),
        (lambda a: a.pop("te_labels"), "needs te_labels"),
        (lambda a: a.update(te_images=np.zeros((0, 8, 8), np.uint8)), "non-empty"),
    ],
)
def test_bad_arrays_get_one_clear_error_naming_the_file(tmp_path, change, message):
    arrays = _tiny_arrays()
    change(arrays)
    bench = load_benchmark(str(_write_bench(tmp_path, arrays)))
    with pytest.raises(ValueError, match=message):
        load_arrays(bench.test, bench)


def test_object_arrays_are_never_unpickled(tmp_path):
    arrays = _tiny_arrays()
    arrays["te_images"] = np.array([object()], dtype=object)
    bench = load_benchmark(str(_write_bench(tmp_path, arrays)))
    with pytest.raises(ValueError, match="sets.npz: cannot read array 'te_images'"):
        load_arrays(bench.test, bench)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this platform")
def test_a_fifo_in_place_of_the_file_is_refused_without_blocking(tmp_path):
    bench_path = _write_bench(tmp_path, _tiny_arrays())
    (tmp_path / "sets.npz").unlink()
    os.mkfifo(tmp_path / "sets.npz")
    bench = load_benchmark(str(bench_path))
    with pytest.raises(ValueError, match="not a regular file"):
        load_arrays(bench.test, bench)


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("{type: arrays, key: te}", "needs file"),
        ("{type: arrays, file: sets.npz, key: ../te}", "key must be letters"),
        ("{type: arrays, file: sets.npz, key: te, sha256: abc}", "sha256 must be 64"),
    ],
)
def test_schema_errors_name_the_line(tmp_path, entry, message):
    path = _write_bench(tmp_path, _tiny_arrays())
    text = path.read_text(encoding="utf-8").replace("{type: arrays, file: sets.npz, key: te}", entry)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=rf"bench\.yaml:\d+.*{message}"):
        load_benchmark(str(path))


def test_fmnist_mini_works_from_a_wheel_installed_outside_the_repository(tmp_path):
    """The wheel carries the data; a process started elsewhere reads it (no checkout on its path)."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheel_dir), str(REPO)],
        check=True, capture_output=True,
    )  # fmt: skip
    wheel = next(wheel_dir.glob("*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True, capture_output=True,
    )  # fmt: skip
    with zipfile.ZipFile(wheel) as archive:
        roots = {name.split("/")[0] for name in archive.namelist()}
    assert {root for root in roots if not root.endswith(".dist-info")} == {"dfb_ood"}  # one import root
    code = (
        "import dfb_ood.harness as harness, sys\n"
        "from dfb_ood.harness.data import load_benchmark\n"
        "from dfb_ood.harness.data.datasets import load_arrays\n"
        "b = load_benchmark('fmnist_mini')\n"
        "assert str(harness.__file__).startswith(sys.argv[1]), harness.__file__\n"
        "print(sum(len(load_arrays(s, b)[0]) for s in b.sets()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    user_folder = tmp_path / "research"  # a user's repository with packages named like the project's
    for name in ("harness", "configs", "networks", "postprocessors", "harness/data"):
        (user_folder / name).mkdir(parents=True)
        (user_folder / name / "__init__.py").write_text(f"raise ImportError('the user\\'s own {name}')\n")
    done = subprocess.run(
        [sys.executable, "-c", code, str(target)],
        cwd=user_folder, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) == sum(SIZES.values())
