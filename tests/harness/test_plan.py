"""The options of a run are resolved once into a frozen plan, and checked before anything is made."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dfb_ood.harness.detector_spec import DetectorSpec
from dfb_ood.harness.plan import check_plan, resolve_plan
from dfb_ood.harness.settings import BenchSettings


def settings_of(tiny: dict[str, Path], **changes: object) -> BenchSettings:
    options = {"benchmark": str(tiny["benchmark"]), "recipe": str(tiny["recipe"]), "device": "cpu"}
    return BenchSettings(**{**options, "detectors": ["msp", "vim_dfb"], **changes})  # type: ignore[arg-type]


def test_the_plan_holds_what_the_stages_read_and_creates_nothing(tiny):
    out = tiny["root"] / "run"
    plan = resolve_plan(settings_of(tiny, out=out, foreground="classifier"))
    assert (plan.benchmark.name, plan.recipe.name, plan.network, plan.eval_size) == (
        "tiny_shapes",
        "tiny",
        "rv2_tiny",
        16,
    )
    assert plan.run_dir == out and plan.device.type == "cpu" and not plan.cached
    assert plan.detectors == (DetectorSpec.of("msp"), DetectorSpec.of("vim_dfb", "classifier"))
    assert plan.needs_dfb and plan.identity()["network"] == "rv2_tiny"
    assert check_plan(plan) is False and not out.exists()  # checked, still nothing on disk
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.eval_size = 32  # type: ignore[misc]


def test_the_default_run_folder_is_named_by_benchmark_network_and_seed(tiny):
    plan = resolve_plan(settings_of(tiny, seed=3, detectors=["msp"]))
    assert plan.run_dir == Path("runs", "tiny_shapes", "rv2_tiny", "seed3") and not plan.needs_dfb


def test_bad_options_are_refused_while_resolving(tiny):
    with pytest.raises(ValueError, match="--foreground"):
        resolve_plan(settings_of(tiny, foreground="both"))
    with pytest.raises(ValueError, match="unknown detector|no_such"):
        resolve_plan(settings_of(tiny, detectors=["no_such"]))
