"""The Python API: ``harness bench`` as an OpenOOD-style ``Evaluator``, and DFB on your own classifier.

Why a thin layer: a run from Python must be the run the CLI makes, with the same run folder,
resume, cache and results. So :class:`Evaluator` only builds the
:class:`~dfb_ood.harness.settings.BenchSettings` that ``harness bench`` would build from the same
options and calls the same :func:`~dfb_ood.harness.run.run_seeds`; the table is the run's result
rows in OpenOOD v1.5's layout (:func:`dfb_ood.api_table.results_table`). Outputs of any model
and loaders, scored without a run folder, are in :mod:`dfb_ood.api_outputs` and
:mod:`dfb_ood.api_table`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from dfb_ood.api_benchmark import benchmark_argument, evaluate_model
from dfb_ood.api_outputs import collect_outputs, default_device, find_head
from dfb_ood.api_table import detector_names, evaluate_outputs, results_table
from dfb_ood.errors import InputError
from dfb_ood.harness.data.benchmark import Benchmark
from dfb_ood.harness.evaluate import DEFAULT_BENCH_DETECTORS, default_detectors
from dfb_ood.harness.plan import resolve_plan
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.result_row import ResultRow
from dfb_ood.harness.run import run_seeds
from dfb_ood.harness.settings import BenchSettings
from dfb_ood.networks.atomic import atomic_write
from dfb_ood.postprocessors.registry import available, create

__all__ = [
    "Evaluator",
    "available",
    "collect_outputs",
    "create",
    "default_device",
    "evaluate_model",
    "evaluate_outputs",
    "find_head",
    "results_table",
    "run_dfb",
]


def save_classifier(model: torch.nn.Module, path: str | os.PathLike) -> Path:
    """Save a trained classifier's state dict as safetensors, for ``checkpoint=`` (``--checkpoint``).

    The file is written atomically and only when its bytes change, so the same weights give the
    same file hash, and a run made from them resumes instead of starting again.

    Args:
        model: a classifier of one of this project's architectures (``harness list networks``).
        path: the ``.safetensors`` file to write.

    Returns:
        The path written.
    """
    from safetensors.torch import save

    path = Path(path)
    state = {key: value.detach().cpu().contiguous() for key, value in model.state_dict().items()}
    data = save(state)
    if not (path.is_file() and path.read_bytes() == data):
        atomic_write(path, lambda stream: stream.write(data))
    return path


class Evaluator:
    """OpenOOD v1.5's ``Evaluator`` for this project: a network, a benchmark and detectors -> a table.

    ``Evaluator(net, id_name=..., postprocessor_name=...).eval_ood()`` runs ``harness bench`` with
    the same options (``--network``, ``--benchmark``, ``--post``, ``--recipe``, ``--seed``,
    ``--checkpoint``, ``--out``, ...) and returns its results in OpenOOD's layout. The run folder,
    resume, caches and results files are the CLI's: a second call with the same settings reads
    the finished run, and ``harness leaderboard RUN`` shows it.

    Args:
        net: a network name (``"rv2_tiny"``, ``"resnet18_32x32"``, ``"timm:resnet50"``; None is the
            recipe's), or a trained ``torch.nn.Module``. With ``network=`` (its architecture's name)
            the module is saved as the run's classifier (see :func:`save_classifier`) and stage 1
            loads it instead of training one. Without, any classifier with a final ``nn.Linear``
            is run over the benchmark's sets (:func:`dfb_ood.api_benchmark.evaluate_model`: the
            benchmark's normalisation and size, no run folder, detectors of one network only;
            default ``msp``, ``energy``, ``vim``).
        id_name: the benchmark: a shipped name (``"fmnist_mini"``), a YAML path, or a ``Benchmark``.
        postprocessor_name: detector names (a comma list or a sequence); None is the bench's default
            leaderboard. DFB variants (``msp_dfb``, ``energy_dfbz``, ``bg``) train the DFB network.
        recipe: a training recipe name or YAML path (``harness list recipes``).
        network: the architecture's name when ``net`` is a module.
        checkpoint: a trained K-class classifier's weights file (``--checkpoint``).
        out: the run folder (``--out``); None is ``runs/<benchmark>/<network>/seed<seed>``.
        seed: the run's seed.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``; None is CUDA when present, else the CPU.
        fpr_convention: ``"paper"`` or ``"openood"`` (see :func:`dfb_ood.harness.metrics.fpr_at_tpr`).
        steps: training steps for both networks (``--steps``), None for the recipe's.
        data_root: where file-backed sets live (``--data-root``).
        overwrite: replace a run folder's results made with other settings (``--overwrite``).
        quiet: no progress bars.

    Raises:
        UnknownNameError: a detector name is not registered.
        InputError: a module ``net`` with ``checkpoint=`` too, or a benchmark object with no file.
    """

    def __init__(
        self,
        net: str | torch.nn.Module | None = None,
        *,
        id_name: str | os.PathLike | Benchmark = "fmnist_mini",
        postprocessor_name: str | Sequence[str] | None = None,
        recipe: str | os.PathLike = "frozen",
        network: str | None = None,
        checkpoint: str | os.PathLike | None = None,
        out: str | os.PathLike | None = None,
        seed: int = 0,
        device: str | None = None,
        fpr_convention: str = "paper",
        steps: int | None = None,
        data_root: str | os.PathLike | None = None,
        overwrite: bool = False,
        quiet: bool = True,
    ) -> None:
        self._model: torch.nn.Module | None = None
        self._direct = isinstance(net, torch.nn.Module) and network is None
        if isinstance(net, torch.nn.Module):
            if checkpoint is not None:
                raise InputError("give the classifier once: a module as net, or checkpoint=, not both")
            self._model = net
        elif net is not None and network is not None and net != network:
            raise InputError(f"net={net!r} and network={network!r} disagree; give one")
        else:
            network = net if net is not None else network
        if postprocessor_name is not None:
            detectors = detector_names(postprocessor_name)
        elif self._direct:
            detectors = [name for name in DEFAULT_BENCH_DETECTORS if name != "odin"]
        else:
            detectors = default_detectors()
        self.settings = BenchSettings(
            benchmark=benchmark_argument(id_name),
            recipe=str(recipe),
            network=network,
            seed=seed,
            device=device,
            data_root=Path(data_root) if data_root is not None else None,
            checkpoint=Path(checkpoint) if checkpoint is not None else None,
            out=Path(out) if out is not None else None,
            detectors=detectors,
            fpr_convention=fpr_convention,
            steps=steps,
            quiet=quiet,
            overwrite=overwrite,
        )
        self.rows: list[ResultRow] = []
        self.run_dir: Path | None = None

    def eval_ood(self) -> Any:
        """Run (or resume, or read) the benchmark and return OpenOOD's table.

        Returns:
            :func:`dfb_ood.api_table.results_table` of the run's rows: one per detector and OOD
            set plus ``near_mean``/``far_mean``/``all_mean``; metrics in percent. The rows
            themselves (fractions, as ``results.csv``) are in :attr:`rows`, the folder in
            :attr:`run_dir` (None for a model run without a run folder).

        Raises:
            InputError: a bad option, as ``harness bench`` reports it (every check runs before
                any work).
            MissingInputError: the benchmark's data or the checkpoint is not there.
        """
        settings = self.settings
        if self._direct:
            self.run_dir = None
            return evaluate_model(
                self._model,  # type: ignore[arg-type]
                settings.benchmark,
                settings.detectors,
                fpr_convention=settings.fpr_convention,
                device=settings.device,
                data_root=settings.data_root,
            )
        if self._model is not None:
            run_dir = resolve_plan(settings).run_dir
            settings.checkpoint = save_classifier(
                self._model, run_dir.parent / f"{run_dir.name}.classifier.safetensors"
            )
        rows, run_dirs = run_seeds(settings, [settings.seed], Reporter(quiet=settings.quiet))
        self.rows, self.run_dir = rows, run_dirs[0]
        return results_table(rows)


def run_dfb(
    classifier: torch.nn.Module | str | os.PathLike,
    *,
    network: str,
    benchmark: str | os.PathLike | Benchmark = "fmnist_mini",
    detectors: str | Sequence[str] = ("msp_dfb", "energy_dfb", "msp_dfbz", "energy_dfbz", "bg"),
    recipe: str | os.PathLike = "frozen",
    **options: Any,
) -> tuple[Any, Path]:
    """Train DFB on your own trained classifier: masks, the (K+1)-class net, the fused detectors.

    The same run as ``harness bench --checkpoint FILE --network NAME --post ...``: stage 1 loads
    your classifier instead of training one, stage 2 draws CAM masks from it, stage 3 trains the
    DFB network, and the fused detectors are scored; run folder, resume and caches as the CLI's.

    Args:
        classifier: the trained K-class classifier, a ``torch.nn.Module`` of architecture
            ``network`` or its weights file (safetensors, a PyTorch state dict, ``.ckpt``).
        network: the architecture's name (``harness list networks``).
        benchmark: the benchmark whose ID classes the classifier was trained on.
        detectors: the detectors to score (plain names score the classifier itself).
        recipe: the recipe that trains the DFB network.
        **options: any other :class:`Evaluator` keyword (``out``, ``seed``, ``steps``, ``device``, ...).

    Returns:
        (the result table, the run folder).

    Raises:
        UnknownNameError: a detector name is not registered.
        InputError: as :class:`Evaluator`.
    """
    if isinstance(classifier, torch.nn.Module):
        evaluator = Evaluator(classifier, network=network, id_name=benchmark, postprocessor_name=detectors,
                              recipe=recipe, **options)  # fmt: skip
    else:
        evaluator = Evaluator(network, id_name=benchmark, postprocessor_name=detectors, recipe=recipe,
                              checkpoint=classifier, **options)  # fmt: skip
    table = evaluator.eval_ood()
    return table, Path(str(evaluator.run_dir))
