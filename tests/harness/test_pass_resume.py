"""A pass over images killed at 60% resumes from its last completed chunk and ends byte-identical.

The reference is the same pass run uninterrupted; "resumed from the chunk" is counted: the rerun's
progress bar starts at the recorded row and advances by exactly the rows left.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from dfb_ood.harness import partial_pass
from dfb_ood.harness.cached import extract_features
from dfb_ood.harness.io import save_npy
from dfb_ood.harness.partial_pass import PartialPass
from dfb_ood.harness.progress import Reporter
from dfb_ood.networks import create_network, split_network

CPU = torch.device("cpu")
N, BATCH = 20, 2
STOP_AT = 12  # rows: 60% of the pass


class Counting(Reporter):
    """A quiet reporter that counts what a pass reports, and raises Ctrl-C once ``stop_at`` rows are done."""

    def __init__(self, stop_at: int | None = None) -> None:
        super().__init__(quiet=True)
        self.stop_at = stop_at
        self.tasks: list[tuple[str, int, int]] = []
        self.advanced = 0
        self.notes: list[str] = []

    def message(self, text: str, label: str | None = None) -> None:
        self.notes.append(text)

    @contextlib.contextmanager
    def task(self, description: str, total: int, completed: int = 0) -> Iterator[Counting]:
        self.tasks.append((description, total, completed))
        yield self

    def advance(self, units: int = 1, info: str | None = None) -> None:
        self.advanced += units
        done = self.tasks[-1][2] + self.advanced
        if self.stop_at is not None and done >= self.stop_at:
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def setup() -> dict:
    net = create_network("rv2_tiny", 3).eval()
    generator = torch.Generator().manual_seed(3)
    images = torch.randint(0, 256, (N, 3, 16, 16), dtype=torch.uint8, generator=generator)
    return {"net": net, "split": split_network(net, "head"), "images": images}


def run(setup: dict, reporter: Reporter, partial: PartialPass | None, mirrored: bool = False) -> np.ndarray:
    return extract_features(
        setup["split"],
        setup["net"],
        setup["images"],
        mean=(0.5,) * 3,
        std=(0.25,) * 3,
        size=16,
        device=CPU,
        mirrored=mirrored,
        batch_size=BATCH,
        reporter=reporter,
        partial=partial,
    )


@pytest.fixture
def every_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(partial_pass, "CHUNK_SECONDS", 0.0)  # every batch completes a chunk


@pytest.mark.parametrize("mirrored", [False, True])
def test_features_killed_at_60_percent_resume_from_the_chunk_byte_identical(
    setup: dict, tmp_path: Path, every_batch: None, mirrored: bool
):
    reference_file = tmp_path / "reference.npy"
    save_npy(reference_file, run(setup, Counting(), None, mirrored))
    target = tmp_path / "train.npy"

    with pytest.raises(KeyboardInterrupt):
        run(setup, Counting(stop_at=STOP_AT), PartialPass(target, "key"), mirrored)
    record = json.loads((tmp_path / "train.npy.partial.json").read_text())
    assert record["rows"] == STOP_AT and not target.exists()

    rerun = Counting()
    partial = PartialPass(target, "key", rerun)
    resumed = run(setup, rerun, partial, mirrored)
    assert rerun.tasks == [("features (resumed)", N, STOP_AT)]  # the bar starts at the recorded row
    assert rerun.advanced == N - STOP_AT  # only the rows left were computed
    assert rerun.notes == []
    save_npy(target, resumed)
    assert target.read_bytes() == reference_file.read_bytes()
    partial.remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reference.npy", "train.npy"]


def test_a_partial_of_other_inputs_or_damaged_is_discarded_with_a_note(
    setup: dict, tmp_path: Path, every_batch: None
):
    reference = run(setup, Counting(), None)
    target = tmp_path / "train.npy"
    with pytest.raises(KeyboardInterrupt):
        run(setup, Counting(stop_at=STOP_AT), PartialPass(target, "old key"))

    other = Counting()
    assert np.array_equal(run(setup, other, PartialPass(target, "new key", other)), reference)
    assert other.tasks == [("features", N, 0)] and other.advanced == N  # recomputed from row 0
    assert len(other.notes) == 1 and "made from other inputs" in other.notes[0]

    with pytest.raises(KeyboardInterrupt):
        run(setup, Counting(stop_at=STOP_AT), PartialPass(target, "key"))
    data = tmp_path / "train.npy.partial"
    data.write_bytes(data.read_bytes()[:100])  # damaged: the record's rows are not on disk
    damaged = Counting()
    assert np.array_equal(run(setup, damaged, PartialPass(target, "key", damaged)), reference)
    assert damaged.advanced == N and len(damaged.notes) == 1

    (tmp_path / "train.npy.partial.json").write_text("{not json")
    broken = Counting()
    assert np.array_equal(run(setup, broken, PartialPass(target, "key", broken)), reference)
    assert broken.advanced == N and len(broken.notes) == 1


def test_the_record_never_claims_rows_of_an_unfinished_chunk(
    setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(partial_pass, "CHUNK_SECONDS", 1e9)  # no chunk completes before the pass ends
    target = tmp_path / "train.npy"
    with pytest.raises(KeyboardInterrupt):
        run(setup, Counting(stop_at=STOP_AT), PartialPass(target, "key"))
    assert json.loads((tmp_path / "train.npy.partial.json").read_text())["rows"] == 0
    rerun = Counting()
    run(setup, rerun, PartialPass(target, "key", rerun))
    assert rerun.tasks == [("features", N, 0)] and rerun.advanced == N
