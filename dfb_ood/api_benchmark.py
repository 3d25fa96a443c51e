"""The Python API on any torch model: a benchmark's sets through a user's classifier, then the table.

Why its own path: a model that is not one of this project's architectures cannot be a
``--checkpoint``, so no run folder can hold it. Its outputs are computed here from the benchmark's
own sets, read by the harness's data layer (:class:`~dfb_ood.harness.rundata.RunData`: the same
images, in the same order, that ``harness bench`` evaluates) and transformed by the one
evaluation transform (:func:`~dfb_ood.harness.augment.evaluation_batches`). Nothing is cached.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dfb_ood.api_outputs import collect_outputs, default_device
from dfb_ood.api_table import evaluate_outputs
from dfb_ood.errors import InputError
from dfb_ood.harness.augment import evaluation_batches
from dfb_ood.harness.data.benchmark import Benchmark
from dfb_ood.harness.plan import resolve_plan
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.rundata import RunData
from dfb_ood.harness.settings import BenchSettings
from dfb_ood.postprocessors.base import Outputs


def benchmark_argument(benchmark: str | os.PathLike | Benchmark) -> str:
    """What ``--benchmark`` takes: a shipped name or a YAML path (a ``Benchmark`` by its file).

    Args:
        benchmark: a benchmark's name, its YAML path, or a ``Benchmark`` read from a file.

    Returns:
        The name or path as ``BenchSettings.benchmark`` holds it.

    Raises:
        InputError: a ``Benchmark`` that was not read from a YAML file.
    """
    if isinstance(benchmark, Benchmark):
        if benchmark.source is None or not Path(benchmark.source).is_file():
            raise InputError(
                f"benchmark {benchmark.name!r} was not read from a YAML file; pass its name or YAML path"
            )
        return str(benchmark.source)
    return os.fspath(benchmark)


def benchmark_outputs(
    model: torch.nn.Module | Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    benchmark: str | os.PathLike | Benchmark,
    *,
    head: tuple[Any, Any] | None = None,
    device: str | torch.device | None = None,
    data_root: str | os.PathLike | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    size: int | None = None,
    batch_size: int = 256,
) -> tuple[dict[str, Outputs], dict[str, str]]:
    """Every set of a benchmark through a classifier: each set's ``Outputs``, as ``collect_outputs`` gives.

    Args:
        model: an ``nn.Module`` with a final ``nn.Linear``, or a callable ``images -> (features, logits)``.
        benchmark: a shipped benchmark name, a YAML path, or a ``Benchmark`` read from one.
        head: ``(weight, bias)``, required with a callable.
        device: where the model runs; CUDA when present, else the CPU.
        data_root: where file-backed sets live (``--data-root``).
        mean: the input normalisation's mean per channel; the benchmark's by default.
        std: its standard deviation per channel; the benchmark's by default.
        size: the side the images are resized to; the benchmark's image size by default.
        batch_size: images per forward pass.

    Returns:
        (outputs by set name: ``train``, ``test``, ``val``/``ood_val`` when the benchmark has them,
        and each OOD test set; the group of each OOD test set, ``near`` or ``far``).

    Raises:
        InputError: the benchmark cannot be read, or the model gives no head.
        MissingInputError: a set's data is not there.
    """
    settings = BenchSettings(
        benchmark=benchmark_argument(benchmark),
        data_root=None if data_root is None else Path(data_root),
        device="cpu",  # where images are decoded; the model's device is ``device``
        quiet=True,
    )
    plan = resolve_plan(settings)
    data = RunData(plan, Reporter(quiet=True))
    bench = plan.benchmark
    run_on = torch.device(device) if device is not None else default_device()
    outputs: dict[str, Outputs] = {}
    groups: dict[str, str] = {}
    for name, (role, _spec) in data.specs.items():
        images, labels = data.eval_images(name)

        def batches(images: Any = images, labels: np.ndarray = labels) -> Iterator[Any]:
            for start, batch in evaluation_batches(
                images,
                mean=tuple(mean if mean is not None else bench.mean),
                std=tuple(std if std is not None else bench.std),
                size=int(size or bench.image_size),
                device=run_on,
                batch_size=batch_size,
            ):
                yield batch, torch.as_tensor(labels[start : start + batch.shape[0]])

        is_ood = role in ("near", "far", "ood_val")
        outputs[name] = collect_outputs(model, batches(), head=head, device=run_on, ood=is_ood)
        if role in ("near", "far"):
            groups[name] = role
    return outputs, groups


def evaluate_model(
    model: torch.nn.Module | Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
    benchmark: str | os.PathLike | Benchmark,
    detectors: str | Sequence[str],
    *,
    fpr_convention: str = "paper",
    **options: Any,
) -> Any:
    """A benchmark's table for any torch classifier: its outputs on every set, detectors fitted and scored.

    Args:
        model: an ``nn.Module`` with a final ``nn.Linear``, or a callable with ``head=`` in ``options``.
        benchmark: a shipped benchmark name, a YAML path, or a ``Benchmark``.
        detectors: detector names that read one network's outputs (``msp``, ``vim``, ...).
        fpr_convention: ``"paper"`` or ``"openood"``.
        **options: any keyword of :func:`benchmark_outputs` (``device``, ``mean``, ``std``, ...).

    Returns:
        :func:`dfb_ood.api_table.results_table` of the rows.

    Raises:
        UnknownNameError: a detector name is not registered.
        InputError: as :func:`benchmark_outputs` and :func:`dfb_ood.api_table.evaluate_outputs`.
    """
    sets, groups = benchmark_outputs(model, benchmark, **options)
    ood = {group: {n: sets[n] for n, g in groups.items() if g == group} for group in ("near", "far")}
    return evaluate_outputs(
        detectors,
        sets["train"],
        sets["test"],
        {group: named for group, named in ood.items() if named},
        val=sets.get("val"),
        ood_val=sets.get("ood_val"),
        fpr_convention=fpr_convention,
    )
