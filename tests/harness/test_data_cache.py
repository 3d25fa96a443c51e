"""The decoded-image cache: a second load reads the cache; any change to a file misses it; a cache
that cannot be written or read never fails a run."""

from __future__ import annotations

import errno
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from dfb_ood.harness.data import DataWarning, load_benchmark
from dfb_ood.harness.data.cache import CacheWarning, cache_root
from dfb_ood.harness.data.datasets import load_arrays


def write_benchmark(root):
    (root / "img").mkdir()
    lines = []
    for i in range(6):
        Image.fromarray(np.full((8, 8, 3), 40 * i, dtype=np.uint8)).save(root / "img" / f"{i}.png")
        lines.append(f"img/{i}.png {i % 2}")
    (root / "train.txt").write_text("\n".join(lines) + "\n")
    (root / "b.yaml").write_text(
        "name: tiny\nnum_classes: 2\nclass_names: [a, b]\nimage_size: 8\nchannels: 3\n"
        "normalization: {mean: [0.5], std: [0.5]}\n"
        "id: {train: train.txt, val: train.txt, test: train.txt}\nood: {near: {o: train.txt}}\n"
    )
    return load_benchmark(root / "b.yaml")


def test_second_load_comes_from_the_cache_and_changes_invalidate_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    benchmark = write_benchmark(tmp_path)
    images, labels = load_arrays(benchmark.train, benchmark)
    entries = list(cache_root().iterdir())
    assert len(entries) == 1 and (entries[0] / "images.npy").is_file()
    again, again_labels = load_arrays(benchmark.train, benchmark)
    assert isinstance(again, np.memmap)  # served from the cache, not decoded
    np.testing.assert_array_equal(again, images)
    np.testing.assert_array_equal(again_labels, labels)

    # Rewrite one image (new content, new mtime): a new key, decoded afresh.
    Image.fromarray(np.full((8, 8, 3), 255, dtype=np.uint8)).save(tmp_path / "img" / "0.png")
    os.utime(tmp_path / "img" / "0.png", ns=(1, 10**18))
    fresh, _ = load_arrays(benchmark.train, benchmark)
    assert not isinstance(fresh, np.memmap) and fresh[0].min() == 255
    assert len(list(cache_root().iterdir())) == 2


def test_cache_can_be_turned_off(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", "off")
    benchmark = write_benchmark(tmp_path)
    assert cache_root() is None
    images, _ = load_arrays(benchmark.train, benchmark)
    again, _ = load_arrays(benchmark.train, benchmark)
    assert not isinstance(again, np.memmap)
    np.testing.assert_array_equal(again, images)


# -- a cache that cannot be written never fails a run, and never keeps half an entry ---------------


def cache_warnings(caught):
    return [str(w.message) for w in caught if issubclass(w.category, CacheWarning)]


def load_twice_and_check(benchmark, expected):
    """Two sets, each loaded twice: right pixels every time; the warnings that came, as text."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for spec in (benchmark.train, benchmark.near["o"], benchmark.train):
            images, labels = load_arrays(spec, benchmark)
            np.testing.assert_array_equal(images, expected[0])
            np.testing.assert_array_equal(labels, expected[1] if spec is benchmark.train else -1)
    return cache_warnings(caught)


@pytest.fixture
def uncached(tmp_path, monkeypatch):
    """The benchmark and what load_arrays gives for its train set without a cache."""
    monkeypatch.setenv("HARNESS_CACHE", "off")
    benchmark = write_benchmark(tmp_path)
    expected = load_arrays(benchmark.train, benchmark)
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    return benchmark, expected


@pytest.mark.parametrize("code", [errno.EROFS, errno.EACCES])
def test_a_read_only_cache_falls_back_with_one_warning(uncached, tmp_path, monkeypatch, code):
    # Tests run as root, which ignores file modes: make every mkdir fail as a read-only mount does.
    def refuse(path, *args, **kwargs):
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(os, "mkdir", refuse)
    (message,) = load_twice_and_check(*uncached)
    assert f"cache in {tmp_path / 'cache' / 'decoded'}" in message
    assert os.strerror(code) in message and "HARNESS_CACHE=off" in message
    assert not (tmp_path / "cache").exists()


def test_a_cache_path_under_a_file_falls_back(uncached, tmp_path):
    (tmp_path / "cache").write_text("not a folder")
    (message,) = load_twice_and_check(*uncached)
    assert "HARNESS_CACHE=off" in message and (tmp_path / "cache").read_text() == "not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_a_cache_folder_without_write_permission_falls_back(uncached, tmp_path):
    (tmp_path / "cache" / "decoded").mkdir(parents=True)
    (tmp_path / "cache" / "decoded").chmod(0o555)
    try:
        (message,) = load_twice_and_check(*uncached)
    finally:
        (tmp_path / "cache" / "decoded").chmod(0o755)
    assert "Permission denied" in message and list((tmp_path / "cache" / "decoded").iterdir()) == []


@pytest.mark.parametrize("failing_write", [1, 2])  # the images, then the labels after the images
def test_a_full_disk_mid_write_leaves_no_partial_entry(uncached, tmp_path, monkeypatch, failing_write):
    real_save = np.save
    calls = []

    def save_until_full(file, array, *args, **kwargs):
        calls.append(array.shape)
        if len(calls) == failing_write:
            file.write(b"\x93NUMPY half an array")  # some bytes reach the disk, then it is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(file, array, *args, **kwargs)

    monkeypatch.setattr(np, "save", save_until_full)
    (message,) = load_twice_and_check(*uncached)
    assert "No space left on device" in message and str(tmp_path / "cache" / "decoded") in message
    assert list((tmp_path / "cache" / "decoded").iterdir()) == []  # no entry, no staging folder


def test_a_damaged_entry_is_decoded_again(uncached, tmp_path):
    benchmark, expected = uncached
    load_arrays(benchmark.train, benchmark)
    (entry,) = (tmp_path / "cache" / "decoded").iterdir()
    data = (entry / "images.npy").read_bytes()
    (entry / "images.npy").write_bytes(data[: len(data) // 2])  # truncated by an older crash
    with pytest.warns(CacheWarning, match="ignoring the decoded-image cache entry"):
        images, labels = load_arrays(benchmark.train, benchmark)
    np.testing.assert_array_equal(images, expected[0])
    again, _ = load_arrays(benchmark.train, benchmark)  # stored afresh
    assert isinstance(again, np.memmap)
    np.testing.assert_array_equal(again, expected[0])


def test_a_set_stored_without_its_bad_images_is_announced_or_refused_on_every_load(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path / "cache"))
    benchmark = write_benchmark(tmp_path)
    (tmp_path / "img" / "3.png").write_bytes(b"not a png")
    for attempt in range(2):  # decoded, then from the cache
        with pytest.warns(DataWarning, match=r"(?s)skipped 1 undecodable images .*train.txt:4"):
            images, labels = load_arrays(benchmark.train, benchmark, skip_bad=True)
        assert isinstance(images, np.memmap) == (attempt == 1)
        assert [int(image[0, 0, 0]) for image in images] == [0, 40, 80, 160, 200]
        assert list(labels) == [0, 1, 0, 0, 1]
        with pytest.raises(ValueError, match="train.txt:4: .*rerun with --skip-bad"):
            load_arrays(benchmark.train, benchmark)
