"""What a run folder may hold and how its records change: identity, checksums, accumulated results.

Three promises rest on this module:

- A run folder belongs to one set of result-defining settings (benchmark definition, network,
  seed, recipe, classifier checkpoint, skipped images). Work with other settings is refused
  before anything starts, naming each difference, unless the user says ``--overwrite``; a folder
  that holds files harness did not write is never written into.
- Every artifact a stage vouches for is recorded in ``stages.json`` with the sha256 of its bytes;
  an artifact whose bytes no longer match is recomputed (or reported), never used.
- Results accumulate: evaluating other detectors in a finished run adds their rows and keeps the
  earlier ones; evaluating a detector again replaces its rows.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import shutil
import stat
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from dfb_ood.errors import MissingInputError
from dfb_ood.harness.array_folder import array_files
from dfb_ood.harness.errors import RunFolderError
from dfb_ood.harness.io import file_checksum, own_folder, read_json, read_regular_text
from dfb_ood.harness.result_row import ResultRow

RECORD = "run.json"
# Files and folders a harness run writes; anything else in a folder without a run record is the user's.
RUN_ENTRIES = {
    "run.json",
    "run.lock",
    "stages.json",
    "classifier.safetensors",
    "classifier.json",
    "classifier.resume.pt",
    "masks.npy",
    "masks.json",
    "masks_preview.png",
    "dfb.safetensors",
    "dfb.json",
    "dfb.resume.pt",
    "outputs",
    "results.csv",
    "results.json",
    "report",
}
# Settings whose change makes a run folder's results those of another experiment.
# "classes": the class draw of a class-subset benchmark (only its runs record it).
IDENTITY_FIELDS = (
    "benchmark",
    "classes",
    "benchmark_definition",
    "network",
    "seed",
    "recipe",
    "checkpoint",
    "skip_bad",
)


def read_record(run_dir: Path) -> dict[str, Any] | None:
    """The folder's ``run.json`` if it is a harness run record, else ``None``."""
    path = run_dir / RECORD
    if path.is_symlink() or not path.is_file():
        return None  # a link is never read through (check_run_links names it)
    try:
        record = json.loads(read_regular_text(path))
    except (json.JSONDecodeError, UnicodeDecodeError, RunFolderError):
        return None
    if not isinstance(record, dict) or not isinstance(record.get("settings"), dict):
        return None
    return record


def _looks_like_path(key: str, value: str) -> bool:
    """Whether a recorded ``benchmark`` / ``recipe`` names a file (else a shipped config's name)."""
    if key in ("data_root", "checkpoint"):
        return True
    if key == "recipe":
        return bool(Path(value).suffix)  # as harness.recipes.load_recipe decides
    return value.endswith((".yaml", ".yml")) or "/" in value or os.sep in value  # as load_benchmark


def bench_folder(record: Mapping[str, Any], run_dir: Path) -> Path | None:
    """The working folder ``harness bench`` ran in, which its relative paths are relative to.

    Recorded as ``cwd`` since this version; for an older record it is found from the recorded
    ``--out``: bench ran where that relative path leads to ``run_dir``. None when not known.
    """
    if isinstance(record.get("cwd"), str):
        return Path(record["cwd"])
    out = (record.get("settings") or {}).get("out")
    if not isinstance(out, str) or Path(out).is_absolute():
        return None  # an absolute --out says nothing about where bench ran
    here = run_dir.resolve()
    parts = Path(os.path.normpath(out)).parts
    if ".." in parts or len(parts) > len(here.parts) - 1 or here.parts[-len(parts) :] != parts:
        return None
    return Path(*here.parts[: -len(parts)])


def recorded_settings(record: Mapping[str, Any], run_dir: Path) -> dict[str, Any]:
    """A record's settings with its relative file paths resolved against the folder bench ran in.

    ``harness bench --benchmark my.yaml`` records ``my.yaml`` as given; ``harness report RUN`` or
    ``verify RUN`` run from another folder must still find it. A relative path is taken from
    :func:`bench_folder` (or, when that is not known, from the current folder if it is there);
    a benchmark found in neither raises a ``FileNotFoundError`` naming the path, the run and the fix.
    """
    settings = dict(record.get("settings") or {})
    base = bench_folder(record, run_dir)
    for key in ("benchmark", "recipe", "data_root", "checkpoint"):
        value = settings.get(key)
        if not isinstance(value, str) or not _looks_like_path(key, value) or Path(value).is_absolute():
            continue
        if base is not None and (base / value).exists():
            settings[key] = str(base / value)
        elif key == "benchmark" and not Path(value).exists():
            where = f"the folder bench ran in ({base})" if base is not None else "the folder bench ran in"
            raise MissingInputError(
                f"{run_dir / RECORD} records the benchmark as {value!r}, relative to {where}, and it is "
                "not there or here: run this command from that folder, or put the file back"
            )
    return settings


def identity_of(record: Mapping[str, Any]) -> dict[str, Any]:
    """The result-defining settings of a record; records written before ``identity`` existed too."""
    if isinstance(record.get("identity"), dict):
        return dict(record["identity"])
    settings = record.get("settings", {})
    legacy = {
        "benchmark": (record.get("benchmark") or {}).get("name", settings.get("benchmark")),
        "network": record.get("network"),
        "seed": settings.get("seed"),
        "recipe": record.get("recipe"),
        "checkpoint": settings.get("checkpoint"),
    }
    return {key: value for key, value in legacy.items() if value is not None}


def identity_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Readable ``name: old -> new`` lines for every result-defining setting that differs."""
    differences = []
    for key in IDENTITY_FIELDS:
        if key not in old or key not in new:
            continue  # an older record did not keep it: nothing to compare against
        before, after = old[key], new[key]
        if isinstance(before, dict) and isinstance(after, dict):
            for sub in sorted(set(before) | set(after)):
                if _canonical(before.get(sub)) != _canonical(after.get(sub)):
                    differences.append(f"{key}.{sub}: {before.get(sub)!r} -> {after.get(sub)!r}")
        elif _canonical(before) != _canonical(after):
            differences.append(f"{key}: {before!r} -> {after!r}")
    return differences


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def check_run_folder(run_dir: Path, identity: Mapping[str, Any], overwrite: bool) -> bool:
    """Refuse a folder harness may not write into; True when its earlier results must be dropped.

    Allowed: a new or empty folder, a run folder of the same identity (resume, more detectors),
    or one of another identity with ``overwrite``. Never allowed: a folder holding files that
    harness did not write (even with ``overwrite``: those files are the user's).
    """
    if not run_dir.exists():
        return False
    if not run_dir.is_dir():
        raise RunFolderError(f"--out {run_dir} is a file, not a folder; pass a new or empty folder")
    names = {entry.name for entry in run_dir.iterdir() if not _is_temporary(entry.name)}
    record = read_record(run_dir)
    if record is None and (run_dir / RECORD).is_symlink():
        check_run_links(run_dir)  # a run whose record is a link: name the link
    if record is None:
        if names <= {"run.lock"}:
            return False  # a run killed before it wrote its record
        shown = ", ".join(sorted(names)[:6]) + (", ..." if len(names) > 6 else "")
        raise RunFolderError(
            f"{run_dir} holds files that harness did not write ({shown}): harness never writes into such a "
            "folder; pass a new or empty folder as --out"
        )
    check_run_links(run_dir)  # a run folder of harness's: no link planted in it is followed
    differences = identity_differences(identity_of(record), identity)
    if not differences:
        return False
    if overwrite:
        return True
    raise RunFolderError(
        f"{run_dir} holds a run made with other settings ({'; '.join(differences)}); its results would be "
        "replaced: pass another --out to keep both, or --overwrite to replace them"
    )


#: The run's own folders (and, under ``outputs/``, every folder): never a link.
RUN_FOLDERS = ("outputs", "report", "features")
#: Files a run reads back before it writes them again: a link there would be read through.
READ_BACK = (
    "run.json",
    "stages.json",
    "results.json",
    "results.csv",
    "classifier.resume.pt",
    "dfb.resume.pt",
)


def check_run_links(run_dir: Path) -> None:
    """Refuse symbolic links planted inside a run folder where the run would follow them.

    The run folder itself may be a link (the user's ``--out``). Inside it, a link in place of one
    of the run's folders (``outputs/``, ``outputs/<network>/``, ``outputs/<network>/perturbed-*/``,
    ``report/``, ``features/``) would send the run's writes, or a report's, into its target, and a
    link in place of a record the run reads back (``run.json``, ``stages.json``, results, resume
    checkpoints) would be read as the run's own. Under ``outputs/`` every link is refused, a set's
    folder or one of its ``.npy`` files alike: numpy maps an array by its name, so a link there
    would be read through. Links in place of other artifacts are not refused here: their checksum
    check fails (:func:`damaged`) and the artifact is recomputed and written by a rename, which
    replaces the link and never touches its target.
    """
    for name in RUN_FOLDERS:
        own_folder(run_dir, name, create=False)
    links = [run_dir / name for name in READ_BACK if (run_dir / name).is_symlink()]
    outputs = run_dir / "outputs"
    if outputs.is_dir():
        for root, dirs, files in os.walk(outputs):  # never descends into a link
            for name in [*dirs, *files]:
                path = Path(root) / name
                if stat.S_ISLNK(os.lstat(path).st_mode):
                    links.append(path)
    if links:
        raise RunFolderError(
            f"{links[0]} is a symbolic link; harness neither reads nor writes through a link planted in a "
            "run folder (it may point at another user's files): remove it (its target is not touched)"
            + (f"; {len(links) - 1} more such link(s) in {run_dir}" if len(links) > 1 else "")
        )


def _is_temporary(name: str) -> bool:
    """Atomic writes' temporaries (``.name.XXXX.tmp``), left behind only by a killed process."""
    return name.startswith(".") and ".tmp" in name


def remove_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporaries a killed process left in the run folder; call only under its lock.

    Under the lock no other process is writing here, so every such file is an abandoned write, and
    every such folder a set's outputs folder being written (:mod:`harness.array_folder`) or an old
    one moved aside to be replaced. A link is never followed (nor removed: check_run_links names it).
    """
    removed = []
    for path in sorted(run_dir.rglob(".*")):
        if path.is_symlink() or not _is_temporary(path.name):
            continue
        if path.is_file():
            path.unlink()
            removed.append(path)
        elif path.is_dir():
            shutil.rmtree(path)
            removed.append(path)
    return removed


# ---------------------------------------------------------------------------------------- record
def git_commit(folder: Path) -> str | None:
    """The project's git commit, if it is a git checkout (a run records what code produced it)."""
    try:
        result = subprocess.run(
            ["git", "-C", str(folder), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None


def package_versions() -> dict[str, str]:
    """Versions of the packages whose behaviour shapes the numbers."""
    versions = {"python": platform.python_version()}
    for name in ("dfb-ood", "torch", "torchvision", "timm", "numpy", "scikit-learn"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


# ---------------------------------------------------------------------------------------- checksums
def checksums(run_dir: Path, paths: Iterable[Path]) -> dict[str, str]:
    """sha256 of each artifact, keyed by its path relative to the run folder.

    An artifact that is a folder (a set's outputs, :mod:`harness.array_folder`) stands for its
    ``.npy`` files, each checksummed, in name order.
    """
    files = [file for path in paths for file in (array_files(path) if _is_folder(path) else [path])]
    return {path.relative_to(run_dir).as_posix(): file_checksum(path) for path in files}


def _is_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def _folder_files(
    run_dir: Path, recorded: Mapping[str, str] | None, folder: Path
) -> tuple[list[Path], list[str]]:
    """The files a folder artifact must be checked as: those recorded under it and those in it."""
    prefix = folder.relative_to(run_dir).as_posix() + "/"
    expected = sorted(run_dir / name for name in recorded or {} if name.startswith(prefix))
    if not _is_folder(folder):
        return expected, []
    try:
        present = array_files(folder)
    except RunFolderError as error:
        return expected, [str(error)]
    extra = sorted(set(present) - set(expected))
    if not expected:
        return [], [f"{prefix[:-1]} has no recorded checksums (written by an older version)"]
    return expected + extra, []


def damaged(run_dir: Path, recorded: Mapping[str, str] | None, paths: Sequence[Path]) -> list[str]:
    """The artifacts that are missing, unrecorded, or whose bytes differ from their checksum.

    A folder artifact (or a path recorded as one: its files are recorded under it) is checked file
    by file: every recorded file must be there and intact, and no other file may be.
    """
    problems = []
    files: list[Path] = []
    for path in paths:
        prefix = path.relative_to(run_dir).as_posix() + "/"
        if _is_folder(path) or any(name.startswith(prefix) for name in recorded or {}):
            found, trouble = _folder_files(run_dir, recorded, path)
            if trouble:
                problems.extend(trouble)
            elif not found:
                problems.append(f"{prefix[:-1]} is missing")
            files.extend(found)
        else:
            files.append(path)
    for path in files:
        name = path.relative_to(run_dir).as_posix()
        if path.is_symlink():
            problems.append(f"{name} is a symbolic link, not a file this run wrote")
        elif not path.is_file():
            problems.append(f"{name} is missing")
        elif recorded is None or name not in recorded:
            problems.append(f"{name} has no recorded checksum (written by an older version)")
        elif file_checksum(path) != recorded[name]:
            problems.append(f"{name} does not match the checksum recorded when it was written")
    return problems


# ---------------------------------------------------------------------------------------- results
#: The ``stages.json`` record that vouches for the results files, like a stage for its artifacts.
RESULTS_STAGE = "results"
RESULTS_FILES = ("results.csv", "results.json")


def _excel_resave(path: Path) -> bytes | None:
    """The bytes of a text file with a UTF-8 byte-order mark and CRLF line ends taken out, if it has
    either (what Excel and Windows editors add when a CSV is saved again); None when it has neither."""
    data = path.read_bytes()
    plain = data.removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n")
    return plain if plain != data else None


def results_status(run_dir: Path, name: str) -> tuple[str, str]:
    """Whether a results file is what the run wrote: ``("intact" | "damaged" | "unrecorded", detail)``.

    ``unrecorded``: the run predates results checksums: there is nothing to compare with.
    A results.csv whose only change is a byte-order mark and CRLF line ends (a re-save in Excel) is
    intact: its content is byte for byte what was written.
    """
    path = run_dir / name
    stages_path = run_dir / "stages.json"
    try:
        stages = json.loads(stages_path.read_text(encoding="utf-8")) if stages_path.is_file() else {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        stages = {}
    record = stages.get(RESULTS_STAGE) if isinstance(stages, dict) else None
    files = record.get("files") if isinstance(record, dict) else None
    if not isinstance(files, dict) or name not in files:
        return "unrecorded", ""
    problems = damaged(run_dir, files, [path])
    if not problems:
        return "intact", ""
    if path.is_file() and not path.is_symlink():
        plain = _excel_resave(path)
        if plain is not None and hashlib.sha256(plain).hexdigest() == files[name]:
            return "intact", "saved again with a byte-order mark / CRLF line ends; the content is as written"
    return "damaged", "; ".join(problems)


def check_results_intact(run_dir: Path, names: Sequence[str] = RESULTS_FILES) -> None:
    """Refuse results files that were changed after the run wrote them: they are not its results.

    One error naming the file and what to do: ``harness verify`` lists what changed, and evaluating
    again (``harness eval`` with the run's options) rewrites the results from the cached outputs.
    """
    for name in names:
        status, detail = results_status(run_dir, name)
        if status == "damaged":
            detectors = _recorded_detectors(run_dir)
            rerun = rerun_command(run_dir, detectors) if detectors else f"harness bench --out {run_dir}"
            raise RunFolderError(
                f"{run_dir / name} was changed after harness wrote it ({detail}), so it is not this run's "
                f"results and is not shown. `harness verify {run_dir}` lists what changed; `{rerun}` "
                "writes the results again from the run's cached outputs"
            )


#: BenchSettings fields that ``harness eval`` takes as options, and their flags.
_RERUN_OPTIONS = {
    "benchmark": "--benchmark",
    "recipe": "--recipe",
    "network": "--network",
    "seed": "--seed",
    "data_root": "--data-root",
    "checkpoint": "--checkpoint",
    "fpr_convention": "--fpr-convention",
    "foreground": "--foreground",
    "steps": "--steps",
    "batch_size": "--batch-size",
}


def rerun_command(run_dir: str | Path, detectors: Sequence[str]) -> str:
    """The ``harness eval`` command that evaluates ``detectors`` again in a finished run folder.

    Built from the settings its ``run.json`` records (the run folder refuses other settings), so it
    can be pasted as it is: every stage before the evaluation is found done and reused.
    """
    run_dir = Path(run_dir)
    words = ["harness", "eval", "--out", str(run_dir)]
    record = read_record(run_dir)
    settings = record.get("settings", {}) if record else {}
    for field_name, flag in _RERUN_OPTIONS.items():
        value = settings.get(field_name)
        if value is not None:
            words += [flag, str(value)]
    for field_name, flag in (("search", "--search"), ("skip_bad", "--skip-bad")):
        if settings.get(field_name):
            words.append(flag)
    words += ["--post", ",".join(detectors)]
    return " ".join(shlex.quote(word) for word in words)


def _recorded_detectors(run_dir: Path) -> list[str]:
    record = read_record(run_dir) or {}
    detectors = (record.get("settings") or {}).get("detectors")
    return [str(name) for name in detectors] if isinstance(detectors, list) else []


def merge_rows(
    earlier: Sequence[ResultRow], latest: Sequence[ResultRow]
) -> list[ResultRow]:
    """Earlier result rows with every detector evaluated again replaced by its latest rows.

    A detector's rows are replaced as a whole (all its OOD sets and means), in the place the
    detector had; detectors seen for the first time follow in their own order.
    """
    latest_by_detector: dict[str, list[ResultRow]] = {}
    for row in latest:
        latest_by_detector.setdefault(str(row["detector"]), []).append(dict(row))
    merged: list[ResultRow] = []
    placed: set[str] = set()
    for row in earlier:
        detector = str(row["detector"])
        if detector not in latest_by_detector:
            merged.append(dict(row))
        elif detector not in placed:
            merged.extend(latest_by_detector[detector])
            placed.add(detector)
    for detector, rows in latest_by_detector.items():
        if detector not in placed:
            merged.extend(rows)
    return merged


def merge_reports(
    earlier: Sequence[Mapping[str, Any]], latest: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Detector reports (notes, clamp counts) merged by detector name like :func:`merge_rows`."""
    latest_names = {report["name"] for report in latest}
    kept = [dict(report) for report in earlier if report.get("name") not in latest_names]
    return kept + [dict(report) for report in latest]


def merge_search(
    earlier: Mapping[str, Any], latest: Mapping[str, Any], evaluated: Iterable[str]
) -> dict[str, Any]:
    """The run record's hyper-parameter choices after an evaluation, kept in step with the rows.

    A detector evaluated again takes its latest choice, or none when it was evaluated without
    ``--search`` (its rows no longer come from the earlier choice); the others keep theirs.
    """
    evaluated = set(evaluated)
    kept = {name: dict(info) for name, info in earlier.items() if name not in evaluated}
    return {**kept, **{name: dict(info) for name, info in latest.items()}}


def earlier_results(run_dir: Path) -> tuple[list[ResultRow], list[dict[str, Any]], dict[str, str]]:
    """Rows, detector reports and each detector's data key from the run's earlier evaluations.

    The data key (:meth:`harness.run.Pipeline.data_key`) says what data a detector's rows were
    computed from; results written before it was recorded have none (empty mapping).
    """
    path = run_dir / "results.json"
    if not path.is_file():
        return [], [], {}
    results = read_json(path, follow_symlinks=False)
    inputs = results.get("inputs")
    return (
        list(results.get("rows", [])),
        list(results.get("detectors", [])),
        dict(inputs) if isinstance(inputs, dict) else {},
    )
