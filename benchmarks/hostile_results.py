"""Hostile-input cases for benchmarks/bad_inputs.py: exports that would replace files harness did not
write, and results files that were edited, cut off or mixed.

Two classes (issue 22):

- an export (``leaderboard -o``, ``--format openood -o DIR``, ``report --out DIR``) must never replace
  a user's file or a run's own results, and writes *into* ``/dev/null`` or ``/dev/stdout`` rather
  than replacing the device node or link;
- results that harness did not write as they are (a hand-edited AUROC, a cut-off row, a 200 KB
  cell, an edited results.json, two runs of one seed) are refused with one message naming the file
  and the fix, while an Excel re-save of an untouched results.csv is still read.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import stat
from collections.abc import Callable
from pathlib import Path

from bad_inputs import Case, Ctx, Outcome, Prepared, on_finished_run

RESULTS_FIX = ("harness verify", "harness eval", "harness bench")


def _rows(run: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(run / "results.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _write_rows(run: Path, fields: list[str], rows: list[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    (run / "results.csv").write_text(buffer.getvalue(), encoding="utf-8")


def _set_cell(column: str, value: str, dataset: str = "near_mean") -> Callable[[Path, Path], None]:
    """Hand-edit one cell of the run's results.csv (the first row of ``dataset``)."""

    def change(run: Path, case_dir: Path) -> None:
        fields, rows = _rows(run)
        next(row for row in rows if row["dataset"] == dataset)[column] = value
        _write_rows(run, fields, rows)

    return change


def _leaderboard(ctx: Ctx, case_dir: Path, run: Path) -> list[str]:
    return ["leaderboard", str(run)]


def _verify(ctx: Ctx, case_dir: Path, run: Path) -> list[str]:
    return ["verify", str(run)]


def _rehash_results(run: Path) -> None:
    """Record the results files' checksums again (as a run that really wrote them would have)."""
    stages = json.loads((run / "stages.json").read_text())
    if "results" in stages:
        for name in stages["results"]["files"]:
            stages["results"]["files"][name] = hashlib.sha256((run / name).read_bytes()).hexdigest()
        (run / "stages.json").write_text(json.dumps(stages, indent=2))


def _as_other_run(run: Path, seed: int, other_data: bool) -> None:
    """Make a copy of the finished run look like a run of another seed (and, optionally, of other data)."""
    fields, rows = _rows(run)
    for row in rows:
        row["seed"] = str(seed)
    _write_rows(run, fields, rows)
    results = json.loads((run / "results.json").read_text())
    for row in results["rows"]:
        row["seed"] = seed
    if other_data:
        results["inputs"] = {name: "0123456789abcdef" for name in results.get("inputs", {})}
    (run / "results.json").write_text(json.dumps(results, indent=2))
    record = json.loads((run / "run.json").read_text())
    record["identity"]["seed"] = seed
    record["settings"]["seed"] = seed
    if other_data:
        record["identity"]["benchmark_definition"] = "0123456789abcdef"
    (run / "run.json").write_text(json.dumps(record, indent=2))
    _rehash_results(run)


def two_runs(seed: int, other_data: bool) -> Callable[[Ctx, Path], Prepared]:
    def prepare(ctx: Ctx, case_dir: Path) -> Prepared:
        first = ctx.copy_base(case_dir, "run_a")
        second = ctx.copy_base(case_dir, "run_b")
        if seed != 0 or other_data:
            _as_other_run(second, seed, other_data)
        return Prepared(["leaderboard", str(first), str(second)], values={"run": first})

    return prepare


def _restore_device(path: str) -> str:
    """Put back ``/dev/null`` or ``/dev/stdout`` that a broken export replaced (as root it can): the
    battery must not leave the machine without them. Returns what was done, for the case's record."""
    if os.geteuid() != 0:
        return f"{path} could not be restored (not root)"
    os.unlink(path)
    if path == "/dev/null":
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        os.chmod(path, 0o666)
    else:
        os.symlink("/proc/self/fd/1", path)
    return f"{path} restored by the battery"


def _device_kept(
    path: str, kind: Callable[[int], bool]
) -> Callable[[Ctx, Path, Prepared, Outcome], list[str]]:
    def check(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
        problems = []
        if not kind(os.stat(path).st_mode):
            problems.append(f"{path} is no longer a device / stream (replaced by a regular file?)")
            problems.append(_restore_device(path))
        elif path == "/dev/stdout" and not os.path.islink(path):
            problems.append("/dev/stdout is no longer a link")
            problems.append(_restore_device(path))
        if path == "/dev/stdout" and "| detector" not in outcome.stdout:
            problems.append("the markdown table did not reach stdout")
        return problems

    return check


def _export_into(
    ctx: Ctx, case_dir: Path, user_file: str, argv: Callable[[Path, Path], list[str]]
) -> Prepared:
    """A finished run and a folder DIR holding a file of the user's; ``argv(run, DIR)``."""
    run = ctx.copy_base(case_dir)
    folder = case_dir / "mine"
    folder.mkdir()
    (folder / user_file).write_text("my own notes, not an export\n")
    return Prepared(argv(run, folder), protect=[folder / user_file], values={"run": run})


def cases() -> list[Case]:
    out: list[Case] = []
    # -- exports never replace what harness did not write -------------------------------------
    out.append(
        Case(
            "results-export-over-results",
            "leaderboard RUN --format csv -o RUN/results.csv (the run's own results)",
            lambda ctx, d: (
                lambda run: Prepared(
                    ["leaderboard", str(run), "--format", "csv", "-o", str(run / "results.csv")],
                    protect=[run / "results.csv"],
                    values={"run": run},
                )
            )(ctx.copy_base(d)),
            mentions=(("results.csv",),),
            harm="data-loss",
        )
    )
    out.append(
        Case(
            "results-export-over-user-file",
            "leaderboard RUN --format markdown -o mine/table.md, a file of mine",
            lambda ctx, d: _export_into(
                ctx,
                d,
                "table.md",
                lambda run, dir_: [
                    "leaderboard",
                    str(run),
                    "--format",
                    "markdown",
                    "-o",
                    str(dir_ / "table.md"),
                ],  # fmt: skip
            ),
            mentions=(("table.md",), ("--overwrite",)),
            harm="data-loss",
        )
    )

    def export_twice(ctx: Ctx, case_dir: Path) -> Prepared:
        run = ctx.copy_base(case_dir)
        argv = ["leaderboard", str(run), "--format", "markdown", "-o", str(case_dir / "table.md")]
        ctx.setup_run(argv, case_dir, "the first export")
        return Prepared(argv, values={"run": run})

    out.append(
        Case(
            "results-export-again",
            "the same leaderboard -o table.md twice (control: harness may replace its own export)",
            export_twice,
            expect="ok",
            harm="failure",
        )
    )
    out.append(
        Case(
            "results-openood-user-manifest",
            "leaderboard RUN --format openood -o DIR, DIR holding my manifest.json",
            lambda ctx, d: _export_into(
                ctx,
                d,
                "manifest.json",
                lambda run, dir_: ["leaderboard", str(run), "--format", "openood", "-o", str(dir_)],
            ),  # fmt: skip
            mentions=(("manifest.json",), ("--overwrite",)),
            harm="data-loss",
        )
    )
    out.append(
        Case(
            "results-report-user-md",
            "report RUN --out DIR, DIR holding my report.md",
            lambda ctx, d: _export_into(
                ctx, d, "report.md", lambda run, dir_: ["report", str(run), "--out", str(dir_), "--quiet"]
            ),
            mentions=(("report.md",), ("--out",)),
            harm="data-loss",
        )
    )
    out.append(
        Case(
            "results-export-dev-null",
            "leaderboard RUN --format markdown -o /dev/null",
            on_finished_run(
                None, lambda ctx, d, run: ["leaderboard", str(run), "--format", "markdown", "-o", "/dev/null"]
            ),  # fmt: skip
            expect="ok",
            unchanged=True,
            check=_device_kept("/dev/null", stat.S_ISCHR),
            expectation="exit 0; /dev/null still a character device",
            harm="security",
        )
    )
    out.append(
        Case(
            "results-export-dev-stdout",
            "leaderboard RUN --format markdown -o /dev/stdout",
            on_finished_run(
                None,
                lambda ctx, d, run: ["leaderboard", str(run), "--format", "markdown", "-o", "/dev/stdout"],
            ),  # fmt: skip
            expect="ok",
            unchanged=True,
            check=_device_kept("/dev/stdout", lambda mode: True),  # whatever the runner's stdout is
            expectation="exit 0; the table on stdout; /dev/stdout still a link",
            harm="security",
        )
    )
    # -- results that are not what the run wrote ----------------------------------------------
    for value, name in (("1.5", "1p5"), ("-0.2", "neg0p2"), ("nan", "nan"), ("inf", "inf"), ("150", "150")):
        out.append(
            Case(
                f"results-auroc-{name}",
                f"AUROC {value} hand-edited into results.csv, then leaderboard",
                on_finished_run(_set_cell("auroc", value), _leaderboard),
                mentions=(("results.csv",), (value,), RESULTS_FIX),
                harm="silent-wrong",
            )
        )
    out.append(
        Case(
            "results-edited-plausible",
            "a plausible AUROC (0.99) hand-edited into results.csv, then leaderboard",
            on_finished_run(_set_cell("auroc", "0.99"), _leaderboard),
            mentions=(("results.csv",), ("harness verify",)),
            harm="silent-wrong",
        )
    )
    out.append(
        Case(
            "results-verify-csv",
            "verify after hand-editing an AUROC in results.csv",
            on_finished_run(_set_cell("auroc", "0.99"), _verify),
            mentions=(("results.csv",), ("damaged",)),
            harm="silent-wrong",
        )
    )

    def edit_json(run: Path, case_dir: Path) -> None:
        results = json.loads((run / "results.json").read_text())
        results["rows"][0]["auroc"] = 0.99
        (run / "results.json").write_text(json.dumps(results, indent=2))

    out.append(
        Case(
            "results-verify-json",
            "verify after hand-editing an AUROC in results.json",
            on_finished_run(edit_json, _verify),
            mentions=(("results.json",), ("damaged",)),
            harm="silent-wrong",
        )
    )

    def cut_mid_row(run: Path, case_dir: Path) -> None:
        data = (run / "results.csv").read_bytes()
        middle = data.index(b"\n", len(data) // 2) + 20  # 20 bytes into a row
        (run / "results.csv").write_bytes(data[:middle])

    out.append(
        Case(
            "results-cut-mid-row",
            "results.csv cut off in the middle of a row, then leaderboard",
            on_finished_run(cut_mid_row, _leaderboard),
            mentions=(("results.csv",), RESULTS_FIX),
            harm="silent-wrong",
        )
    )

    def cut_at_row(run: Path, case_dir: Path) -> None:
        lines = (run / "results.csv").read_bytes().splitlines(keepends=True)
        (run / "results.csv").write_bytes(b"".join(lines[:-3]))

    out.append(
        Case(
            "results-cut-whole-rows",
            "results.csv with its last three rows cut off (at a line end), then leaderboard",
            on_finished_run(cut_at_row, _leaderboard),
            mentions=(("results.csv",), RESULTS_FIX),
            harm="silent-wrong",
        )
    )
    out.append(
        Case(
            "results-huge-cell",
            "a 200 KB cell in results.csv, then leaderboard",
            on_finished_run(_set_cell("hyperparameters", "x" * 200_000), _leaderboard),
            mentions=(("results.csv",),),
            harm="traceback",
        )
    )

    def excel_resave(run: Path, case_dir: Path) -> None:
        data = (run / "results.csv").read_bytes()
        (run / "results.csv").write_bytes(b"\xef\xbb\xbf" + data.replace(b"\n", b"\r\n"))

    out.append(
        Case(
            "results-excel-resave",
            "the run's own results.csv saved again with a BOM and CRLF (content unchanged), then leaderboard",
            on_finished_run(excel_resave, _leaderboard),
            expect="ok",
            unchanged=True,
            harm="failure",
        )
    )
    out.append(
        Case(
            "results-same-seed-twice",
            "leaderboard of two copies of one run (the same seed) as if two seeds",
            two_runs(0, False),
            mentions=(("seed",), ("run_a",), ("run_b",)),
            harm="silent-wrong",
        )
    )
    out.append(
        Case(
            "results-same-seed-other-data",
            "leaderboard of two runs of the same seed made from different data",
            two_runs(0, True),
            mentions=(("seed", "benchmark_definition", "data"), ("run_a",), ("run_b",)),
            harm="silent-wrong",
        )
    )
    out.append(
        Case(
            "results-other-data-two-seeds",
            "leaderboard of seed 0 and seed 1 made from different data (an edited benchmark)",
            two_runs(1, True),
            mentions=(("benchmark_definition", "data"), ("run_a",), ("run_b",)),
            harm="silent-wrong",
        )
    )
    out.append(
        Case(
            "results-two-seeds-control",
            "leaderboard of seed 0 and seed 1 of one experiment (control)",
            two_runs(1, False),
            expect="ok",
            unchanged=True,
            harm="failure",
        )
    )
    return out
