"""Hostile-input cases for benchmarks/bad_inputs.py: names that become paths, and links planted in
a run folder.

Names: a benchmark ``name``, an OOD set name (a near or far key of the YAML) becomes one component
of a path: ``runs/<benchmark>/<network>/seed<k>/`` (the default ``--out``) and
``outputs/<network>/<set>/``. A name with ``..``, a separator or an absolute path sends those
files out of the run folder (or replaces a user's file), and a newline, a NUL or 300 characters
break the file system mid-run. Each must be refused where the YAML is read, naming the file and
the name, with nothing created. Names with dots, dashes and pluses are controls.

Links: a run folder may be shared. A ``report/``, ``outputs/`` or ``outputs/<network>/`` that is a
symbolic link, or a figure in ``report/`` that links to a secret, must never be written through
(a user's files replaced) or read through (a secret copied into the page meant for publishing).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

from bad_inputs import Case, Ctx, Outcome, Prepared, png_bytes, quick, read_rows
from tiny_config import TINY_BENCHMARK

FAR_LINE = "    textures: {type: shapes, set: textures, count: 40, size: 16}\n"
NEAR_LINE = "    unseen: {type: shapes, set: near_unseen_shapes, count: 40, size: 16}\n"
SECRET = b"TOP-SECRET-7f3a9c: the key to the lab's storage\n"


# ---------------------------------------------------------------------------------------- helpers
def _yaml_key(text: str) -> str:
    """``text`` as a double-quoted YAML key (backslash escapes for quotes, newlines and NUL)."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\0", "\\0")
    return f'"{escaped}"'


def _benchmark(name: str | None = None, far: str | None = None, near: str | None = None) -> str:
    """The tiny benchmark with its name, its far set ``textures`` or its near set renamed."""
    text = TINY_BENCHMARK
    if name is not None:
        text = text.replace("name: tiny_shapes\n", f"name: {_yaml_key(name)}\n")
    if far is not None:
        text = text.replace(FAR_LINE, FAR_LINE.replace("textures:", f"{_yaml_key(far)}:", 1))
    if near is not None:
        text = text.replace(NEAR_LINE, NEAR_LINE.replace("unseen:", f"{_yaml_key(near)}:", 1))
    assert text != TINY_BENCHMARK or (name, far, near) == (None, None, None)
    return text


def _without_out(argv: list[str]) -> list[str]:
    """A command line with its ``--out`` and value removed: the run folder is the default one."""
    argv = list(argv)
    at = argv.index("--out")
    del argv[at : at + 2]
    return argv


def named(
    *,
    name: str | Callable[[Path], str] | None = None,
    far: str | Callable[[Path], str] | None = None,
    near: str | None = None,
    default_out: bool = False,
    protect: Callable[[Path], list[Path]] | None = None,
) -> Callable[[Ctx, Path], Prepared]:
    """``bench`` (MSP alone) on the tiny benchmark renamed; a callable name is given the case folder."""

    def prepare(ctx: Ctx, case_dir: Path) -> Prepared:
        text = _benchmark(
            name(case_dir) if callable(name) else name, far(case_dir) if callable(far) else far, near
        )
        path = case_dir / "my_benchmark.yaml"
        path.write_text(text)
        argv = quick(ctx, case_dir / "out", benchmark=str(path))
        guarded = protect(case_dir) if protect is not None else []
        return Prepared(_without_out(argv) if default_out else argv, protect=guarded)

    return prepare


def _victim(case_dir: Path) -> list[Path]:
    """The user's folder ``victim/`` beside the case, which an absolute set name would replace."""
    victim = case_dir / "victim" / "logits.npy"
    victim.parent.mkdir(parents=True, exist_ok=True)
    victim.write_bytes(b"my own arrays, not harness's\n")
    return [victim]


def _only_in_runs(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    """Everything the run wrote lies under ``cwd/runs/``, in the folder its (legit) names make."""
    cwd = case_dir / "cwd"
    outside = [p.name for p in case_dir.iterdir() if p.name not in ("cwd", "my_benchmark.yaml")]
    outside += [p.name for p in cwd.iterdir() if p.name != "runs"]
    problems = [f"created outside cwd/runs: {', '.join(sorted(outside))}"] if outside else []
    run = cwd / "runs" / "tiny-v1.2+b" / "rv2_tiny" / "seed0"
    if not (run / "results.csv").is_file():
        problems.append("no results.csv in runs/tiny-v1.2+b/rv2_tiny/seed0")
    else:
        sets = {row["dataset"] for row in read_rows(run / "results.csv")}
        if not {"near-1.a", "far_2+b.v3"} <= sets:
            problems.append(f"the OOD sets' rows are missing (datasets: {sorted(sets)})")
        for kind in ("classifier",):
            for set_name in ("near-1.a", "far_2+b.v3"):
                if not (run / "outputs" / kind / set_name / "logits.npy").is_file():
                    problems.append(f"no outputs/{kind}/{set_name}/logits.npy")
    return problems


def _nothing_escaped(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    """No folder made beside the case's own ones (``..`` names land there), none at the absolute one."""
    expected = {"cwd", "my_benchmark.yaml", "victim", "out"}
    extra = sorted(p.name for p in case_dir.iterdir() if p.name not in expected)
    problems = [f"created outside the run folder: {', '.join(extra)}"] if extra else []
    if (case_dir / "cwd").is_dir() and any((case_dir / "cwd").iterdir()):
        problems.append("created files in the working folder")
    return problems


# ------------------------------------------------------------------------------ planted links
def _run_with(change: Callable[[Path, Path], list[Path]], argv: Callable[[Ctx, Path, Path], list[str]]):
    """A copy of the finished run, changed (the change returns the user's files to protect), then argv."""

    def prepare(ctx: Ctx, case_dir: Path) -> Prepared:
        run = ctx.copy_base(case_dir)
        guarded = change(run, case_dir)
        target = case_dir / "elsewhere"
        files = sorted(str(p.relative_to(target)) for p in target.rglob("*")) if target.is_dir() else []
        return Prepared(argv(ctx, case_dir, run), protect=guarded, values={"run": run, "elsewhere": files})

    return prepare


def _report_linked(run: Path, case_dir: Path) -> list[Path]:
    """``report/`` is a link to a user's folder that holds their own report.md."""
    mine = case_dir / "my_paper"
    mine.mkdir()
    (mine / "report.md").write_text("# My paper's report: weeks of work\n")
    (mine / "fig1.png").write_bytes(png_bytes((10, 200, 10)))
    shutil.rmtree(run / "report", ignore_errors=True)
    (run / "report").symlink_to(mine, target_is_directory=True)
    return [mine / "report.md", mine / "fig1.png"]


def _report_md_linked(run: Path, case_dir: Path) -> list[Path]:
    """``report/report.md`` is a link to a user's file (the report folder itself is the run's)."""
    mine = case_dir / "my_notes.md"
    mine.write_text("# my notes, not a report\n")
    (run / "report").mkdir(exist_ok=True)
    (run / "report" / "report.md").symlink_to(mine)
    return [mine]


def _figure_linked(run: Path, case_dir: Path) -> list[Path]:
    """``report/`` holds one real figure and ``roc_msp.png``, a link to a secret file."""
    secret = case_dir / "secret.key"
    secret.write_bytes(SECRET)
    report = run / "report"
    report.mkdir(exist_ok=True)
    (report / "auroc_bars.png").write_bytes(png_bytes((200, 10, 10)))
    (report / "report.md").write_text("# DFB report\n\n![auroc_bars](auroc_bars.png)\n\n*bars*\n")
    (report / "roc_msp.png").symlink_to(secret)
    return [secret]


def _results_linked(run: Path, case_dir: Path) -> list[Path]:
    """``results.csv`` is a link to another user's results (a detector name marks them)."""
    theirs = case_dir / "their_results.csv"
    theirs.write_text((run / "results.csv").read_text().replace(",msp,", ",SECRETDETECTOR,"))
    (run / "results.csv").unlink()
    (run / "results.csv").symlink_to(theirs)
    return [theirs]


def _link_folder(relative: str) -> Callable[[Path, Path], list[Path]]:
    """The run's ``relative`` folder replaced by a link to an empty folder outside the run."""

    def change(run: Path, case_dir: Path) -> list[Path]:
        target = case_dir / "elsewhere"
        target.mkdir()
        (target / "keep.txt").write_text("a file of the link target's owner\n")
        shutil.rmtree(run / relative)
        (run / relative).symlink_to(target, target_is_directory=True)
        return [target / "keep.txt"]

    return change


def _perturbed_linked(run: Path, case_dir: Path) -> list[Path]:
    """Each ``outputs/<network>/perturbed-*/`` (ODIN's own pass) linked to an empty folder outside."""
    folders = sorted((run / "outputs").glob("*/perturbed-*"))
    if not folders:
        raise RuntimeError(
            "the finished run has no outputs/*/perturbed-* folder (is ODIN among its detectors?)"
        )
    target = case_dir / "elsewhere"
    target.mkdir()
    (target / "keep.txt").write_text("a file of the link target's owner\n")
    for folder in folders:
        shutil.rmtree(folder)
        folder.symlink_to(target, target_is_directory=True)
    return [target / "keep.txt"]


def _target_untouched(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    """No file added to, or removed from, the link's target (the protected ones: none changed)."""
    target = case_dir / "elsewhere"
    now = sorted(str(p.relative_to(target)) for p in target.rglob("*"))
    added = sorted(set(now) - set(prepared.values["elsewhere"]))
    gone = sorted(set(prepared.values["elsewhere"]) - set(now))
    problems = [f"wrote into the link's target: {', '.join(added[:4])}"] if added else []
    return problems + ([f"removed from the link's target: {', '.join(gone[:4])}"] if gone else [])


def _copied_outputs_linked(run: Path, case_dir: Path) -> list[Path]:
    """``outputs/`` moved outside the run and linked back: the same bytes, only the link betrays it."""
    target = case_dir / "elsewhere"
    shutil.move(str(run / "outputs"), target)
    (run / "outputs").symlink_to(target, target_is_directory=True)
    return sorted(p for p in target.rglob("*") if p.is_file())


def _user_folder_untouched(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    extra = sorted(
        p.name for p in (case_dir / "my_paper").iterdir() if p.name not in ("report.md", "fig1.png")
    )
    return [f"wrote into the user's folder: {', '.join(extra[:4])}"] if extra else []


def _secret_kept(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    """The secret's bytes appear in no file of the page (nor in the output), the real figure does."""
    page = case_dir / "page"
    problems = []
    marker = SECRET.strip()[:24]
    leaked = (
        [
            str(p.relative_to(page))
            for p in page.rglob("*")
            if p.is_file() and not p.is_symlink() and marker in p.read_bytes()
        ]
        if page.is_dir()
        else []
    )
    if leaked:
        problems.append(f"the secret file's bytes were copied into the page: {', '.join(leaked)}")
    if marker.decode() in outcome.stdout + outcome.stderr:
        problems.append("the secret file's bytes were printed")
    if outcome.exit_code == 0 and not any(page.rglob("auroc_bars.png")):
        problems.append("the run's own figure auroc_bars.png is missing from the page")
    return problems


def _results_not_read(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    page = case_dir / "page"
    text = outcome.stdout + outcome.stderr
    if page.is_dir():
        text += "".join(p.read_text(errors="replace") for p in page.rglob("*.html"))
    return ["the linked results (another user's) were read into the page"] if "SECRETDETECTOR" in text else []


def _report_replaced_link(ctx: Ctx, case_dir: Path, prepared: Prepared, outcome: Outcome) -> list[str]:
    report = prepared.values["run"] / "report" / "report.md"
    if report.is_symlink():
        return ["report/report.md is still the link (the report was not written in its place)"]
    return [] if report.is_file() else ["no report/report.md written"]


def page_args(ctx: Ctx, case_dir: Path, run: Path) -> list[str]:
    return ["leaderboard", str(run), "--html", str(case_dir / "page")]


def report_args(ctx: Ctx, case_dir: Path, run: Path) -> list[str]:
    return ["report", str(run), "--quiet"]


def bench_again(ctx: Ctx, case_dir: Path, run: Path) -> list[str]:
    from bad_inputs import bench

    return bench(ctx, run)


# ------------------------------------------------------------------------------------------ cases
def cases() -> list[Case]:
    out: list[Case] = []

    def add(*args: object, **kwargs: object) -> None:
        out.append(Case(*args, **kwargs))  # type: ignore[arg-type]

    # -- names that become paths --------------------------------------------------------------
    add(
        "paths-ood-dotdot",
        "far-OOD set named ../../../x/far (its outputs/classifier/<set>/ leaves the run folder)",
        named(far="../../../x/far"),
        mentions=(("../../../x/far",), ("my_benchmark.yaml",)),
        check=_nothing_escaped,
        harm="security",
    )
    add(
        "paths-ood-absolute",
        "far-OOD set named by the absolute path of a user's victim (a folder victim/ beside it)",
        named(far=lambda d: str(d / "victim"), protect=_victim),
        mentions=(("victim",), ("my_benchmark.yaml",)),
        check=_nothing_escaped,
        harm="security",
    )
    add(
        "paths-near-slash",
        "near-OOD set named extra/unseen (a slash: a folder inside outputs/)",
        named(near="extra/unseen"),
        mentions=(("extra/unseen",), ("separator",)),
        harm="security",
    )
    add(
        "paths-benchmark-dotdot",
        "benchmark name: ../../escaped with the default --out (runs/<benchmark>/... leaves runs/)",
        named(name="../../escaped", default_out=True),
        mentions=(("../../escaped",), ("my_benchmark.yaml",)),
        check=_nothing_escaped,
        harm="security",
    )
    add(
        "paths-benchmark-absolute",
        "benchmark name: an absolute path with the default --out",
        named(name=lambda d: str(d / "abs" / "path"), default_out=True),
        mentions=(("abs/path",), ("my_benchmark.yaml",)),
        check=_nothing_escaped,
        harm="security",
    )
    add(
        "paths-name-newline",
        'benchmark name with a newline ("tiny\\nshapes") and the default --out',
        named(name="tiny\nshapes", default_out=True),
        mentions=(("control character",), ("my_benchmark.yaml",)),
        harm="silent-wrong",
    )
    add(
        "paths-name-nul",
        'far-OOD set name with a NUL character ("far\\0x")',
        named(far="far\0x"),
        mentions=(("control character",), ("my_benchmark.yaml",)),
        harm="unclear",
    )
    add(
        "paths-name-long",
        "far-OOD set name of 300 characters (longer than a file name may be)",
        named(far="f" * 300),
        mentions=(("300 characters",), ("my_benchmark.yaml",)),
        harm="unclear",
    )
    add(
        "paths-names-control",
        "names with dots, dashes and + (benchmark tiny-v1.2+b, sets near-1.a, far_2+b.v3), default --out",
        named(name="tiny-v1.2+b", near="near-1.a", far="far_2+b.v3", default_out=True),
        expect="ok",
        unchanged=False,
        check=_only_in_runs,
        expectation="exit 0, the run in cwd/runs/tiny-v1.2+b/rv2_tiny/seed0 with both sets' outputs",
    )
    # -- links planted in a run folder --------------------------------------------------------
    add(
        "paths-report-link",
        "report/ of a finished run is a link to my folder holding my report.md; harness report RUN",
        _run_with(_report_linked, report_args),
        mentions=(("symbolic link",), ("report",)),
        check=_user_folder_untouched,
        expectation="exit != 0 naming the link; my report.md and folder untouched, nothing written",
        harm="data-loss",
    )
    add(
        "paths-report-md-link",
        "report/report.md of a finished run is a link to my notes; harness report RUN (control)",
        _run_with(_report_md_linked, report_args),
        expect="ok",
        check=_report_replaced_link,
        unchanged=False,
        expectation="exit 0, the link replaced by the report, my notes untouched",
        harm="data-loss",
    )
    add(
        "paths-page-figure-link",
        "report/roc_msp.png of a finished run links to a secret file; leaderboard RUN --html PAGE",
        _run_with(_figure_linked, page_args),
        expect="any",
        check=_secret_kept,
        unchanged=False,
        expectation="no byte of the secret in the page (the link is skipped or refused); no traceback",
        harm="security",
    )
    add(
        "paths-page-results-link",
        "results.csv of a finished run links to another user's results; leaderboard RUN --html PAGE",
        _run_with(_results_linked, page_args),
        mentions=(("symbolic link",), ("results.csv",)),
        check=_results_not_read,
        expectation="exit != 0 naming the link; nothing of the linked file read, nothing written",
        harm="security",
    )
    add(
        "paths-outputs-link",
        "outputs/ of a finished run is a link to a folder outside it; the same bench again",
        _run_with(_link_folder("outputs"), bench_again),
        mentions=(("symbolic link",), ("outputs",)),
        check=_target_untouched,
        harm="security",
    )
    add(
        "paths-outputs-net-link",
        "outputs/classifier/ of a finished run is a link to a folder outside it; the same bench again",
        _run_with(_link_folder("outputs/classifier"), bench_again),
        mentions=(("symbolic link",), ("classifier",)),
        check=_target_untouched,
        harm="security",
    )
    add(
        "paths-perturbed-link",
        "outputs/*/perturbed-*/ (ODIN's own pass) of a finished run linked outside; the same bench again",
        _run_with(_perturbed_linked, bench_again),
        mentions=(("symbolic link",), ("perturbed-",)),
        check=_target_untouched,
        harm="security",
    )
    add(
        "paths-outputs-link-report",
        "outputs/ of a finished run is a link to a copy outside it; harness report RUN --out elsewhere",
        _run_with(
            _copied_outputs_linked, lambda ctx, d, run: [*report_args(ctx, d, run), "--out", str(d / "rep")]
        ),
        mentions=(("symbolic link",), ("outputs",)),
        check=_target_untouched,
        expectation="exit != 0 naming the link (a run is read through its own folders only), nothing written",
        harm="security",
    )
    return out
