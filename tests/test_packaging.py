"""One import root: the project installs ``dfb_ood`` alone, and a user's folder cannot shadow it.

Research repositories often hold their own ``configs/`` or ``networks/`` package; when the project
installed those names at the top level, ``python -m harness`` run inside such a folder imported
the user's package instead of ours. Every command here runs from a folder that holds packages
named like each of the project's folders, each of which fails loudly when imported.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.test_pipeline import TINY_BENCHMARK
from tests.harness.test_pipeline import TINY_RECIPE as PIPELINE_RECIPE

REPO = Path(__file__).resolve().parents[1]
MAPPED = ("harness", "networks", "postprocessors", "configs")

# The suite's tiny benchmark and recipe (one copy, in test_pipeline), at 4 training steps.
TINY_RECIPE = PIPELINE_RECIPE.replace("steps: 24", "steps: 4")


def test_the_build_maps_every_package_folder_under_the_one_root():
    """A folder with an ``__init__.py`` that pyproject.toml does not list would be missing from the
    wheel (setuptools copies only listed packages when folders are mapped)."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    expected = {"dfb_ood"}
    for top in MAPPED:
        for init in sorted((REPO / top).rglob("__init__.py")):
            relative = init.parent.relative_to(REPO / top).parts
            expected.add(".".join(("dfb_ood", top, *relative)))
    assert set(config["packages"]) == expected
    assert config["package-dir"] == {"dfb_ood": "dfb_ood", **{f"dfb_ood.{top}": top for top in MAPPED}}
    assert tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"] == {
        "harness": "dfb_ood.harness.cli:main"
    }


def shadowing_folder(root: Path) -> Path:
    """A user's repository whose own packages carry the project's folder names."""
    for name in (*MAPPED, "harness/data"):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "__init__.py").write_text(f"raise ImportError(\"the user's own {name}\")\n")
    return root


def run_in(folder: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", COLUMNS="120")
    return subprocess.run(argv, cwd=folder, env=env, capture_output=True, text=True, check=False, timeout=300)


def harness_command() -> list[str]:
    script = Path(sys.executable).parent / "harness"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "dfb_ood"]


def test_a_users_own_packages_do_not_shadow_the_project(tmp_path):
    folder = shadowing_folder(tmp_path / "research")
    code = (
        "import sys, dfb_ood, dfb_ood.harness.run, dfb_ood.networks, dfb_ood.postprocessors.registry\n"
        "clash = sorted(m for m in sys.modules if m.split('.')[0] in "
        "('harness', 'configs', 'networks', 'postprocessors'))\n"
        "assert not clash, clash\n"
        "print(dfb_ood.harness.run.__file__)\n"
    )
    imported = run_in(folder, sys.executable, "-c", code)
    assert imported.returncode == 0, imported.stderr
    assert Path(imported.stdout.strip()).resolve().is_relative_to(REPO)
    listed = run_in(folder, sys.executable, "-m", "dfb_ood", "list", "recipes")
    assert listed.returncode == 0, listed.stderr
    assert "frozen" in listed.stdout and "cpu-quick" in listed.stdout
    script = run_in(folder, *harness_command(), "list", "detectors")
    assert script.returncode == 0, script.stderr
    assert "msp" in script.stdout and "vim" in script.stdout


def test_a_tiny_bench_runs_inside_a_folder_that_shadows_every_package(tmp_path):
    folder = shadowing_folder(tmp_path / "research")
    (folder / "tiny.yaml").write_text(TINY_BENCHMARK)
    (folder / "recipe.yaml").write_text(TINY_RECIPE)
    done = run_in(
        folder, *harness_command(), "bench", "--benchmark", "tiny.yaml", "--recipe", "recipe.yaml",
        "--post", "msp,energy_dfbz", "--device", "cpu", "--no-report", "--quiet", "--out", "run",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    with open(folder / "run" / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {row["detector"] for row in rows} == {"msp", "energy_dfbz"}
    assert {row["dataset"] for row in rows} >= {"unseen", "noise"}
    assert all(0.0 <= float(row["auroc"]) <= 100.0 for row in rows)
