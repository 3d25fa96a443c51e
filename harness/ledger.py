"""The ``stages.json`` ledger: which stages of a run are done, and whether their files still hold.

A stage is done when the key recorded for it (a hash of its inputs and settings) equals the key
it would have now and each of its artifacts matches the checksum recorded with it. Rank 0 reads
and writes the ledger; under torchrun it decides for every rank, so all take the same branch.
The keys themselves are :mod:`harness.stage_keys`'.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dfb_ood.errors import InputError
from dfb_ood.harness import distributed
from dfb_ood.harness.errors import RunFolderError
from dfb_ood.harness.io import own_folder, read_json, write_json
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.rundata import ROLE_LABELS, RunData
from dfb_ood.harness.runfolder import checksums, damaged

#: Stages made from the ID training images: their records keep the train set's fingerprint.
TRAIN_STAGES = ("classifier", "features", "masks", "dense")


class StageLedger:
    """The stage records of one run folder, read and written by rank 0."""

    def __init__(self, run_dir: Path, data: RunData) -> None:
        self.run_dir = run_dir
        self.data = data

    @property
    def main(self) -> bool:
        return distributed.is_main()

    @property
    def read_only(self) -> bool:
        return self.data.read_only

    @property
    def reporter(self) -> Reporter:
        return self.data.reporter

    @property
    def path(self) -> Path:
        return self.run_dir / "stages.json"

    def records(self) -> dict[str, Any]:
        """Every stage's record (none before the first stage is done)."""
        return read_json(self.path, follow_symlinks=False) if self.path.exists() else {}

    def damaged(self, files: Any, artifacts: Sequence[Path]) -> list[str]:
        """What is wrong with ``artifacts`` against the checksums ``files`` recorded (nothing: [])."""
        return damaged(self.run_dir, files, artifacts)

    def done(self, stage: str, key: str, *artifacts: Path, collective: bool = True) -> bool:
        """Whether a stage is complete: its key matches and every artifact matches its checksum.

        A damaged artifact is recomputed with a warning; a re-opened (read-only) run cannot
        recompute, so it stops naming the file. Rank 0 decides for every rank, so all take the
        same branch; ``collective=False`` is for what rank 0 alone does (evaluation), where the
        other ranks are not there to take part in the broadcast.
        """
        done = None
        if self.main:
            record = self.records().get(stage)
            done = bool(record) and record.get("key") == key
            if record and not done:
                self.say_what_changed(stage, record)
            if done:
                problems = self.damaged(record.get("files"), artifacts)
                if problems and self.read_only:
                    raise RunFolderError(
                        f"{self.run_dir}: {'; '.join(problems)}; re-run the `harness bench` command that "
                        f"made this run (its options are in run.json) to recompute the {stage} stage"
                    )
                if problems:
                    self.reporter.message(
                        f"{'; '.join(problems)}: recomputing the {stage} stage", label="warning:"
                    )
                    done = False
        return bool(distributed.from_main(done)) if collective else bool(done)

    def say_what_changed(self, stage: str, record: dict[str, Any]) -> None:
        """A stage about to be recomputed because the data it read changed says which set did."""
        recorded = record.get("data")
        if not isinstance(recorded, dict):
            return
        roles = self.data.specs
        changed = [
            name
            for name, fingerprint in recorded.items()
            if name in roles and self.data.fingerprint(name) != fingerprint
        ]
        for name in changed:
            self.reporter.message(
                f"{ROLE_LABELS[roles[name][0]]} set {name!r} changed (its list or image files): "
                f"recomputing the {stage} stage",
                label="warning:",
            )

    def compute(self, stage: str) -> None:
        """Called before a stage computes anything; a read-only (re-opened) run refuses."""
        if self.read_only:
            raise InputError(
                f"{self.run_dir}: the {stage} stage is missing or out of date for this code and settings; "
                "re-run `harness bench` with the same options to complete it"
            )

    def mark(self, stage: str, key: str, files: Sequence[Path] = (), **info: Any) -> None:
        """Record a finished stage: its key, the checksum of each artifact, and what it measured."""
        if not self.main:
            return
        if stage in TRAIN_STAGES:
            info.setdefault("data", {"train": self.data.fingerprint("train")})
        stages = self.records()
        stages[stage] = {"key": key, "files": checksums(self.run_dir, files), **info}
        write_json(self.path, stages)

    def own_folder(self, relative: str, create: bool | None = None) -> Path:
        """``run_dir/relative``, each folder a plain one of the run's (:func:`harness.io.own_folder`).

        Made (by default) where this process writes the run folder: rank 0 of a run that is not
        re-opened read-only. A link, or a file, in the folder's place raises; a folder not there
        (a read-only run's) is returned as the path it would have.
        """
        if create is None:
            create = self.main and not self.read_only
        found = own_folder(self.run_dir, relative, create=create)
        return found if found is not None else self.run_dir / relative
