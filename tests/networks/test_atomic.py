"""networks.atomic: one rename on success, nothing left on failure, the umask's usual mode."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import dfb_ood.networks.atomic as atomic_module
from dfb_ood.networks.atomic import atomic_path, atomic_write, current_umask, default_file_mode


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process umask whatever a test sets."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


def mode_of(path: Path) -> int:
    return path.stat().st_mode & 0o777


def test_atomic_write_fsyncs_then_renames_and_creates_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "a" / "b" / "x.bin"
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic_write(target, lambda handle: handle.write(b"hello"))
    assert target.read_bytes() == b"hello"
    assert events == ["fsync", "replace"]
    assert [p.name for p in target.parent.iterdir()] == ["x.bin"]


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path: Path, error: type[BaseException]
) -> None:
    target = tmp_path / "x.json"
    target.write_text("old")

    def half(handle: object) -> None:
        handle.write(b"half a fi")  # type: ignore[attr-defined]
        raise error

    with pytest.raises(error):
        atomic_write(target, half)
    with pytest.raises(error), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise error
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_temporary_path_sits_beside_the_target_with_the_suffix(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "plot.png", suffix=".png") as tmp:
        assert tmp.parent == tmp_path and tmp.name.startswith(".plot.png.") and tmp.name.endswith(".tmp.png")
        tmp.write_bytes(b"png")
    assert (tmp_path / "plot.png").read_bytes() == b"png"


def replace_with_private_copy(tmp: Path, data: bytes) -> None:
    """What safetensors' save_file does: write a new 0600 temporary file, rename it over ``tmp``."""
    fd, other = tempfile.mkstemp(dir=tmp.parent)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(other, tmp)


@pytest.mark.usefixtures("umask")
@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_the_final_file_follows_the_umask_however_it_was_written(
    tmp_path: Path, mask: int, mode: int
) -> None:
    os.umask(mask)
    atomic_write(tmp_path / "plain.bin", lambda handle: handle.write(b"a"))
    with atomic_path(tmp_path / "replaced.bin") as tmp:
        replace_with_private_copy(tmp, b"b")
    existing = tmp_path / "existing.bin"
    existing.write_bytes(b"old")
    existing.chmod(0o600)
    atomic_write(existing, lambda handle: handle.write(b"c"))
    modes = {p.name: mode_of(p) for p in tmp_path.iterdir()}
    assert modes == {"plain.bin": mode, "replaced.bin": mode, "existing.bin": mode}
    assert (tmp_path / "replaced.bin").read_bytes() == b"b"


@pytest.mark.usefixtures("umask")
def test_safetensors_save_file_through_atomic_path_follows_the_umask(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file, save_file

    os.umask(0o022)
    target = tmp_path / "w.safetensors"
    with atomic_path(target) as tmp:
        save_file({"a": torch.zeros(2)}, str(tmp))
    assert mode_of(target) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
    assert torch.equal(load_file(str(target))["a"], torch.zeros(2))


@pytest.mark.usefixtures("umask")
def test_umask_is_read_without_changing_it_and_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    os.umask(0o027)
    assert current_umask() == 0o027 and default_file_mode() == 0o640
    assert os.umask(0o027) == 0o027  # unchanged

    def no_proc(*args: object, **kwargs: object) -> object:
        raise FileNotFoundError("/proc/self/status")

    monkeypatch.setattr(atomic_module, "open", no_proc, raising=False)
    assert current_umask() == 0o027 and default_file_mode() == 0o640
    assert os.umask(0o027) == 0o027
