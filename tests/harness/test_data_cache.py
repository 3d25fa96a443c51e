"""The decoded-image cache: a second load reads the cache; any change to a file misses it."""

from __future__ import annotations

import os

import numpy as np
from PIL import Image

from harness.data import load_benchmark
from harness.data.cache import cache_root
from harness.data.datasets import load_arrays


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
