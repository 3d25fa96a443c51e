"""The CLI in 80 columns, in pipes and at start: help that is never cut, tables that keep every
value whole, did-you-mean errors, and ``--help`` / ``--version`` without torch."""

from __future__ import annotations

import difflib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dfb_ood.harness import cli_options, export, leaderboard, metrics
from dfb_ood.harness.cli import app
from dfb_ood.harness.errors import EXIT_BAD_INPUT, EXIT_RUN_FOLDER
from dfb_ood.harness.leaderboard import write_csv
from dfb_ood.postprocessors import dfb
from dfb_ood.suggest import closest, suggestion, unknown_name

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()
NARROW = {"COLUMNS": "80", "TERM": "dumb", "NO_COLOR": "1"}
COMMANDS = [(), ("list",), ("bench",), ("train",), ("masks",), ("eval",), ("leaderboard",), ("report",),
            ("verify",), ("data",), ("figure",), ("data", "check"), ("data", "download"),
            ("figure", "classes"), ("figure", "tsne")]  # fmt: skip


def _env() -> dict[str, str]:
    return {**os.environ, **NARROW, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


@pytest.mark.parametrize("path", COMMANDS, ids=lambda path: " ".join(path) or "root")
def test_help_fits_80_columns_and_cuts_nothing(path: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*path, "--help"], env=NARROW, terminal_width=80)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines and max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout  # rich's cut
    assert "<bool>" not in result.stdout  # flags show as flags


def test_bench_help_groups_options_and_shows_defaults_whole() -> None:
    text = runner.invoke(app, ["bench", "--help"], env=NARROW, terminal_width=80).stdout
    for panel in ("Data", "Network and recipe", "Detectors", "Output", "System"):
        assert f"─ {panel} ─" in text
    joined = " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())
    for whole in ("runs/NAME/NET/seedK.", "[default: fmnist_mini]", "[default: frozen]", "[default: paper]",
                  "$HARNESS_IN_MEMORY_MB,", "$HARNESS_DATA_WORKERS,"):  # fmt: skip
        assert whole in joined, whole


def test_the_cli_choices_are_their_modules_ones() -> None:
    assert cli_options.SORT_KEYS == tuple(leaderboard.SORT_KEYS)
    assert cli_options.FORMATS == export.FORMATS
    assert cli_options.FPR_CONVENTIONS == tuple(metrics.FPR_CONVENTIONS)
    assert cli_options.AUPR_METHODS == tuple(metrics.AUPR_METHODS)
    assert cli_options.FOREGROUNDS == dfb.Foreground.__args__
    from dfb_ood.harness import cli_figure, tsne

    assert cli_figure.TSNE_SAMPLE == tsne.DEFAULT_SAMPLE


@pytest.mark.parametrize(
    ("args", "near"),
    [
        (["bench", "--sort-by", "far_aurc"], "'far_auroc'"),
        (["leaderboard", "x", "--format", "mardown"], "'markdown'"),
        (["bench", "--fpr-convention", "opnood"], "'openood'"),
        (["list", "detector"], "'detectors'"),
    ],
)
def test_a_bad_choice_suggests_the_closest_without_a_prefix(args: list[str], near: str) -> None:
    result = runner.invoke(app, args, env=NARROW)
    assert result.exit_code == EXIT_BAD_INPUT
    message = " ".join(result.stderr.split())
    assert f"did you mean {near}" in message and "Value error" not in message


@pytest.mark.parametrize(
    ("option", "typed", "near"),
    [("--post", "msq", "'msp'"), ("--benchmark", "fmnist_mnii", "'fmnist_mini'"),
     ("--recipe", "frozn", "'frozen'"), ("--network", "resnet18_32", "'resnet18_32x32'")],
)  # fmt: skip
def test_an_unknown_name_suggests_the_closest_in_one_short_line(option: str, typed: str, near: str) -> None:
    result = runner.invoke(app, ["bench", option, typed, "--device", "cpu", "--no-report"], env=NARROW)
    assert result.exit_code == EXIT_BAD_INPUT, result.output
    error = result.stderr.split("(run with --debug")[0]
    assert "did you mean " in error and near in " ".join(error.split())
    assert "msp_dfbz" not in error  # not every detector name


def test_suggestions_match_difflib_by_hand() -> None:
    assert closest("msq", ["msp", "odin", "mls"]) == ["msp", "mls"]  # ratio 2/3 each, msp listed first
    assert closest("zzz", ["msp", "odin"]) == []
    many = [f"d{i}" for i in range(20)]
    message = unknown_name("detector", "zzz", many, "harness list detectors")
    assert message == ("unknown detector 'zzz'; known: d0, d1, d2, d3, d4, d5, d6, d7, d8, d9, d10, d11, ... "
                       "(20 in all; see `harness list detectors`)")  # fmt: skip
    assert closest("d1x", many) == difflib.get_close_matches("d1x", many, n=3) == ["d1", "d19", "d18"]
    assert (
        unknown_name("detector", "d1x", many)
        == "unknown detector 'd1x'; did you mean 'd1' or 'd19' or 'd18'?"
    )
    # a short list: the closest first, then the others, every name shown
    assert suggestion("msq", ["odin", "msp", "energy"]) == "did you mean 'msp'? known: odin, energy"


def test_help_and_version_import_no_torch() -> None:
    code = (
        "import sys\nfrom dfb_ood.harness.cli import main\n"
        "for argv in (['harness', '--help'], ['harness', '--version'], ['harness', 'bench', '--help']):\n"
        "    sys.argv = argv\n"
        "    try:\n        main()\n    except SystemExit:\n        pass\n"
        "print('torch' in sys.modules, 'timm' in sys.modules, 'matplotlib' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "False False False"


def _rows(benchmark: str) -> list[dict[str, object]]:
    base = {"benchmark": benchmark, "network": "net", "seed": 0, "detector_network": "classifier",
            "aupr_in": 0.5, "aupr_out": 0.5, "fpr_convention": "paper", "id_accuracy": 0.9125,
            "hyperparameters": ""}  # fmt: skip
    values = {"knn_dfbz": (0.91234, 0.2345), "energy_dfb": (0.85, 0.4), "tempscale_dfbz": (0.7777, 0.61)}
    return [
        {**base, "detector": name, "dataset": group, "group": group, "auroc": auroc, "fpr95": fpr}
        for name, (auroc, fpr) in values.items()
        for group in ("near_mean", "far_mean")
    ]


def test_leaderboard_in_a_file_holds_every_value_whole(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_csv(run / "results.csv", _rows("fmnist_mini"))
    out = tmp_path / "out.txt"
    with out.open("w") as stdout:
        done = subprocess.run([sys.executable, "-m", "dfb_ood", "leaderboard", str(run)], stdout=stdout,
                              stderr=subprocess.PIPE, text=True, env=_env())  # fmt: skip
    assert done.returncode == 0, done.stderr
    text = out.read_text()
    lines = text.splitlines()
    header = next(line for line in lines if "detector" in line)
    for word in ("near AUROC", "near FPR95", "far AUROC", "far FPR95", "ID acc"):
        assert word in header, (word, header)
    for name, number in (("knn_dfbz", "91.23"), ("energy_dfb", "85.00"), ("tempscale_dfbz", "77.77")):
        row = next(line for line in lines if f" {name} " in line)
        assert number in row, (name, row)
    title = next(line for line in lines if "run(s)" in line)
    assert "fmnist_mini" in title and str(tmp_path) not in title


def test_verify_in_a_capture_keeps_a_long_file_name_whole(monkeypatch: pytest.MonkeyPatch) -> None:
    from dfb_ood.harness import verify

    long_name = "outputs/resnet18_32x32/" + "a_very_long_ood_set_name_" * 3 + "/penultimate_features.npy"
    checks = [verify.ArtifactCheck("outputs", long_name, "damaged", "sha256 differs from stages.json"),
              verify.ArtifactCheck("train", "classifier.pt", "intact")]  # fmt: skip
    monkeypatch.setattr(verify, "verify_run", lambda run_dir: checks)
    result = runner.invoke(app, ["verify", "runs/x"], env=NARROW, terminal_width=80)
    assert result.exit_code == EXIT_RUN_FOLDER, result.output
    damaged = [line for line in result.stdout.splitlines() if long_name in line]
    assert len(damaged) == 1 and "damaged" in damaged[0] and "sha256 differs from stages.json" in damaged[0]
