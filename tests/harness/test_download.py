"""Tests for harness.data.download, offline: small real zips shaped like OpenOOD's, served by a fake fetch.

The fake fetch stands in for Google Drive, so every failure the real download can meet (truncated
file, wrong bytes, network error, hostile archive, missing gdown) is reproduced without a network.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import struct
import sys
import types
import zipfile
import zlib
from datetime import datetime
from pathlib import Path

import pytest
import yaml

from dfb_ood.harness.data import download as dl
from dfb_ood.harness.data.download import (
    DestinationExistsError,
    DownloadError,
    MissingDependencyError,
    UnsafeArchiveError,
    download_benchmark,
    download_status,
    load_catalogue,
)

IMGLIST_ID = "drive-imglist"
CIFAR_ID = "drive-cifar10"
IMGLIST_TXT = b"cifar10/test/airplane/0001.png 0\ncifar10/test/cat/0002.png 3\n"


def _png(seed: int) -> bytes:
    """A valid 1x1 grey PNG (distinct per seed), so the archives hold real image files."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(bytes([0, seed])))
        + chunk(b"IEND", b"")
    )


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name), data, compress_type=compression)
    return buffer.getvalue()


# OpenOOD's shapes: benchmark_imglist.zip holds a top-level benchmark_imglist/ and is unzipped into the
# data root; cifar10.zip is unzipped into images_classic/cifar10/, so imglist paths resolve.
IMGLIST_FILES = {
    "benchmark_imglist/cifar10/test_cifar10.txt": IMGLIST_TXT,
    "benchmark_imglist/cifar10/val_cifar10.txt": b"cifar10/test/cat/0002.png 3\n",
}
CIFAR_FILES = {
    "test/airplane/0001.png": _png(1),
    "test/cat/0002.png": _png(2),
    "train/cat/0003.png": _png(3),
}


class FakeDrive:
    """A fetch(file_id, destination) that serves bytes from memory and counts its calls.

    ``plan[file_id]`` is a list of per-call behaviours, consumed in order: a callable turning the real
    bytes into what this call serves, or an exception instance to raise instead.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.plan: dict[str, list] = {}
        self.calls: list[str] = []

    def __call__(self, file_id: str, destination: Path) -> None:
        self.calls.append(file_id)
        data = self.files[file_id]
        steps = self.plan.get(file_id)
        if steps:
            step = steps.pop(0)
            if isinstance(step, BaseException):
                destination.write_bytes(data[:10])  # a partial file, as an interrupted download leaves
                raise step
            data = step(data)
        destination.write_bytes(data)

    def count(self, file_id: str) -> int:
        return self.calls.count(file_id)


def _first_half(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _catalogue(tmp_path: Path, **cifar_extra: object) -> Path:
    archives = {
        "benchmark_imglist": {"file_id": IMGLIST_ID, "subdir": ".", "sha256": None, "size": None},
        "cifar10": {"file_id": CIFAR_ID, "subdir": "images_classic/cifar10", "sha256": None, "size": None},
        "handmade": {
            "file_id": None,
            "subdir": "images_classic/handmade",
            "manual": "ask the dataset authors for handmade.zip",
        },
    }
    archives["cifar10"].update(cifar_extra)
    data = {
        "archives": archives,
        "benchmarks": {
            "cifar10": ["benchmark_imglist", "cifar10"],
            "mixed": ["benchmark_imglist", "handmade"],
        },
    }
    path = tmp_path / "downloads.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


@pytest.fixture
def env(tmp_path: Path) -> types.SimpleNamespace:
    archives = {IMGLIST_ID: _zip(IMGLIST_FILES), CIFAR_ID: _zip(CIFAR_FILES)}
    return types.SimpleNamespace(
        root=tmp_path / "data",
        catalogue=_catalogue(tmp_path),
        drive=FakeDrive(archives),
        archives=archives,
        tmp_path=tmp_path,
    )


def _marker(root: Path, name: str) -> dict:
    return json.loads((root / ".downloads" / f"{name}.json").read_text(encoding="utf-8"))


def _leftovers(root: Path) -> list[str]:
    """Anything in .downloads other than finished markers: temp folders, .part files, journals."""
    folder = root / ".downloads"
    return sorted(p.name for p in folder.iterdir() if not (p.suffix == ".json" and ".moving" not in p.name))


def _run(env: types.SimpleNamespace, benchmark: str = "cifar10", **kwargs: object) -> list[dl.ArchiveStatus]:
    kwargs.setdefault("fetch", env.drive)
    return download_benchmark(benchmark, env.root, catalogue=env.catalogue, **kwargs)


# --------------------------------------------------------------------------------------------------
# happy path


def test_download_extracts_openood_layout_and_writes_marker(env):
    statuses = _run(env)

    assert [(s.name, s.state) for s in statuses] == [
        ("benchmark_imglist", "downloaded"),
        ("cifar10", "downloaded"),
    ]
    for name, data in IMGLIST_FILES.items():
        assert (env.root / name).read_bytes() == data
    for name, data in CIFAR_FILES.items():
        assert (env.root / "images_classic" / "cifar10" / name).read_bytes() == data
    # the imglist's relative paths resolve against images_classic/, as in OpenOOD
    for line in IMGLIST_TXT.decode().splitlines():
        assert (env.root / "images_classic" / line.split()[0]).is_file()

    for name, file_id, paths in [
        ("benchmark_imglist", IMGLIST_ID, ["benchmark_imglist"]),
        ("cifar10", CIFAR_ID, ["images_classic/cifar10/test", "images_classic/cifar10/train"]),
    ]:
        marker = _marker(env.root, name)
        data = env.archives[file_id]
        assert marker["archive"] == name
        assert marker["file_id"] == file_id
        assert marker["size"] == len(data)
        assert marker["sha256"] == hashlib.sha256(data).hexdigest()
        assert marker["paths"] == paths
        assert datetime.fromisoformat(marker["completed_utc"]).utcoffset().total_seconds() == 0
        status = next(s for s in statuses if s.name == name)
        assert (status.size, status.sha256) == (marker["size"], marker["sha256"])
    assert statuses[1].path == env.root / "images_classic" / "cifar10"
    assert _leftovers(env.root) == []


def test_second_run_fetches_nothing(env):
    first = _run(env)
    calls = len(env.drive.calls)
    second = _run(env)

    assert len(env.drive.calls) == calls == 2
    assert [s.state for s in second] == ["present", "present"]
    assert [(s.size, s.sha256) for s in second] == [(s.size, s.sha256) for s in first]


def test_status_reports_markers_without_downloading(env):
    assert [s.state for s in download_status("cifar10", env.root, catalogue=env.catalogue)] == ["missing"] * 2
    _run(env)
    calls = len(env.drive.calls)
    statuses = download_status("cifar10", env.root, catalogue=env.catalogue)

    assert [s.state for s in statuses] == ["present", "present"]
    assert statuses[1].sha256 == hashlib.sha256(env.archives[CIFAR_ID]).hexdigest()
    assert len(env.drive.calls) == calls


def test_non_empty_folder_without_marker_is_not_downloaded(env):
    """OpenOOD's fault: a half-extracted folder passed for a download. Here only a marker counts."""
    half = env.root / "images_classic" / "cifar10" / "test" / "airplane"
    half.mkdir(parents=True)
    (half / "0001.png").write_bytes(b"half")

    assert download_status("cifar10", env.root, catalogue=env.catalogue)[1].state == "missing"


def test_deleted_extraction_invalidates_marker_and_redownload_is_checked_against_it(env):
    _run(env)
    (env.root / "images_classic" / "cifar10" / "train").rename(env.tmp_path / "moved-away")
    assert download_status("cifar10", env.root, catalogue=env.catalogue)[1].state == "missing"

    # Drive now serves different bytes under the same id: the marker pins the first download's hash.
    env.drive.files[CIFAR_ID] = _zip({"test/other.png": _png(9)})
    with pytest.raises(DownloadError, match=r"cifar10: .*(size|sha256) is .*delete that file"):
        _run(env, retries=0)

    env.drive.files[CIFAR_ID] = env.archives[CIFAR_ID]
    assert [s.state for s in _run(env)] == ["present", "downloaded"]
    assert (env.root / "images_classic" / "cifar10" / "train" / "cat" / "0003.png").read_bytes() == _png(3)
    assert _leftovers(env.root) == []


# --------------------------------------------------------------------------------------------------
# verification and retries


@pytest.mark.parametrize(
    "first_call",
    [_first_half, ConnectionError("connection reset by peer")],
    ids=["truncated", "network-error"],
)
def test_failed_download_is_retried(env, first_call):
    env.drive.plan[CIFAR_ID] = [first_call]
    statuses = _run(env)

    assert env.drive.count(CIFAR_ID) == 2
    assert statuses[1].state == "downloaded"
    assert _marker(env.root, "cifar10")["sha256"] == hashlib.sha256(env.archives[CIFAR_ID]).hexdigest()
    assert _leftovers(env.root) == []


def test_always_truncated_fails_clearly_and_leaves_nothing(env):
    env.drive.plan[CIFAR_ID] = [_first_half] * 10
    with pytest.raises(DownloadError) as caught:
        _run(env, retries=2)

    message = str(caught.value)
    assert "cifar10: download failed after 3 attempt(s)" in message
    assert "not a complete zip archive" in message
    assert "drive.google.com/uc?id=" + CIFAR_ID in message  # tells how to fetch it by hand
    assert env.drive.count(CIFAR_ID) == 3
    assert not (env.root / ".downloads" / "cifar10.json").exists()
    assert not (env.root / "images_classic").exists()
    assert _leftovers(env.root) == []
    # the other archive of the benchmark was still installed, and reported
    assert [(s.name, s.state) for s in caught.value.statuses] == [("benchmark_imglist", "downloaded")]


def test_several_failures_are_listed_together(env):
    env.drive.plan = {IMGLIST_ID: [_first_half] * 5, CIFAR_ID: [ConnectionError("timed out")] * 5}
    with pytest.raises(DownloadError) as caught:
        _run(env, retries=1)

    assert str(caught.value).startswith("cifar10: 2 of 2 archives failed:")
    assert [str(f).split(":")[0] for f in caught.value.failures] == ["benchmark_imglist", "cifar10"]
    assert "timed out" in str(caught.value) and "not a complete zip archive" in str(caught.value)
    assert caught.value.statuses == []
    assert _leftovers(env.root) == []


@pytest.mark.parametrize("field", ["sha256", "size"])
def test_expected_hash_or_size_mismatch_is_detected(env, field):
    wrong = {"sha256": "0" * 64, "size": len(env.archives[CIFAR_ID]) + 1}[field]
    env.catalogue = _catalogue(env.tmp_path, **{field: wrong})
    with pytest.raises(DownloadError, match=rf"cifar10: .*{field} is .*expected {wrong}"):
        _run(env, retries=1)

    assert env.drive.count(CIFAR_ID) == 2
    assert not (env.root / ".downloads" / "cifar10.json").exists()
    assert not (env.root / "images_classic").exists()
    assert _leftovers(env.root) == []


def test_expected_hash_and_size_match(env):
    data = env.archives[CIFAR_ID]
    env.catalogue = _catalogue(env.tmp_path, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
    assert _run(env)[1].state == "downloaded"


def test_corrupt_member_is_detected(env):
    """Right length, intact directory, but damaged image bytes: testzip's CRC check catches it."""
    stored = _zip(CIFAR_FILES, compression=zipfile.ZIP_STORED)
    offset = stored.index(_png(2))
    env.drive.files[CIFAR_ID] = stored[:offset] + b"X" + stored[offset + 1 :]
    with pytest.raises(DownloadError, match=r"cifar10: .*'test/cat/0002.png' is corrupt"):
        _run(env, retries=0)
    assert not (env.root / "images_classic").exists()


@pytest.mark.parametrize("evil", ["../escaped.txt", "/etc/escaped.txt", "test/../../escaped.txt"])
def test_zip_slip_is_refused(env, evil):
    env.drive.files[CIFAR_ID] = _zip({"test/ok.png": _png(1), evil: b"pwned"})
    assert evil in zipfile.ZipFile(io.BytesIO(env.drive.files[CIFAR_ID])).namelist()
    with pytest.raises(UnsafeArchiveError, match=r"cifar10: refused: .*outside the extraction folder"):
        _run(env)

    assert env.drive.count(CIFAR_ID) == 1  # the same bytes would come back: no retry
    assert not list(env.tmp_path.rglob("escaped.txt"))
    assert not (env.root / "images_classic").exists()
    assert not (env.root / ".downloads" / "cifar10.json").exists()
    assert _leftovers(env.root) == []


# --------------------------------------------------------------------------------------------------
# crash safety and existing data


def test_crash_before_marker_leaves_no_marker_and_rerun_completes(env, monkeypatch):
    real_writer = dl._write_marker

    def crash(path, payload):
        if payload["archive"] == "cifar10":
            raise RuntimeError("simulated crash")
        real_writer(path, payload)

    monkeypatch.setattr(dl, "_write_marker", crash)
    with pytest.raises(RuntimeError, match="simulated crash"):
        _run(env)
    assert not (env.root / ".downloads" / "cifar10.json").exists()
    assert download_status("cifar10", env.root, catalogue=env.catalogue)[1].state == "missing"

    # Leftovers a killed process would also have left behind.
    (env.root / ".downloads" / "tmp-cifar10-abcd1234").mkdir()
    (env.root / ".downloads" / "cifar10.zip.part").write_bytes(b"partial")

    monkeypatch.setattr(dl, "_write_marker", real_writer)
    statuses = _run(env)  # no force needed: the half-installed entries are this archive's own

    assert [s.state for s in statuses] == ["present", "downloaded"]
    assert env.drive.count(CIFAR_ID) == 2
    assert _marker(env.root, "cifar10")["paths"] == [
        "images_classic/cifar10/test",
        "images_classic/cifar10/train",
    ]
    assert _leftovers(env.root) == []


def test_foreign_destination_needs_force(env):
    foreign = env.root / "images_classic" / "cifar10" / "test"
    foreign.mkdir(parents=True)
    (foreign / "mine.txt").write_text("user data")

    with pytest.raises(DestinationExistsError, match=r"cifar10: would replace existing .*test.*--force"):
        _run(env)
    assert (foreign / "mine.txt").read_text() == "user data"
    assert not (env.root / ".downloads" / "cifar10.json").exists()
    assert _leftovers(env.root) == []

    statuses = _run(env, force=True)
    assert statuses[1].state == "downloaded"
    assert not (foreign / "mine.txt").exists()
    assert (foreign / "airplane" / "0001.png").read_bytes() == _png(1)
    assert _leftovers(env.root) == []


def test_destination_on_another_filesystem_is_copied_then_renamed(env, monkeypatch):
    """os.replace cannot cross filesystems (a symlinked images_classic/): copy beside, then rename."""
    real_replace = dl.os.replace

    def replace(src, dst):
        if Path(src).parent.name.startswith("tmp-"):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        real_replace(src, dst)

    monkeypatch.setattr(dl.os, "replace", replace)
    assert [s.state for s in _run(env)] == ["downloaded", "downloaded"]
    for name, data in CIFAR_FILES.items():
        assert (env.root / "images_classic" / "cifar10" / name).read_bytes() == data
    assert sorted(p.name for p in (env.root / "images_classic" / "cifar10").iterdir()) == ["test", "train"]
    assert _leftovers(env.root) == []


def test_progress_goes_to_the_console(env):
    from rich.console import Console

    out = io.StringIO()
    _run(env, console=Console(file=out, width=200))
    _run(env, console=Console(file=out, width=200))
    text = out.getvalue()
    assert f"cifar10: downloading Drive file {CIFAR_ID} (attempt 1 of 3)" in text
    assert "cifar10: present" in text


# --------------------------------------------------------------------------------------------------
# manual archives and gdown


def test_archive_without_drive_id_is_reported_manual_with_instructions(env):
    statuses = _run(env, "mixed")

    manual = statuses[1]
    assert (manual.name, manual.state) == ("handmade", "manual")
    hand_zip = env.root / ".downloads" / "handmade.zip"
    assert "must be fetched by hand" in manual.message
    assert "ask the dataset authors" in manual.message
    assert str(hand_zip) in manual.message
    assert env.drive.calls == [IMGLIST_ID]
    assert download_status("mixed", env.root, catalogue=env.catalogue)[1].state == "manual"

    # Following the instructions installs it, with the same checks and a marker.
    data = _zip({"images/a.png": _png(5)})
    hand_zip.write_bytes(data)
    statuses = _run(env, "mixed")
    assert statuses[1].state == "downloaded"
    assert (env.root / "images_classic" / "handmade" / "images" / "a.png").read_bytes() == _png(5)
    assert _marker(env.root, "handmade")["sha256"] == hashlib.sha256(data).hexdigest()
    assert _run(env, "mixed")[1].state == "present"
    assert env.drive.calls == [IMGLIST_ID]


def test_hand_placed_zip_of_a_drive_archive_is_used_instead_of_downloading(env):
    (env.root / ".downloads").mkdir(parents=True)
    (env.root / ".downloads" / "cifar10.zip").write_bytes(env.archives[CIFAR_ID])
    assert [s.state for s in _run(env)] == ["downloaded", "downloaded"]
    assert env.drive.calls == [IMGLIST_ID]


def test_missing_gdown_gives_clear_error(env, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)  # makes `import gdown` raise ImportError
    with pytest.raises(MissingDependencyError) as caught:
        download_benchmark("cifar10", env.root, catalogue=env.catalogue)

    message = str(caught.value)
    assert message.startswith("benchmark_imglist: ")
    assert "gdown" in message and "pip install 'dfb-ood[download]'" in message
    assert "fetch it by hand" in message and str(env.root / ".downloads" / "benchmark_imglist.zip") in message
    assert _leftovers(env.root) == []


def test_gdown_fetch_calls_gdown(monkeypatch, tmp_path):
    calls = []

    def fake_download(*, id, output, quiet):
        calls.append((id, output))
        return None if id == "refused" else output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=fake_download))
    dl.gdown_fetch("abc", tmp_path / "x.zip.part")
    assert calls == [("abc", str(tmp_path / "x.zip.part"))]
    with pytest.raises(DownloadError, match="refused"):
        dl.gdown_fetch("refused", tmp_path / "y.zip.part")


# --------------------------------------------------------------------------------------------------
# catalogue


def test_shipped_catalogue_covers_the_benchmarks():
    catalogue = load_catalogue()
    assert set(catalogue.benchmarks) == {
        "cifar10",
        "cifar100",
        "imagenet200",
        "imagenet",
        "cifar10_dfb",
        "cifar100_dfb",
        "imagenet_subset",
    }
    # the class-subset study reads ImageNet-1k and the imagenet benchmark's OOD sets, not v2/C/R/ES
    subset, full = set(catalogue.benchmarks["imagenet_subset"]), set(catalogue.benchmarks["imagenet"])
    assert subset < full and full - subset == {"imagenet_v2", "imagenet_c", "imagenet_r", "imagenet_es"}
    for benchmark, names in catalogue.benchmarks.items():
        assert names[0] == "benchmark_imglist"
        for spec in catalogue.specs(benchmark):
            if spec.name == "benchmark_imglist":
                assert spec.subdir == "."
            else:
                top, dataset = spec.subdir.split("/")
                assert top in {"images_classic", "images_largescale"}
                assert spec.name.startswith(dataset)
            assert spec.file_id is not None or spec.manual
    assert catalogue.archives["cifar10"].file_id == "1Co32RiiWe16lTaiOU6JMMnyUYS41IlO1"
    assert catalogue.archives["texture"].subdir == "images_classic/texture"  # shared by all benchmarks


def test_shipped_catalogue_status_on_empty_root(tmp_path):
    statuses = download_status("imagenet", tmp_path)
    assert {s.state for s in statuses} == {"missing", "manual"}
    manual = [s for s in statuses if s.state == "manual"]
    assert [s.name for s in manual] == ["imagenet_1k_train"]
    assert "image-net.org" in manual[0].message


def test_unknown_benchmark_lists_known_ones(env):
    with pytest.raises(ValueError, match="unknown benchmark 'svhn'; known: cifar10, mixed"):
        _run(env, "svhn")


@pytest.mark.parametrize(
    "entry, problem",
    [
        ({"file_id": "x", "subdir": "../outside"}, "subdir"),
        ({"file_id": "x", "subdir": "/abs"}, "subdir"),
        ({"file_id": "x", "subdir": "a", "sha256": "abc"}, "sha256"),
        ({"file_id": "x", "subdir": "a", "size": -1}, "size"),
        ({"file_id": "x", "subdir": "a", "typo": 1}, "unknown key"),
    ],
)
def test_bad_catalogue_entries_are_rejected(tmp_path, entry, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"archives": {"a": entry}, "benchmarks": {"b": ["a"]}}), encoding="utf-8")
    with pytest.raises(ValueError, match=problem):
        load_catalogue(path)
