"""One run's options resolved once into a plan, every check made before anything exists on disk.

``harness bench`` options (:class:`~harness.settings.BenchSettings`) leave much open: the
recipe's network, the benchmark's image size and normalisation, the default run folder. The
stages all read the same answers, so :func:`resolve_plan` works them out (and refuses bad
options) once, in one order, and the stages take the frozen :class:`RunPlan`. What needs the
data or the run folder (:func:`check_plan`) is checked before stage 1 creates anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dfb_ood.errors import InputError
from dfb_ood.harness import distributed
from dfb_ood.harness.data.benchmark import Benchmark, load_benchmark
from dfb_ood.harness.data.streaming import data_workers, in_memory_limit_mb
from dfb_ood.harness.detector_spec import DFB, DetectorSpec
from dfb_ood.harness.io import content_hash, file_hash, read_lock
from dfb_ood.harness.names import join_inside
from dfb_ood.harness.preflight import (
    check_benchmark_data,
    check_checkpoint,
    check_device,
    check_network,
    check_settings,
)
from dfb_ood.harness.recipes import Recipe, load_recipe
from dfb_ood.harness.runfolder import check_run_folder
from dfb_ood.harness.settings import BenchSettings
from dfb_ood.networks import network_spec


@dataclass(frozen=True)
class RunPlan:
    """Everything the stages of one run read, resolved from its settings."""

    settings: BenchSettings
    benchmark: Benchmark
    recipe: Recipe
    network: str  # the network's registry name (``--network`` or the recipe's)
    device: torch.device
    eval_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    run_dir: Path
    detectors: tuple[DetectorSpec, ...]

    @property
    def cached(self) -> bool:
        """The recipe trains on cached features of a frozen part (:mod:`harness.cached`)."""
        return self.recipe.trainable != "all"

    @property
    def cams_from_cache(self) -> bool:
        """Cached recipes take CAMs from the cached maps at scale 1; other scales need image passes."""
        return self.cached and tuple(self.recipe.cam.scales) == (1.0,)

    @property
    def needs_dfb(self) -> bool:
        """Whether any requested detector reads the DFB net's outputs (so stages 2-3 run)."""
        return any(spec.native_network == DFB for spec in self.detectors)

    def identity(self) -> dict[str, Any]:
        """The settings that define this run's results (see :mod:`harness.runfolder`)."""
        checkpoint = self.settings.checkpoint
        subset = self.benchmark.class_subset
        return {
            **({"classes": {"count": subset.count, "seed": subset.seed}} if subset is not None else {}),
            "benchmark": self.benchmark.name,
            "benchmark_definition": benchmark_key(self.benchmark),
            "network": self.network,
            "seed": self.settings.seed,
            "recipe": self.recipe.as_dict(),
            "checkpoint": file_hash(checkpoint) if checkpoint else None,
            "skip_bad": self.settings.skip_bad,
        }


def benchmark_key(benchmark: Benchmark) -> str:
    """The benchmark's definition in one hash: its name, its YAML file and any class subset."""
    source = benchmark.source
    subset = benchmark.class_subset  # --classes / --class-seed change the data, not the file
    return content_hash(
        benchmark.name,
        file_hash(source) if source and source.is_file() else None,
        *([subset.of, subset.ids] if subset is not None else []),
    )


def resolve_plan(settings: BenchSettings) -> RunPlan:
    """Check the options and resolve them into a plan; reads the benchmark and recipe, writes nothing.

    The order of the checks is that of the messages users know: options first, then the
    benchmark, the recipe and the network, then what the recipe allows with them.
    """
    check_settings(settings)
    check_device(settings.device)
    in_memory_limit_mb(settings.in_memory_mb)  # a bad threshold or worker count fails now
    data_workers(settings.data_workers)
    benchmark = load_benchmark(
        settings.benchmark, settings.data_root, classes=settings.classes, class_seed=settings.class_seed
    )
    recipe = load_recipe(settings.recipe)
    changes: dict[str, Any] = {}
    if settings.steps is not None:
        changes["steps"] = settings.steps
    if settings.batch_size is not None:
        changes["batch_size"] = settings.batch_size
    recipe = recipe.with_overrides(**changes) if changes else recipe
    network = settings.network or recipe.network
    check_network(network, recipe)
    device = distributed.device_for(settings.device)
    eval_size = int(recipe.eval_size or benchmark.image_size)
    mean, std = _normalisation(network, recipe, benchmark)
    if recipe.trainable != "all" and settings.checkpoint and recipe.dense_init == "pretrained":
        raise InputError(
            f"recipe {recipe.name!r} caches the features of the --checkpoint classifier, so its DFB "
            "net must start from that classifier: set dense.init: classifier, or use trainable: all"
        )
    run_dir = (
        Path(settings.out)
        if settings.out
        # "timm:<model>" -> "timm-<model>": a colon is not allowed in Windows paths. Each part
        # is one plain name (the benchmark's is checked where its YAML is read): the default
        # run folder stays inside runs/ whatever the names.
        else join_inside(
            Path("runs"),
            benchmark.name,
            network.replace(":", "-"),
            f"seed{settings.seed}",
            what="run folder name (benchmark, network, seed)",
        )
    )
    detectors = tuple(DetectorSpec.of(name, settings.foreground) for name in settings.detectors)
    return RunPlan(settings, benchmark, recipe, network, device, eval_size, mean, std, run_dir, detectors)


def _normalisation(
    network: str, recipe: Recipe, benchmark: Benchmark
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The input normalisation: a pretrained network's own (what its weights expect), else the data's."""
    spec = network_spec(network)
    if recipe.pretrained and spec.mean is not None and spec.std is not None:
        return tuple(spec.mean), tuple(spec.std)
    return tuple(benchmark.mean), tuple(benchmark.std)


def check_plan(plan: RunPlan) -> bool:
    """Everything that can be checked before stage 1: data, checkpoint, run folder. Creates nothing;
    raises one clear error. True when ``--overwrite`` replaces a run made with other settings."""
    settings = plan.settings
    check_benchmark_data(plan.benchmark, settings.skip_bad)
    options = plan.recipe.network_options
    check_checkpoint(settings.checkpoint, plan.network, plan.benchmark.num_classes, options)
    replacing = check_run_folder(plan.run_dir, plan.identity(), settings.overwrite)
    if plan.run_dir.is_dir():
        with read_lock(plan.run_dir):  # fails now, not after the checks, if another process holds it
            pass
    return replacing
