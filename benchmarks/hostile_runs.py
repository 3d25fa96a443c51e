"""Hostile-input cases for benchmarks/bad_inputs.py: reading and writing a run from outside it.

Names that are markup (``<script>``, ``<img onerror>``, ``|``, a newline) must reach report.md as
text; a report must not read a run a bench is writing; report and verify must work from any
folder; a folder or a text file given as ``--checkpoint`` must be named for what it is; a long
but legal output name must be writable; and a closed or broken stdout must end quietly.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from bad_inputs import Case, Ctx, Outcome, Prepared, bench, quick
from tiny_config import TINY_BENCHMARK

SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
#: A run folder name with every kind of markup: HTML, a table pipe, a newline. Benchmark and set
#: names become file names and are refused with markup (harness.names); a folder the user names
#: with ``--out`` may hold anything, and so may class names.
HOSTILE_NAME = f"run {IMG} a|b\nsecond line"
RAW_HTML = re.compile(r"(?<!\\)<\s*(script|img)\b", re.IGNORECASE)  # not after a backslash: escaped


def _hostile_benchmark() -> str:
    """The tiny benchmark with a class named ``<script>...`` and names full of Markdown characters."""
    text = TINY_BENCHMARK.replace("name: tiny_shapes", "name: tiny_shapes+v1.2")
    text = text.replace("    unseen:", "    un_seen+1:").replace("    textures:", "    tex-tures_a.b:")
    return text.replace("class_names: [circle,", f"class_names: [{json.dumps(SCRIPT)},")


def markup_report(ctx: Ctx, case_dir: Path) -> Prepared:
    """A finished run in a folder whose name is markup, of a benchmark with a markup class name,
    then ``harness report`` on it: the report must escape whatever reaches it."""
    run = case_dir / HOSTILE_NAME
    path = case_dir / "markup.yaml"
    path.write_text(_hostile_benchmark())
    ctx.setup_run(quick(ctx, run, benchmark=str(path)), case_dir, "the markup benchmark's bench")
    return Prepared(["report", str(run), "--quiet"], values={"run": run})


def report_is_text(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    """report.md holds no raw HTML tag, and every table row is one line with the header's cells."""
    path = prepared.values["run"] / "report" / "report.md"
    if not path.is_file():
        return ["no report.md was written"]
    text = path.read_text(encoding="utf-8")
    problems = []
    if RAW_HTML.search(text):
        problems.append(f"report.md holds raw HTML: {RAW_HTML.search(text).group(0)!r}")  # type: ignore[union-attr]
    if "second line" in text and not re.search(r"\\\\n ?second line|\\n ?second line", text):
        problems.append("the newline of the run folder's name reached report.md as a line break")
    cells: int | None = None
    for line in text.splitlines():
        if not line.startswith("|"):
            cells = None
            continue
        count = len(re.findall(r"(?<!\\)\|", line))
        if cells is None:
            cells = count
        elif count != cells:
            problems.append(f"a table row has {count - 1} cells, its header {cells - 1}: {line[:80]!r}")
    shown = next((line for line in text.splitlines() if line.startswith("Run directory:")), "")
    if "second line" not in shown:
        problems.append("the report's run directory line does not hold the whole folder name on one line")
    return problems


def report_locked(ctx: Ctx, case_dir: Path) -> Prepared:
    run = ctx.copy_base(case_dir)
    return Prepared(
        ["report", str(run), "--quiet"], hold_lock=run / "run.lock", watch=run, values={"run": run}
    )


_RELATIVE: dict[str, Path] = {}


def relative_run(ctx: Ctx) -> Path:
    """A finished run made with relative ``--benchmark``, ``--recipe`` and ``--out`` (built once)."""
    if "run" not in _RELATIVE:
        where = ctx.work / "relative-bench"
        where.mkdir()
        shutil.copy(ctx.tiny, where / "tiny.yaml")
        shutil.copy(ctx.recipe, where / "recipe.yaml")
        argv = quick(ctx, "run", benchmark="tiny.yaml")
        argv[argv.index("--recipe") + 1] = "recipe.yaml"
        ctx.setup_run(argv, where, "the relative-path bench")
        _RELATIVE["run"] = where / "run"
    return _RELATIVE["run"]


def from_elsewhere(command: str, old_record: bool = False):  # noqa: ANN201 - a case's prepare
    """``harness COMMAND RUN`` from the case's empty folder, on a run made with relative paths.

    With ``old_record`` the run is the bench folder's own (not a copy) and its run.json loses the
    ``cwd`` this version records, as a run made before it would have.
    """

    def prepare(ctx: Ctx, case_dir: Path) -> Prepared:
        if old_record:
            where = case_dir / "bench-here"
            shutil.copytree(relative_run(ctx).parent, where, symlinks=True)
            run = where / "run"
            record = json.loads((run / "run.json").read_text())
            record.pop("cwd", None)
            (run / "run.json").write_text(json.dumps(record, indent=2))
        else:
            run = relative_run(ctx)
        argv = [command, str(run)] + (["--quiet"] if command == "report" else [])
        return Prepared(argv, watch=case_dir / "cwd", values={"run": run})

    return prepare


def report_written_in_run(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    path = prepared.values["run"] / "report" / "report.md"
    return [] if path.is_file() else ["no report.md in the run folder"]


def checkpoint_folder(ctx: Ctx, case_dir: Path) -> Prepared:
    folder = case_dir / "weights"
    folder.mkdir()
    shutil.copy(ctx.base() / "classifier.safetensors", folder / "classifier.safetensors")
    return Prepared(quick(ctx, case_dir / "out", "--checkpoint", str(folder)))


def checkpoint_text(suffix: str):  # noqa: ANN201 - a case's prepare
    def prepare(ctx: Ctx, case_dir: Path) -> Prepared:
        path = case_dir / f"notes{suffix}"
        path.write_text("these are my notes, not weights\n")
        return Prepared(quick(ctx, case_dir / "out", "--checkpoint", str(path)))

    return prepare


def not_the_learning_rate(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    text = (outcome.stdout + outcome.stderr).lower()
    return ["the error blames the learning rate"] if "learning rate" in text or " lr" in text else []


LONG = "r" * 240


def long_csv(ctx: Ctx, case_dir: Path) -> Prepared:
    """bench on a finished run (all reused) writing ``--csv`` to a 244-byte file name."""
    run = ctx.copy_base(case_dir)
    target = case_dir / f"{LONG}.csv"
    return Prepared(bench(ctx, run, "--csv", str(target)), values={"run": run, "target": target})


def long_out(ctx: Ctx, case_dir: Path) -> Prepared:
    target = case_dir / ("o" * 244)
    return Prepared(quick(ctx, target), values={"target": target / "results.csv"})


def target_written(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    target = prepared.values["target"]
    problems = [] if target.is_file() else [f"{target.name[:20]}... was not written"]
    leftovers = [p.name[:30] for p in case_dir.rglob(".*.tmp")]
    return problems + ([f"temporary files left: {', '.join(leftovers)}"] if leftovers else [])


def shell(script: str):  # noqa: ANN201 - a case's prepare
    """A shell line around the harness command (``"$@"``); its exit code goes to stderr."""
    shown = script.replace('"$@"', "").split()
    return lambda ctx, case_dir: Prepared(shown, shell=script)


def quiet_exit(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    """The harness command's exit (echoed by the script) is 0 or 141, with nothing on stderr."""
    match = re.search(r"harness exit (\d+)", outcome.stderr)
    problems = []
    if match is None:
        problems.append("the script did not report the harness exit code")
    elif match.group(1) not in ("0", "141"):
        problems.append(f"harness exited {match.group(1)} (expected 0, or 141 for a closed pipe)")
    noise = re.sub(r"harness exit \d+\s*", "", outcome.stderr).strip()
    if noise:
        problems.append(f"stderr is not quiet: {noise.splitlines()[0][:120]!r}")
    return problems


def cases() -> list[Case]:
    return [
        Case(
            "runs-report-markup-names",
            "report of a run in a folder named <img onerror> a|b + newline, a class named <script>",
            markup_report,
            expect="ok",
            unchanged=False,
            check=report_is_text,
            expectation="exit 0; report.md shows every name as text: no raw HTML, one table row per line",
            harm="security",
        ),
        Case(
            "runs-report-locked",
            "report while a bench holds the run folder",
            report_locked,
            mentions=(("in use",), ("wait",)),
            unchanged=True,
            expectation="exit != 0 naming the holder ('in use by pid N; wait ...'); nothing written",
            harm="silent-wrong",
        ),
        Case(
            "runs-report-elsewhere",
            "report from another folder on a run made with a relative --benchmark path",
            from_elsewhere("report"),
            expect="ok",
            unchanged=True,
            check=report_written_in_run,
            expectation="exit 0, the report written; the benchmark found where bench ran",
            harm="failure",
        ),
        Case(
            "runs-verify-elsewhere",
            "verify from another folder on a run made with a relative --benchmark path",
            from_elsewhere("verify"),
            expect="ok",
            unchanged=True,
            expectation="exit 0, every artifact intact",
            harm="failure",
        ),
        Case(
            "runs-report-elsewhere-old-record",
            "report from another folder, relative --benchmark, a run.json without the recorded cwd",
            from_elsewhere("report", old_record=True),
            expect="ok",
            unchanged=True,
            check=report_written_in_run,
            expectation="exit 0: the bench folder is found from the recorded relative --out",
            harm="failure",
        ),
        Case(
            "runs-checkpoint-folder",
            "bench --checkpoint a folder (holding a .safetensors)",
            checkpoint_folder,
            mentions=(("folder", "directory"), (".safetensors",)),
            expectation="exit != 0 saying it is a folder and naming the file inside; nothing created",
            harm="unclear",
        ),
        Case(
            "runs-checkpoint-text-pt",
            "bench --checkpoint a text file saved as .pt",
            checkpoint_text(".pt"),
            mentions=(("notes.pt",), ("not a readable", "not a pytorch", "not a checkpoint")),
            check=not_the_learning_rate,
            expectation="exit != 0 naming the file as not a readable checkpoint (not the learning rate)",
            harm="unclear",
        ),
        Case(
            "runs-checkpoint-text-safetensors",
            "bench --checkpoint a text file saved as .safetensors",
            checkpoint_text(".safetensors"),
            mentions=(("notes.safetensors",), ("not a readable", "not a safetensors", "not a checkpoint")),
            check=not_the_learning_rate,
            expectation="exit != 0 naming the file as not a readable checkpoint (not the learning rate)",
            harm="unclear",
        ),
        Case(
            "runs-long-csv-name",
            "bench --csv a 244-byte file name (legal: NAME_MAX is 255)",
            long_csv,
            expect="ok",
            unchanged=False,
            check=target_written,
            expectation="exit 0, the CSV written, no temporary left",
            harm="failure",
        ),
        Case(
            "runs-long-out-leaf",
            "bench --out a folder with a 244-byte name",
            long_out,
            expect="ok",
            unchanged=False,
            check=target_written,
            expectation="exit 0, the run written, no temporary left",
            harm="failure",
        ),
        Case(
            "runs-list-head",
            "harness list | head -1",
            shell('{ "$@" list; echo "harness exit $?" >&2; } | head -1'),
            expect="ok",
            unchanged=True,
            check=quiet_exit,
            expectation="the first line; harness exits 0 or 141, nothing on stderr",
            harm="traceback",
        ),
        Case(
            "runs-list-closed-pipe",
            "harness list into a pipe whose reader has gone (| true)",
            shell('{ "$@" list; echo "harness exit $?" >&2; } | true'),
            expect="ok",
            unchanged=True,
            check=quiet_exit,
            expectation="harness exits 141 (or 0), nothing on stderr",
            harm="traceback",
        ),
        Case(
            "runs-list-closed-stdout",
            "harness list with stdout closed (>&-)",
            shell('"$@" list >&-; echo "harness exit $?" >&2'),
            expect="ok",
            unchanged=True,
            check=quiet_exit,
            expectation="harness exits 0, nothing on stderr",
            harm="traceback",
        ),
        Case(
            "runs-version-closed-stdout",
            "harness --version with stdout closed (>&-)",
            shell('"$@" --version >&-; echo "harness exit $?" >&2'),
            expect="ok",
            unchanged=True,
            check=quiet_exit,
            expectation="harness exits 0, nothing on stderr",
            harm="traceback",
        ),
    ]
