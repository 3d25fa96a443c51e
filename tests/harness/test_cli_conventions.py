"""The CLI's conventions, for every command: --version, completion, choices, --debug, stderr, exit codes.

Commands are found by walking the click tree Typer builds, so a command added later is checked
too, and fails here until it follows the conventions (takes --debug, and has a failing invocation
in ``FAILING`` whose error lands on stderr with the documented exit code).
"""

from __future__ import annotations

import re
from importlib import metadata
from pathlib import Path
from typing import get_args

import pytest
import typer
from typer.testing import CliRunner

from dfb_ood.harness import cli, cli_options, errors, export, plots
from dfb_ood.harness.cli import app
from dfb_ood.harness.cli_errors import INTERRUPTED_MESSAGE, exit_codes_epilog
from dfb_ood.harness.errors import EXIT_BAD_INPUT, EXIT_CODES, EXIT_INTERRUPTED, EXIT_MISSING_INPUT
from dfb_ood.harness.leaderboard import SORT_KEYS

runner = CliRunner()
WIDE = {"COLUMNS": "240"}  # rich wraps help at the terminal's width; one line per option here


def _commands(group: object, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every command and group below ``group`` (the root included, as ``()``), by its words."""
    found = {path: group}
    for name, command in getattr(group, "commands", {}).items():
        found.update(_commands(command, (*path, name)))
    return found


COMMANDS = _commands(typer.main.get_command(app))
LEAVES = sorted(path for path, command in COMMANDS.items() if not hasattr(command, "commands"))


def _plain(text: str) -> str:
    """Help text without rich's box characters and line breaks: the words in order."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


# ------------------------------------------------------------------------------ version, completion
def test_version_prints_the_package_and_torch_versions():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.startswith(f"harness {metadata.version('dfb-ood')} ")
    assert f"torch {metadata.version('torch')}" in result.stdout
    assert result.stdout == cli.version_text() + "\n"
    assert runner.invoke(app, ["--version", "bench", "--nope"]).exit_code == 0  # eager: before the rest


def test_help_offers_shell_completion_and_lists_every_exit_code():
    result = runner.invoke(app, ["--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    text = _plain(result.stdout)
    assert "--install-completion" in text and "--show-completion" in text
    for code, meaning in EXIT_CODES.items():
        assert f"{code} {meaning}" in text, code
    assert _plain(exit_codes_epilog()) in text


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("harness li", ["list"]),
        ("harness bench --fpr-convention ", ["paper", "openood"]),
        ("harness report RUN --figure-format ", ["png", "pdf", "svg"]),
        ("harness list ", ["detectors", "networks", "recipes", "benchmarks", "all"]),
    ],
)
def test_shell_completion_completes_commands_and_choices(words: str, expected: list[str]):
    current = len(words.split()) - (0 if words.endswith(" ") else 1)  # the word being completed
    env = {"_HARNESS_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(current)}
    result = runner.invoke(app, [], prog_name="harness", env=env)
    assert result.exit_code == 0, result.output
    assert result.stdout.split() == expected


def test_the_exit_code_table_in_the_docs_is_the_one_in_the_code():
    documented = re.findall(r"^(\d+)\s{2,}\S", errors.__doc__ or "", flags=re.MULTILINE)
    assert [int(code) for code in documented] == list(EXIT_CODES)


# ------------------------------------------------------------------------------ choices
CHOICES = {
    (("bench",), "--fpr-convention"): ("paper", "openood"),
    (("eval",), "--fpr-convention"): ("paper", "openood"),
    (("bench",), "--foreground"): ("dfb", "classifier"),
    (("eval",), "--foreground"): ("dfb", "classifier"),
    (("bench",), "--launcher"): ("none", "torchrun"),
    (("masks",), "--launcher"): ("none", "torchrun"),
    (("bench",), "--sort-by"): tuple(SORT_KEYS),
    (("leaderboard",), "--sort-by"): tuple(SORT_KEYS),
    (("bench",), "--figure-format"): plots.FIGURE_FORMATS,
    (("report",), "--figure-format"): plots.FIGURE_FORMATS,
    (("list",), "what"): ("detectors", "networks", "recipes", "benchmarks", "all"),
    (("leaderboard",), "--format"): export.FORMATS,
    (("leaderboard",), "--aupr"): ("ap", "trapezoid"),
    (("leaderboard",), "--fpr-convention"): ("paper", "openood"),
}


@pytest.mark.parametrize(("path", "option"), list(CHOICES))
def test_choice_options_are_choices_listed_in_the_help(path: tuple[str, ...], option: str):
    help_text = _plain(runner.invoke(app, [*path, "--help"], env=WIDE).stdout)
    # as the metavar ([paper|openood]) or, for a long list (--sort-by KEY), spelled out in the help
    words = set(re.findall(r"[\w-]+", help_text))
    assert "|".join(CHOICES[path, option]) in help_text or set(CHOICES[path, option]) <= words


def test_the_cli_figure_formats_are_the_plotting_ones():
    assert get_args(cli_options.FigureFormat) == plots.FIGURE_FORMATS  # spelled out: no matplotlib


def test_the_cli_export_formats_are_the_exporters_ones():
    assert get_args(cli_options.ExportFormat) == export.FORMATS


@pytest.mark.parametrize(
    ("args", "bad"),
    [
        (["bench", "--fpr-convention", "hendrycks"], "hendrycks"),
        (["eval", "--foreground", "both"], "both"),
        (["bench", "--launcher", "slurm"], "slurm"),
        (["leaderboard", "runs/x", "--sort-by", "name"], "name"),
        (["report", "runs/x", "--figure-format", "jpg"], "jpg"),
        (["bench", "--figure-format", "JPEG"], "JPEG"),
        (["list", "nothing"], "nothing"),
        (["leaderboard", "runs/x", "--format", "pdf"], "pdf"),
        (["leaderboard", "runs/x", "--aupr", "auc"], "auc"),
        (["leaderboard", "runs/x", "--fpr-convention", "hendrycks"], "hendrycks"),
    ],
)
def test_a_bad_choice_is_a_usage_error_naming_the_allowed_values(args: list[str], bad: str):
    result = runner.invoke(app, args, env=WIDE)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    message = _plain(result.stderr)
    assert message.startswith("Usage:") and f"'{bad}'" in message
    option = args[-2] if args[-2].startswith("--") else "what"
    path = tuple(a for a in args if not a.startswith(("-", "runs/")) and a != bad)
    for value in CHOICES[path, option]:
        assert f"'{value}'" in message, (value, message)


# ------------------------------------------------------------------------------ every command
def test_every_command_and_group_takes_debug():
    assert len(LEAVES) >= 9  # list, bench, train, masks, eval, leaderboard, report, data check/download
    for path, command in COMMANDS.items():
        assert any("--debug" in p.opts for p in command.params), f"`harness {' '.join(path)}` lacks --debug"  # type: ignore[attr-defined]
    for path in LEAVES:
        result = runner.invoke(app, [*path, "--debug", "--help"])
        assert result.exit_code == 0, (path, result.output)


def _failing(tmp_path: Path) -> dict[tuple[str, ...], tuple[list[str], int]]:
    """One invocation per command that fails for a reason a user can fix, and its exit code."""
    missing = str(tmp_path / "missing.yaml")
    nowhere = str(tmp_path / "nowhere")
    stage = (["--benchmark", missing], EXIT_MISSING_INPUT)
    return {
        ("list",): (["nothing"], EXIT_BAD_INPUT),
        ("bench",): stage,
        ("train",): stage,
        ("masks",): stage,
        ("eval",): stage,
        ("leaderboard",): ([nowhere], EXIT_MISSING_INPUT),
        ("report",): ([nowhere], EXIT_MISSING_INPUT),
        ("verify",): ([nowhere], EXIT_MISSING_INPUT),
        ("data", "check"): (["nope"], EXIT_BAD_INPUT),
        ("data", "download"): (["nope"], EXIT_BAD_INPUT),
        ("figure", "classes"): ([nowhere, "--out", str(tmp_path / "classes.png")], EXIT_MISSING_INPUT),
        ("figure", "tsne"): ([nowhere], EXIT_MISSING_INPUT),
    }


def test_every_command_reports_errors_on_stderr_with_the_documented_code(tmp_path: Path):
    failing = _failing(tmp_path)
    assert sorted(failing) == LEAVES, "add a failing invocation for every new command"
    for path, (args, code) in failing.items():
        result = runner.invoke(app, [*path, *args])
        assert result.exit_code == code, (path, result.exit_code, result.output)
        assert result.stdout == "", (path, result.stdout)
        assert result.stderr.strip() and "Traceback" not in result.stderr, path
        assert code in EXIT_CODES
    assert not list(tmp_path.iterdir())  # and nothing was written


def test_ctrl_c_exits_130_with_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    import dfb_ood.harness.report
    monkeypatch.setattr(dfb_ood.harness.report, "write_report", interrupted)
    result = runner.invoke(app, ["report", str(tmp_path)])
    assert result.exit_code == EXIT_INTERRUPTED == 130
    assert result.stdout == "" and result.stderr.strip() == INTERRUPTED_MESSAGE  # one line, how to resume
    assert INTERRUPTED_MESSAGE.startswith("interrupted: run the same command again to resume")


# ------------------------------------------------------------------------------ --figure-format
def test_bench_and_report_write_the_figure_format_asked_for(tiny: dict[str, Path]):
    run = tiny["root"] / "run"
    bench = ["bench", "--benchmark", str(tiny["benchmark"]), "--recipe", str(tiny["recipe"])]
    bench += ["--out", str(run), "--post", "msp", "--device", "cpu", "--steps", "2", "--quiet"]
    result = runner.invoke(app, [*bench, "--figure-format", "svg"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (run / "report").iterdir()) == ["auroc_bars.svg", "report.md"]
    text = (run / "report" / "report.md").read_text(encoding="utf-8")
    assert "![auroc_bars](auroc_bars.svg)" in text and "Figure format: `svg`" in text
    out = tiny["root"] / "pdf"
    result = runner.invoke(app, ["report", str(run), "--out", str(out), "--figure-format", "pdf", "-q"])
    assert result.exit_code == 0, result.output
    assert (out / "auroc_bars.pdf").read_bytes().startswith(b"%PDF-")
    assert "[auroc_bars (PDF)](auroc_bars.pdf)" in (out / "report.md").read_text(encoding="utf-8")
    # Without --figure-format, a rebuilt report keeps the format it has; a new folder gets png.
    result = runner.invoke(app, ["report", str(run), "--out", str(out), "-q"])
    assert result.exit_code == 0, result.output
    assert "Figure format: `pdf`" in (out / "report.md").read_text(encoding="utf-8")
    assert runner.invoke(app, ["report", str(run), "--out", str(tiny["root"] / "new"), "-q"]).exit_code == 0
    assert (tiny["root"] / "new" / "auroc_bars.png").is_file()
    result = runner.invoke(app, [*bench, "--no-report", "--figure-format", "pdf"])
    assert result.exit_code == EXIT_BAD_INPUT and "--no-report" in result.stderr, result.output
