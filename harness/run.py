"""The DFB pipeline's stages, the run directory, and resume.

``runs/<benchmark>/<network>/seed<k>/`` holds every artifact of one run::

    classifier.safetensors (+ .json)   stage 1: the K-class classifier
    masks.npy, masks.json, masks_preview.png   stage 2: pseudo masks of the ID train images
    dfb.safetensors (+ .json)          stage 3: the (K+1)-class DFB network
    outputs/<classifier|dfb>/<set>/*.npy stage 4: one forward pass per (network, dataset)
    results.csv, results.json          stages 5-6: detectors, metrics
    run.json, stages.json, run.lock    resolved settings, versions, timings; stage keys; the lock

A stage is skipped when its artifact exists and the key stored in ``stages.json`` (a hash of
its inputs and settings) matches; training stages resume from ``*.resume.pt`` checkpoints.

Under torchrun (:mod:`harness.distributed`) every rank runs the same stages: both trainings are
data-parallel, CAM masks and forward passes are sharded and gathered in dataset order. Rank 0
alone holds the lock, decides which stages are done, writes every artifact and evaluates; the
other ranks never write to the run directory. Stage keys do not depend on the number of
processes, so a run started on N devices can be resumed or re-opened on any other number.

This module orders the stages; their parts live beside it: the options resolved into a
:class:`~harness.plan.RunPlan` (:mod:`harness.plan`), the sets (:mod:`harness.rundata`), the
``stages.json`` ledger and the stage keys (:mod:`harness.ledger`, :mod:`harness.stage_keys`),
each stage's body (``harness.stage_features``, ``stage_train``, ``stage_masks``,
``stage_outputs``, ``stage_evaluate``) and ``run.json`` (:mod:`harness.run_record`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dfb_ood.errors import InputError, MissingInputError
from dfb_ood.harness import distributed
from dfb_ood.harness.cached import FeatureCache
from dfb_ood.harness.data.benchmark import Benchmark, SetSpec
from dfb_ood.harness.data.streaming import StreamedImages
from dfb_ood.harness.detector_spec import CLASSIFIER, DFB
from dfb_ood.harness.evaluate import SetOutputs
from dfb_ood.harness.io import read_json, read_lock, run_lock
from dfb_ood.harness.plan import RunPlan, check_plan, resolve_plan
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.recipes import Recipe
from dfb_ood.harness.result_row import ResultRow
from dfb_ood.harness.run_record import DISK_FULL, STAGES, disk_full, write_record
from dfb_ood.harness.runfolder import check_run_links, recorded_settings, remove_temporaries
from dfb_ood.harness.settings import BenchSettings
from dfb_ood.harness.stage_context import StageContext
from dfb_ood.harness.stage_evaluate import detector_overrides, stage_evaluate
from dfb_ood.harness.stage_features import feature_cache
from dfb_ood.harness.stage_masks import stage_masks
from dfb_ood.harness.stage_outputs import PerturbedFn, check_finite, perturbed_outputs, stage_outputs
from dfb_ood.harness.stage_train import stage_classifier, stage_dense
from dfb_ood.networks import OODNet, Split

__all__ = ["STAGES", "BenchSettings", "Pipeline", "default_device", "run_seeds"]


def default_device() -> torch.device:
    """CUDA when present, else the CPU; never hard-coded (under torchrun: this rank's GPU)."""
    return distributed.device_for(None)


class Pipeline:
    """Runs the stages of one (benchmark, network, seed) in its run directory.

    Built from a :class:`~harness.plan.RunPlan` (or from settings, which it resolves into one);
    the stage bodies are the ``harness.stage_*`` modules, this class orders them, holds the
    run-folder lock and writes ``run.json``. The process group under torchrun is joined when
    the pipeline first works (:meth:`preflight`, :meth:`run`, :meth:`artifacts`).
    """

    def __init__(self, plan: RunPlan | BenchSettings, reporter: Reporter | None = None) -> None:
        if isinstance(plan, BenchSettings):
            plan = resolve_plan(plan)
        self.plan = plan
        self.ctx = StageContext.of(plan, reporter or Reporter(quiet=plan.settings.quiet))
        self.replacing = False  # --overwrite of a run made with other settings: drop its results
        self._checked = False  # preflight() done

    # ------------------------------------------------------------------ the plan, read-only
    @property
    def settings(self) -> BenchSettings:
        return self.plan.settings

    @property
    def benchmark(self) -> Benchmark:
        return self.plan.benchmark

    @property
    def recipe(self) -> Recipe:
        return self.plan.recipe

    @property
    def network_name(self) -> str:
        return self.plan.network

    @property
    def device(self) -> torch.device:
        return self.plan.device

    @property
    def eval_size(self) -> int:
        return self.plan.eval_size

    @property
    def mean(self) -> tuple[float, ...]:
        return self.plan.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.plan.std

    @property
    def run_dir(self) -> Path:
        return self.plan.run_dir

    @property
    def cached(self) -> bool:
        return self.plan.cached

    @property
    def cams_from_cache(self) -> bool:
        return self.plan.cams_from_cache

    @property
    def timings(self) -> dict[str, float]:
        return self.ctx.timings

    @property
    def main(self) -> bool:
        return distributed.is_main()

    @property
    def world(self) -> distributed.World:
        return distributed.world()

    @property
    def stages_path(self) -> Path:
        return self.ctx.ledger.path

    @property
    def reporter(self) -> Reporter:
        return self.ctx.data.reporter

    @reporter.setter
    def reporter(self, reporter: Reporter) -> None:
        self.ctx.data.reporter = reporter

    @property
    def read_only(self) -> bool:
        """A re-opened run (:meth:`from_run_dir`): stages are only read, and nothing is written."""
        return self.ctx.data.read_only

    @read_only.setter
    def read_only(self, value: bool) -> None:
        self.ctx.data.read_only = value

    @property
    def search_results(self) -> dict[str, dict[str, Any]]:
        return self.ctx.search_results

    @property
    def evaluated(self) -> list[str]:
        """Detectors whose rows this run wrote or dropped (their search record follows the rows)."""
        return self.ctx.evaluated

    # ------------------------------------------------------------------ data, keys and ledger
    def identity(self) -> dict[str, Any]:
        """The settings that define this run's results (see :mod:`harness.runfolder`)."""
        return self.plan.identity()

    def _set_specs(self) -> dict[str, tuple[str, SetSpec]]:
        return self.ctx.data.specs

    def _stages(self) -> dict[str, Any]:
        return self.ctx.ledger.records()

    def data_fingerprint(self, set_name: str) -> str:
        return self.ctx.data.fingerprint(set_name)

    def data_key(self) -> str:
        return self.ctx.data.key()

    def arrays(self, set_name: str) -> tuple[torch.Tensor, np.ndarray]:
        return self.ctx.data.arrays(set_name)

    def eval_images(self, set_name: str) -> tuple[torch.Tensor | StreamedImages, np.ndarray]:
        return self.ctx.data.eval_images(set_name)

    def train_images(self) -> tuple[torch.Tensor | StreamedImages, np.ndarray]:
        return self.ctx.data.train_images()

    def features_key(self) -> str:
        return self.ctx.keys.features()

    def classifier_key(self) -> str:
        return self.ctx.keys.classifier()

    def masks_key(self) -> str:
        return self.ctx.keys.masks()

    def dense_key(self) -> str:
        return self.ctx.keys.dense()

    def outputs_key(self, kind: str) -> str:
        return self.ctx.keys.outputs(kind)

    def outputs_set_key(self, kind: str, set_name: str) -> str:
        return self.ctx.keys.outputs_set(kind, set_name)

    # ------------------------------------------------------------------ the stages
    def feature_cache(self, net: OODNet, split: Split) -> FeatureCache:
        return feature_cache(self.ctx, net, split)

    def stage_classifier(self) -> OODNet:
        return stage_classifier(self.ctx)

    def stage_masks(self, classifier: OODNet) -> np.ndarray:
        return stage_masks(self.ctx, classifier)

    def stage_dense(self, classifier: OODNet, masks: np.ndarray) -> OODNet:
        return stage_dense(self.ctx, classifier, masks)

    def stage_outputs(self, nets: dict[str, OODNet]) -> dict[str, SetOutputs]:
        return stage_outputs(self.ctx, nets)

    def perturbed_outputs(self, nets: dict[str, OODNet]) -> PerturbedFn:
        """The callback that serves (and caches) detectors' own passes (ODIN, RankFeat) to evaluate."""
        return perturbed_outputs(self.ctx, nets)

    def _check_finite(self, kind: str, set_name: str, logits: np.ndarray, features: np.ndarray) -> None:
        check_finite(self.ctx, kind, set_name, logits, features)

    def detector_overrides(self) -> dict[str, dict[str, object]]:
        """Per-detector settings from the run: where DFB variants take their foreground score."""
        return detector_overrides(self.ctx)

    # ------------------------------------------------------------------ orchestration
    def _join(self) -> None:
        """Join the process group under torchrun (once); ranks other than 0 stay quiet."""
        distributed.init(self.plan.device)
        if not self.main and not self.reporter.quiet:
            self.reporter = Reporter(quiet=True)  # one set of progress bars and messages: rank 0's

    def _lock(self, wait_s: float = 0.0) -> contextlib.AbstractContextManager[Any]:
        """The run-folder lock: rank 0's exclusive one to write, a shared one to read a finished run."""
        if not self.main:
            return contextlib.nullcontext()
        if self.read_only:
            return read_lock(self.run_dir)
        return run_lock(self.run_dir, wait_s=wait_s)

    def artifacts(self) -> tuple[dict[str, OODNet], dict[str, SetOutputs]]:
        """The networks and cached outputs of the run (computed if needed, unless read-only)."""
        self._join()
        with self._lock():
            classifier = self.stage_classifier()
            nets = {CLASSIFIER: classifier}
            if (self.run_dir / "masks.npy").exists() or self.plan.needs_dfb:
                nets[DFB] = self.stage_dense(classifier, self.stage_masks(classifier))
            return nets, self.stage_outputs(nets)

    def preflight(self) -> None:
        """Everything that can be checked before stage 1: data, run folder (options were checked
        when the plan was resolved). Creates nothing; raises one clear error."""
        self._join()
        if not self.main or self._checked:
            return
        self.replacing = check_plan(self.plan)
        self._checked = True

    def run(self, until: str = "evaluate") -> list[ResultRow]:
        """Run the stages up to ``until`` (one of STAGES), skipping those already done.

        Under torchrun every rank returns only once rank 0 has evaluated and written everything
        (a rank that failed never gets there: torchrun then stops them all); ranks other than 0
        return no rows.
        """
        if until not in STAGES:
            raise InputError(f"unknown stage {until!r}; stages: {', '.join(STAGES)}")
        self.preflight()
        try:
            rows = self._run_locked(until)
        except OSError as error:
            if error.errno in DISK_FULL:
                stages = self._stages() if self.stages_path.is_file() else {}
                raise disk_full(self.run_dir, stages, error) from error
            raise
        distributed.finish()
        return rows

    def _run_locked(self, until: str) -> list[ResultRow]:
        """The stages themselves, under the lock (rank 0's; the other ranks hold none)."""
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if self.main:
                if self.replacing:
                    self._discard_results()
                remove_temporaries(self.run_dir)
                write_record(self.ctx, "running", self.replacing)
            started = time.perf_counter()
            classifier = self.stage_classifier()
            nets = {CLASSIFIER: classifier}
            if until == "classifier":
                return self._finish(started, [])
            if self.plan.needs_dfb or until in ("masks", "dense"):
                masks = self.stage_masks(classifier)
                if until == "masks":
                    return self._finish(started, [])
                nets[DFB] = self.stage_dense(classifier, masks)
                if until == "dense":
                    return self._finish(started, [])
            outputs = self.stage_outputs(nets)
            if until == "outputs" or not self.main:
                return self._finish(started, [])
            return self._finish(started, stage_evaluate(self.ctx, outputs, nets))

    def _discard_results(self) -> None:
        """--overwrite of a run made with other settings: its results describe other networks."""
        for name in ("results.csv", "results.json"):
            (self.run_dir / name).unlink(missing_ok=True)
        for resume in self.run_dir.glob("*.resume.pt"):  # a half-trained stage of the other settings
            resume.unlink()
        self.reporter.message(f"--overwrite: discarded the results of the earlier run in {self.run_dir}")

    def _finish(self, started: float, rows: list[ResultRow]) -> list[ResultRow]:
        if not self.main:
            return rows
        self.timings["total"] = time.perf_counter() - started
        write_record(self.ctx, "complete", self.replacing)
        return rows

    # ------------------------------------------------------------------ re-opening a finished run
    @classmethod
    def from_run_dir(cls, run_dir: str | Path, reporter: Reporter | None = None) -> Pipeline:
        """A finished run, re-opened read-only with the settings recorded in its ``run.json``.

        Reports and sweeps use it to reach the trained networks and cached outputs; any stage that
        is not already done raises instead of silently recomputing, and nothing is written into
        the run folder (it may be read-only, or another user's).
        """
        run_dir = Path(run_dir)
        record_path = run_dir / "run.json"
        if not record_path.is_file() and not record_path.is_symlink():
            raise MissingInputError(f"{run_dir} has no run.json; run `harness bench --out {run_dir}` first")
        check_run_links(run_dir)  # a re-opened run reads nothing through a link planted in it
        settings = recorded_settings(
            read_json(record_path, follow_symlinks=False), run_dir
        )  # its relative paths, found
        settings["out"] = run_dir
        for key in ("data_root", "checkpoint"):
            if settings.get(key) is not None:
                settings[key] = Path(settings[key])
        known = set(BenchSettings.__dataclass_fields__)
        pipeline = cls(BenchSettings(**{k: v for k, v in settings.items() if k in known}), reporter)
        pipeline.read_only = True
        return pipeline


def run_seeds(
    settings: BenchSettings, seeds: Sequence[int], reporter: Reporter | None = None
) -> tuple[list[ResultRow], list[Path]]:
    """Run the pipeline once per seed (each in its own run directory); all rows and the run dirs.

    Every seed's pipeline is built and checked before the first one starts, so a mistake that
    only shows for seed 3 (say, its folder holds another run) costs no training of seeds 0-2.
    """
    if not seeds:
        raise InputError("--seeds: give at least one seed, e.g. --seeds 0 or --seeds 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise InputError(f"--seeds: each seed once, got {','.join(map(str, seeds))}")
    pipelines = []
    for seed in seeds:
        per_seed = BenchSettings(**{**asdict(settings), "seed": seed})
        if settings.out is not None and len(seeds) > 1:
            per_seed.out = Path(settings.out) / f"seed{seed}"
        pipeline = Pipeline(resolve_plan(per_seed), reporter)
        pipeline.preflight()
        pipelines.append(pipeline)
    rows: list[ResultRow] = []
    for pipeline in pipelines:
        rows.extend(pipeline.run())
    return rows, [pipeline.run_dir for pipeline in pipelines]
