"""The provenance of the runs a leaderboard, page or export shows: date, commit and versions.

Why a module of its own: the page and every export format state where their numbers came from
(when each run ran, from which commit, under which package versions), and they must all read the
same values the same way. The values come from each run's ``run.json``, a file that may be old
(written before these fields existed) or hostile (edited by hand): every field is validated
against its expected shape and bounded in length, and anything missing or malformed reads as
:data:`UNKNOWN`, never as an error. The renderers still escape what they show (a run folder's name
is the user's text).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dfb_ood.harness.runfolder import read_record

#: What a missing or malformed value reads as.
UNKNOWN = "unknown"
#: The packages whose versions a run records (``harness.runfolder.package_versions``), in order.
VERSION_NAMES: tuple[str, ...] = (
    "dfb-ood", "python", "torch", "torchvision", "timm", "numpy", "scikit-learn"
)  # fmt: skip
#: The longest run name shown (a longer folder name is cut, with an ellipsis).
MAX_NAME = 80
_COMMIT = re.compile(r"[0-9a-f]{7,64}")
_VERSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9.+_-]{0,39}")
_TEXT = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._/+-]{0,79}")


@dataclass(frozen=True)
class RunProvenance:
    """One run folder's provenance, every value validated (:data:`UNKNOWN` where it is not)."""

    name: str  # the run folder's name (bounded; escaped by whoever shows it)
    benchmark: str
    network: str
    started: str  # when the run began: ISO 8601, UTC, seconds
    finished: str  # when its latest bench / eval call completed
    commit: str  # full hex commit
    dirty: bool | None  # uncommitted changes to tracked files when the run ran; None unknown
    versions: dict[str, str]  # VERSION_NAMES -> version

    @property
    def date(self) -> str:
        """The run's date: when it began (stable when ``harness eval`` adds detectors to it), else
        when it last finished, else unknown."""
        return self.started if self.started != UNKNOWN else self.finished

    @property
    def commit_text(self) -> str:
        """The short commit, ``+dirty`` where the tree had uncommitted changes."""
        if self.commit == UNKNOWN:
            return UNKNOWN
        return self.commit[:10] + ("+dirty" if self.dirty else "")

    @property
    def versions_text(self) -> str:
        """``dfb-ood 0.1.0, python 3.11.9, torch 2.4.0, ...`` in :data:`VERSION_NAMES` order."""
        return ", ".join(f"{name} {self.versions[name]}" for name in VERSION_NAMES)

    def summary(self) -> str:
        """One line: ``NAME: date D, commit C, versions ...``."""
        return f"{self.name}: date {self.date}, commit {self.commit_text}, {self.versions_text}"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (what the JSON export and the OpenOOD manifest hold)."""
        return {
            "run": self.name,
            "benchmark": self.benchmark,
            "network": self.network,
            "started_utc": self.started,
            "finished_utc": self.finished,
            "git_commit": self.commit,
            "git_dirty": self.dirty,
            "versions": dict(self.versions),
        }


def _bounded_name(name: str) -> str:
    printable = "".join(char if char.isprintable() else "?" for char in name)
    return printable if len(printable) <= MAX_NAME else printable[: MAX_NAME - 1] + "…"


def _date(value: object) -> str:
    """An ISO 8601 UTC time as recorded (``2026-12-08T01:02:03Z``), else unknown."""
    if not isinstance(value, str) or len(value) > 40:
        return UNKNOWN
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return UNKNOWN
    if moment.tzinfo is None:
        return UNKNOWN  # a time without a zone is no UTC time
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _match(pattern: re.Pattern[str], value: object) -> str:
    if isinstance(value, str) and pattern.fullmatch(value):
        return value
    return UNKNOWN


def _versions(value: object) -> dict[str, str]:
    recorded = value if isinstance(value, Mapping) else {}
    return {name: _match(_VERSION, recorded.get(name)) for name in VERSION_NAMES}


def _name_of(value: object) -> object:
    return value.get("name") if isinstance(value, Mapping) else value


def run_provenance(run_dir: Path) -> RunProvenance:
    """The provenance of one run folder; a missing, unreadable or old ``run.json`` gives unknowns."""
    record: Mapping[str, Any] = read_record(Path(run_dir)) or {}
    dirty = record.get("git_dirty")
    return RunProvenance(
        name=_bounded_name(Path(run_dir).name or str(run_dir)),
        benchmark=_match(_TEXT, _name_of(record.get("benchmark"))),
        network=_match(_TEXT, record.get("network")),
        started=_date(record.get("started_utc")),
        finished=_date(record.get("finished_utc")),
        commit=_match(_COMMIT, record.get("git_commit")),
        dirty=dirty if isinstance(dirty, bool) else None,
        versions=_versions(record.get("versions")),
    )


def runs_provenance(run_dirs: Iterable[Path]) -> tuple[RunProvenance, ...]:
    """One :class:`RunProvenance` per run folder, in the order given."""
    return tuple(run_provenance(Path(run_dir)) for run_dir in run_dirs)


def runs_of(runs: Sequence[RunProvenance], benchmark: object, network: object) -> list[RunProvenance]:
    """The runs of one (benchmark, network); all runs where none records it (an old run.json)."""
    matched = [run for run in runs if run.benchmark == str(benchmark) and run.network == str(network)]
    return matched or list(runs)


__all__ = [
    "MAX_NAME",
    "UNKNOWN",
    "VERSION_NAMES",
    "RunProvenance",
    "run_provenance",
    "runs_of",
    "runs_provenance",
]
