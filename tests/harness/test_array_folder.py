"""harness.array_folder: a set's arrays as a folder of .npy files, written atomically, mapped read-only."""

from __future__ import annotations

import os
import tracemalloc

import numpy as np
import pytest

from dfb_ood.harness import array_folder
from dfb_ood.harness.array_folder import array_files, map_arrays, save_arrays
from dfb_ood.harness.errors import RunFolderError
from dfb_ood.harness.runfolder import remove_temporaries


def arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    big = rng.standard_normal((300_001, 2)).astype(np.float32)
    return {
        "empty": np.zeros((0, 5), dtype=np.float32),
        "uint8": rng.integers(0, 256, (7, 3, 5, 5), dtype=np.uint8),
        "float32": rng.standard_normal((11, 4)).astype(np.float32),
        "big": big,
        "big_fortran": np.asfortranarray(big[:200_000]),
        "strided": big[::3, ::-1],  # neither C- nor F-contiguous
        "scalar": np.array(3.5),
        "labels": np.arange(-3, 40, dtype=np.int64),
        "flags": np.array([True, False, True]),
        "big_endian": np.arange(6, dtype=">f8").reshape(2, 3),
        "when": np.array(["2026-01-02", "NaT"], dtype="datetime64[D]"),
        "names": np.array(["a", "bcd"]),
    }


def test_round_trip_is_bit_identical_memory_mapped_and_read_only(tmp_path):
    want = arrays()
    save_arrays(tmp_path / "set", want)
    assert sorted(os.listdir(tmp_path)) == ["set"]  # nothing but the finished folder
    assert [p.name for p in array_files(tmp_path / "set")] == sorted(f"{k}.npy" for k in want)
    got = map_arrays(tmp_path / "set")
    assert set(got) == set(want)
    for name, value in want.items():
        assert got[name].dtype == value.dtype and got[name].shape == value.shape, name
        assert np.asarray(got[name]).tobytes("A") == np.asarray(value).tobytes("A"), name
        assert not got[name].flags.writeable, name
        with pytest.raises(ValueError):
            got[name][...] = 0
        if value.size:
            assert isinstance(got[name], np.memmap), name
    # each file is what np.save writes: numpy's own format, nothing of ours
    np.save(tmp_path / "want.npy", want["big_fortran"])
    assert (tmp_path / "set" / "big_fortran.npy").read_bytes() == (tmp_path / "want.npy").read_bytes()


def test_writing_a_memory_map_does_not_copy_it(tmp_path):
    shape = (800_005, 4)  # 12 MiB and a bit of float32
    mapped = np.lib.format.open_memmap(tmp_path / "scratch.npy", "w+", np.float32, shape)
    mapped[:] = np.arange(shape[0] * shape[1], dtype=np.float32).reshape(shape)
    labels = np.arange(shape[0]) % 7
    tracemalloc.start()
    try:
        save_arrays(tmp_path / "set", {"logits": mapped, "labels": labels})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # the 12 MiB are written from the map, never copied
    np.testing.assert_array_equal(map_arrays(tmp_path / "set")["logits"], mapped)


def test_a_failure_mid_write_leaves_no_finished_looking_folder(tmp_path, monkeypatch):
    target = tmp_path / "set"
    real = array_folder._write_npy
    calls = []

    def failing(path, array):
        calls.append(path)
        if len(calls) == 2:
            path.write_bytes(b"half")
            raise RuntimeError("killed part-way")
        real(path, array)

    monkeypatch.setattr(array_folder, "_write_npy", failing)
    with pytest.raises(RuntimeError, match="killed part-way"):
        save_arrays(target, {"a": np.arange(3), "b": np.arange(4)})
    assert os.listdir(tmp_path) == []  # no folder under the final name, no staging left behind
    # an older folder stays as it was
    monkeypatch.setattr(array_folder, "_write_npy", real)
    save_arrays(target, {"a": np.arange(3)})
    monkeypatch.setattr(array_folder, "_write_npy", failing)
    calls.clear()
    with pytest.raises(RuntimeError, match="killed part-way"):
        save_arrays(target, {"a": np.arange(5), "b": np.arange(4)})
    assert os.listdir(tmp_path) == ["set"] and os.listdir(target) == ["a.npy"]
    np.testing.assert_array_equal(map_arrays(target)["a"], np.arange(3))


def test_a_replaced_folder_holds_only_the_new_arrays(tmp_path):
    save_arrays(tmp_path / "set", {"logits": np.ones(3), "features": np.ones(2)})
    save_arrays(tmp_path / "set", {"logits": np.zeros(4)})
    assert os.listdir(tmp_path) == ["set"]
    got = map_arrays(tmp_path / "set")
    assert list(got) == ["logits"] and np.array_equal(got["logits"], np.zeros(4))


def test_a_killed_writers_staging_folder_is_a_temporary(tmp_path):
    (tmp_path / "outputs").mkdir()
    staging = array_folder._temporary_folder(tmp_path / "outputs" / "set")
    (staging / "logits.npy").write_bytes(b"half")
    assert staging.name.startswith(".set.") and staging.name.endswith(".tmp")
    assert remove_temporaries(tmp_path) == [staging]
    assert os.listdir(tmp_path / "outputs") == []


def test_a_folder_holding_a_link_or_a_non_regular_file_is_refused(tmp_path):
    users = tmp_path / "users.npy"
    np.save(users, np.arange(3))
    save_arrays(tmp_path / "set", {"logits": np.ones(3)})
    (tmp_path / "set" / "features.npy").symlink_to(users)
    with pytest.raises(RunFolderError, match="features.npy is a symbolic link"):
        map_arrays(tmp_path / "set")
    (tmp_path / "set" / "features.npy").unlink()
    os.mkfifo(tmp_path / "set" / "labels.npy")
    with pytest.raises(RunFolderError, match="labels.npy is not a regular .npy file"):
        map_arrays(tmp_path / "set")
    (tmp_path / "set" / "labels.npy").unlink()
    (tmp_path / "set" / "notes.txt").write_text("x")
    with pytest.raises(RunFolderError, match="notes.txt is not a regular .npy file"):
        map_arrays(tmp_path / "set")
    (tmp_path / "set" / "notes.txt").unlink()
    (tmp_path / "linked").symlink_to(tmp_path / "set")
    with pytest.raises(RunFolderError, match="linked is a symbolic link"):
        map_arrays(tmp_path / "linked")
    assert list(map_arrays(tmp_path / "set")) == ["logits"]
    with pytest.raises(FileNotFoundError):
        map_arrays(tmp_path / "missing")


def test_an_array_name_that_is_not_one_plain_file_name_is_refused(tmp_path):
    with pytest.raises(ValueError):
        save_arrays(tmp_path / "set", {"../x": np.ones(1)})
    assert not (tmp_path / "x.npy").exists() and os.listdir(tmp_path) == []
