"""The options ``bench`` and the stage commands share, declared once, and the settings they make.

``harness bench``, ``train``, ``masks`` and ``eval`` all take the same twenty-odd options (which
benchmark, detectors, recipe, network; device, data, run folder; training overrides; streaming;
output; launcher). They are the fields of one dataclass, :class:`RunOptions`, whose annotations are
the option types of :mod:`harness.cli_options` and whose defaults are the options' defaults.

Why a dataclass rather than a list of parameters or a function that returns them: the fields are the
one declaration *and* the value a command receives, typed, so a command reads ``run.benchmark``
instead of threading two dozen names through its signature, and :meth:`RunOptions.settings` builds
the pipeline's :class:`~harness.settings.BenchSettings` field by field where a reader can check
which option becomes which setting. :func:`with_run_options` turns a command that takes a
``RunOptions`` first into the function Typer reads: the dataclass's fields become that function's
parameters, in their declared order, with the command's own options placed among them (``after``)
where its ``--help`` has always listed them.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dfb_ood.harness.cli_options import (
    BatchOpt,
    BenchOpt,
    CheckpointOpt,
    ClassesOpt,
    ClassSeedOpt,
    ConventionOpt,
    DataRootOpt,
    DataWorkersOpt,
    DetectorOpt,
    DeviceOpt,
    ForegroundOpt,
    InMemoryOpt,
    JsonOpt,
    LauncherOpt,
    NetworkOpt,
    NprocOpt,
    OutOpt,
    OverwriteOpt,
    QuietOpt,
    RecipeOpt,
    SearchOpt,
    SkipBadOpt,
    StepsOpt,
)

if TYPE_CHECKING:
    from dfb_ood.harness.settings import BenchSettings


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """The shared options of ``bench`` and the stage commands, in their ``--help`` order."""

    benchmark: BenchOpt = "fmnist_mini"
    post: DetectorOpt = None
    recipe: RecipeOpt = "frozen"
    network: NetworkOpt = None
    device: DeviceOpt = None
    data_root: DataRootOpt = None
    checkpoint: CheckpointOpt = None
    out: OutOpt = None
    fpr_convention: ConventionOpt = "paper"
    foreground: ForegroundOpt = "dfb"
    search: SearchOpt = False
    steps: StepsOpt = None
    batch_size: BatchOpt = None
    skip_bad: SkipBadOpt = False
    in_memory_mb: InMemoryOpt = None
    data_workers: DataWorkersOpt = None
    overwrite: OverwriteOpt = False
    classes: ClassesOpt = None
    class_seed: ClassSeedOpt = None
    quiet: QuietOpt = False
    json_out: JsonOpt = False
    launcher: LauncherOpt = "none"
    nproc: NprocOpt = None

    @property
    def silent(self) -> bool:
        """No progress on the terminal: asked for (``--quiet``), or stdout carries JSON (``--json``)."""
        return self.quiet or self.json_out

    def settings(self, detectors: list[str], seed: int = 0) -> BenchSettings:
        """The pipeline's settings of one run: these options, the expanded detectors and the seed.

        ``bench`` passes no seed (:func:`harness.run.run_seeds` sets each run's own); the stage
        commands pass their ``--seed``. ``--post``, ``--json``, ``--launcher`` and ``--nproc`` are
        no settings: the detectors arrive expanded, JSON only silences progress, and the launcher
        has run before the settings are made.
        """
        from dfb_ood.harness.settings import BenchSettings

        return BenchSettings(
            benchmark=self.benchmark,
            recipe=self.recipe,
            network=self.network,
            seed=seed,
            device=self.device,
            data_root=self.data_root,
            checkpoint=self.checkpoint,
            out=self.out,
            detectors=detectors,
            fpr_convention=self.fpr_convention,
            foreground=self.foreground,
            search=self.search,
            steps=self.steps,
            batch_size=self.batch_size,
            quiet=self.silent,
            skip_bad=self.skip_bad,
            overwrite=self.overwrite,
            classes=self.classes,
            class_seed=self.class_seed,
            in_memory_mb=self.in_memory_mb,
            data_workers=self.data_workers,
        )


def _shared_parameters() -> list[inspect.Parameter]:
    """The fields of :class:`RunOptions` as keyword parameters, their option types as annotations."""
    hints = typing.get_type_hints(RunOptions, include_extras=True)
    return [
        inspect.Parameter(
            field.name, inspect.Parameter.KEYWORD_ONLY, default=field.default, annotation=hints[field.name]
        )
        for field in dataclasses.fields(RunOptions)
    ]


def with_run_options(
    after: Mapping[str, Sequence[str]] | None = None,
) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Make ``command(run: RunOptions, **own)`` a Typer command taking the shared options and its own.

    ``after`` names, for a shared field, the command's own parameters listed right after it in
    ``--help`` (``{"post": ["compare", "seeds"]}``); own parameters it does not name follow the
    shared ones. The returned function has the merged signature and gathers the shared values into
    one :class:`RunOptions` before it calls ``command``.
    """
    placed = {name: shared for shared, names in (after or {}).items() for name in names}

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        own = list(inspect.signature(command, eval_str=True).parameters.values())[1:]  # all but `run`
        own = [parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY) for parameter in own]
        unknown = set(placed) - {parameter.name for parameter in own}
        if unknown:
            raise TypeError(f"{command.__name__} has no parameter(s) {', '.join(sorted(unknown))}")
        shared = _shared_parameters()
        merged: list[inspect.Parameter] = []
        for parameter in shared:
            merged.append(parameter)
            merged += [mine for mine in own if placed.get(mine.name) == parameter.name]
        merged += [mine for mine in own if mine.name not in placed]
        shared_names = [parameter.name for parameter in shared]

        @functools.wraps(command)
        def wrapper(**values: Any) -> None:
            run = RunOptions(**{name: values.pop(name) for name in shared_names})
            command(run, **values)

        # inspect.signature (Typer's reader) stops at __signature__: the merged one, not the command's
        wrapper.__signature__ = inspect.Signature(merged)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {parameter.name: parameter.annotation for parameter in merged}
        return wrapper

    return decorate
