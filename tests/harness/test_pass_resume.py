"""A pass over images killed at 60% resumes from its last completed chunk and ends byte-identical.

The reference is the same pass run uninterrupted; "resumed from the chunk" is counted: the rerun's
progress bar starts at the recorded row and advances by exactly the rows left.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from dfb_ood.harness import partial_pass, settings, stage_outputs
from dfb_ood.harness.cached import extract_features
from dfb_ood.harness.cli import app
from dfb_ood.harness.io import save_npy
from dfb_ood.harness.partial_pass import PartialPass
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.settings import BenchSettings
from dfb_ood.networks import create_network, split_network

from .test_pipeline import bench_args, read_rows, runner

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


# ------------------------------------------------------------------- the outputs stage and ODIN's pass
@dataclasses.dataclass
class SmallBatches(BenchSettings):
    eval_batch_size: int = 8  # the tiny sets' passes take several batches, so a pass has chunks


def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passes in batches of 8 (outputs and detectors' own), each batch a chunk."""
    monkeypatch.setattr(settings, "BenchSettings", SmallBatches)
    monkeypatch.setattr(stage_outputs, "PERTURBED_BATCH", 8)
    monkeypatch.setattr(partial_pass, "CHUNK_SECONDS", 0.0)


def relative(partial: PartialPass) -> str:
    """A partial's ``<folder>/<file>``."""
    return f"{partial.target.parent.name}/{partial.target.name}"


def interrupt_at(monkeypatch: pytest.MonkeyPatch, target: tuple[str, str], rows: int) -> dict[str, list[int]]:
    """Record every partial's resumed row and recorded rows; Ctrl-C once ``target`` has recorded ``rows``.

    A partial is named ``<folder>/<file>``; ``target`` is the (start, end) of the name to stop.
    """
    seen: dict[str, list[int]] = {}
    start, done = PartialPass.start, PartialPass.done

    def counted_start(self: PartialPass, *args: object, **kwargs: object) -> int:
        resumed = start(self, *args, **kwargs)  # type: ignore[arg-type]
        seen.setdefault(relative(self), []).append(resumed)
        return resumed

    def counted_done(self: PartialPass, upto: int, *, force: bool = False) -> None:
        done(self, upto, force=force)
        seen[relative(self)].append(self.rows_done)
        if (
            relative(self).startswith(target[0])
            and relative(self).endswith(target[1])
            and self.rows_done >= rows
        ):
            raise KeyboardInterrupt

    monkeypatch.setattr(PartialPass, "start", counted_start)
    monkeypatch.setattr(PartialPass, "done", counted_done)
    return seen


def test_outputs_and_odin_passes_killed_at_60_percent_resume_byte_identical(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
):
    small_chunks(monkeypatch)
    reference = tiny["root"] / "reference"
    assert runner.invoke(app, bench_args(tiny, reference)).exit_code == 0
    folder = tiny["root"] / "interrupted"
    # The classifier's pass over the 60 test images (batches of 8), stopped once 36 rows are recorded.
    seen = interrupt_at(monkeypatch, ("classifier/", "/test.logits.npy"), 36)
    failed = runner.invoke(app, bench_args(tiny, folder))
    assert failed.exit_code == 130 and "run the same command again to resume" in failed.stderr
    assert seen["classifier/test.logits.npy"][-1] == 40
    records = folder / "outputs/classifier/test.{}.npy.partial.json"
    assert [json.loads(Path(str(records).format(a)).read_text())["rows"] for a in ("logits", "features")] == [
        40,
        32,
    ]
    monkeypatch.undo()
    small_chunks(monkeypatch)
    # Rerun: the pass resumes; then ODIN's own (perturbed) pass over the test set is stopped at 60%.
    seen = interrupt_at(monkeypatch, ("perturbed-", "/test.logits.npy"), 36)
    failed = runner.invoke(app, bench_args(tiny, folder))
    assert failed.exit_code == 130
    # Ctrl-C came after the logits' record of row 40, before the features' (still at 32): the pass
    # resumes at 32, the last row both claim, and computes the 28 rows left (4 batches).
    assert seen["classifier/test.features.npy"] == [32, 40, 48, 56, 60]
    assert seen["classifier/test.logits.npy"] == [40, 40, 48, 56, 60]
    (odin,) = [name for name in seen if name.endswith("/test.logits.npy") and name.startswith("perturbed-")]
    assert seen[odin][0] == 0 and seen[odin][-1] == 40
    monkeypatch.undo()
    small_chunks(monkeypatch)
    seen = interrupt_at(monkeypatch, ("nothing", "nothing"), 0)
    assert runner.invoke(app, bench_args(tiny, folder)).exit_code == 0
    assert seen[odin] == [40, 48, 56, 60]  # resumed at the recorded chunk, the 20 rows left computed
    assert "classifier/test.logits.npy" not in seen  # committed on the previous run: not passed again

    assert not list(folder.rglob("*.partial*"))  # committed passes leave no partial behind
    assert read_rows(folder / "results.csv") == read_rows(reference / "results.csv")
    for kind in ("classifier", "dfb"):
        for path in sorted((reference / "outputs" / kind).rglob("*.npy")):
            relative = path.relative_to(reference)
            assert (folder / relative).read_bytes() == path.read_bytes(), relative
    stages = json.loads((folder / "stages.json").read_text())
    recorded = json.loads((reference / "stages.json").read_text())
    assert {k: v.get("key") for k, v in stages.items()} == {k: v.get("key") for k, v in recorded.items()}
