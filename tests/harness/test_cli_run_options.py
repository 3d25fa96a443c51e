"""The options bench and the stage commands share: one declaration, every one reaching the settings."""

from __future__ import annotations

import dataclasses

import pytest
import typer

from dfb_ood.harness.cli import app
from dfb_ood.harness.cli_run_options import RunOptions, with_run_options
from dfb_ood.harness.settings import BenchSettings

#: Options that are no setting: expanded into ``detectors``, or spent before the settings are made.
NOT_SETTINGS = {"post", "json_out", "launcher", "nproc"}


def test_every_shared_option_but_a_few_is_a_setting_of_the_same_name():
    options = {field.name for field in dataclasses.fields(RunOptions)}
    settings = {field.name for field in dataclasses.fields(BenchSettings)}
    assert options - NOT_SETTINGS <= settings
    # what the CLI does not set: the expanded detectors and the seed (arguments), the eval batch size
    assert settings - options == {"detectors", "seed", "eval_batch_size"}


def test_the_settings_carry_every_option_the_detectors_and_the_seed():
    run = RunOptions(benchmark="shapes", recipe="r", steps=3, classes=4, overwrite=True, json_out=True)
    settings = run.settings(["msp"], seed=5)
    assert settings == BenchSettings(
        benchmark="shapes", recipe="r", steps=3, classes=4, overwrite=True, detectors=["msp"], seed=5,
        quiet=True,  # --json silences progress: stdout carries the rows
    )  # fmt: skip


def _options(name: str) -> list[str]:
    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    return [param.name for param in command.params]


@pytest.mark.parametrize("stage", ["train", "masks", "eval"])
def test_bench_and_the_stages_list_the_shared_options_in_one_order(stage: str):
    shared = [field.name for field in dataclasses.fields(RunOptions)]
    for name in ("bench", stage):
        listed = _options(name)
        assert [option for option in listed if option in shared] == shared, name
    assert _options(stage) == ["benchmark", "post", "seed", *shared[2:], "debug"]


def test_an_own_option_placed_after_an_unknown_one_is_refused():
    def command(run: RunOptions, extra: int = 0) -> None:
        pass

    with pytest.raises(TypeError, match="no parameter"):
        with_run_options(after={"post": ["missing"]})(command)
