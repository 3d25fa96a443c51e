"""harness.io.save_npz: the bytes np.savez writes, array data in 1 MiB pieces, atomically."""

from __future__ import annotations

import os
import time
import tracemalloc

import numpy as np
import pytest

from dfb_ood.harness import io
from dfb_ood.harness.io import NPZ_PIECE, save_npz


@pytest.fixture
def frozen_clock(monkeypatch):
    """A fixed time: zipfile stamps each member with the time it is opened."""
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    big = rng.standard_normal((300_001, 2)).astype(np.float32)  # 2.3 MiB: not a whole number of pieces
    return {
        "empty": np.zeros((0, 5), dtype=np.float32),
        "uint8": rng.integers(0, 256, (7, 3, 5, 5), dtype=np.uint8),
        "float32": rng.standard_normal((11, 4)).astype(np.float32),
        "big": big,
        "big_fortran": np.asfortranarray(big[:200_000]),
        "strided": big[::3, ::-1],  # neither C- nor F-contiguous: through a buffer
        "scalar": np.array(3.5),
        "labels": np.arange(-3, 40, dtype=np.int64),
        "flags": np.array([True, False, True]),
        "big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
        "when": np.array(["2026-01-02", "NaT"], dtype="datetime64[D]"),
        "names": np.array(["a", "bcd"]),
        "records": np.zeros(3, dtype=[("x", "<i4"), ("y", "<f8")]),  # written by numpy itself
        "objects": np.array([{"a": 1}, None], dtype=object),  # pickled, as np.savez does
    }


def test_save_npz_writes_the_bytes_np_savez_writes(tmp_path, frozen_clock):
    for name, value in arrays().items():
        np.savez(tmp_path / f"{name}.want.npz", **{name: value})
        save_npz(tmp_path / f"{name}.npz", **{name: value})
        assert (tmp_path / f"{name}.npz").read_bytes() == (tmp_path / f"{name}.want.npz").read_bytes(), name
    many = {k: v for k, v in arrays().items() if k != "objects"}
    np.savez(tmp_path / "many.want.npz", **many)
    save_npz(tmp_path / "many.npz", **many)
    assert (tmp_path / "many.npz").read_bytes() == (tmp_path / "many.want.npz").read_bytes()
    with np.load(tmp_path / "many.npz") as loaded:
        for key, value in many.items():
            np.testing.assert_array_equal(loaded[key], value)  # NaT equals NaT here


def test_save_npz_writes_a_memory_map_without_copying_it(tmp_path, frozen_clock):
    shape = (3 * NPZ_PIECE // 4 + 5, 4)  # 3 MiB and a bit of float32
    mapped = np.lib.format.open_memmap(tmp_path / "scratch.npy", "w+", np.float32, shape)
    mapped[:] = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)
    labels = np.arange(shape[0]) % 7
    tracemalloc.start()
    try:
        save_npz(tmp_path / "outputs.npz", logits=mapped, labels=labels)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < NPZ_PIECE // 2  # np.savez makes a bytes copy of each whole array here (under 16 MiB)
    np.savez(tmp_path / "want.npz", logits=mapped, labels=labels)
    assert (tmp_path / "outputs.npz").read_bytes() == (tmp_path / "want.npz").read_bytes()


def test_save_npz_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "outputs.npz"
    save_npz(target, a=np.arange(3))
    before = target.read_bytes()

    def failing(handle, array):
        handle.write(b"half")
        raise RuntimeError("killed part-way")

    monkeypatch.setattr(io, "_write_npy", failing)
    with pytest.raises(RuntimeError, match="killed part-way"):
        save_npz(target, a=np.arange(1000))
    assert target.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["outputs.npz"]  # no temporary file left behind
