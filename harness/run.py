"""The DFB pipeline's stages, the run directory, and resume.

``runs/<benchmark>/<network>/seed<k>/`` holds every artifact of one run::

    classifier.safetensors (+ .json)   stage 1: the K-class classifier
    masks.npy, masks.json, masks_preview.png   stage 2: pseudo masks of the ID train images
    dfb.safetensors (+ .json)          stage 3: the (K+1)-class DFB network
    outputs/<classifier|dfb>/<set>.npz stage 4: one forward pass per (network, dataset)
    results.csv, results.json          stages 5-6: detectors, metrics
    run.json, stages.json, run.lock    resolved settings, versions, timings; stage keys; the lock

A stage is skipped when its artifact exists and the key stored in ``stages.json`` (a hash of
its inputs and settings) matches; training stages resume from ``*.resume.pt`` checkpoints.

Under torchrun (:mod:`harness.distributed`) every rank runs the same stages: both trainings are
data-parallel, CAM masks and forward passes are sharded and gathered in dataset order. Rank 0
alone holds the lock, decides which stages are done, writes every artifact and evaluates; the
other ranks never write to the run directory. Stage keys do not depend on the number of
processes, so a run started on N devices can be resumed or re-opened on any other number.
"""

from __future__ import annotations

import contextlib
import errno
import os
import platform
import shutil
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from dfb_ood.harness import distributed
from dfb_ood.harness.cached import (
    FeatureCache,
    cached_cams,
    cached_predictions,
    extract_features,
    train_on_features,
)
from dfb_ood.harness.data.benchmark import Benchmark, SetSpec, load_benchmark
from dfb_ood.harness.data.datasets import ImageFileDataset, load_arrays
from dfb_ood.harness.data.fingerprint import listed_entries, set_fingerprint
from dfb_ood.harness.data.imglist import FileTable
from dfb_ood.harness.data.problems import DataWarning
from dfb_ood.harness.data.streaming import StreamedImages, data_workers, in_memory_limit_mb, stream_set
from dfb_ood.harness.data.tables import file_table
from dfb_ood.harness.errors import RunFolderError, SystemResourceError
from dfb_ood.harness.evaluate import CLASSIFIER, DFB, SetOutputs, evaluate_detectors, network_of
from dfb_ood.harness.io import (
    content_hash,
    file_hash,
    own_folder,
    read_json,
    read_lock,
    run_lock,
    save_npy,
    write_json,
)
from dfb_ood.harness.leaderboard import write_csv
from dfb_ood.harness.masks import (
    compute_cams,
    mask_agreement,
    mask_stats,
    masks_from_cams,
    warn_if_degenerate,
)
from dfb_ood.harness.names import join_inside
from dfb_ood.harness.outputs import (
    count_nonfinite,
    forward_outputs,
    head_arrays,
    load_outputs,
    perturbed_logits,
    save_outputs,
    scratch_arrays,
)
from dfb_ood.harness.plots import mask_preview
from dfb_ood.harness.preflight import (
    check_benchmark_data,
    check_checkpoint,
    check_device,
    check_network,
    check_settings,
)
from dfb_ood.harness.progress import Reporter
from dfb_ood.harness.recipes import Recipe, load_recipe
from dfb_ood.harness.runfolder import (
    RESULTS_FILES,
    RESULTS_STAGE,
    check_run_folder,
    check_run_links,
    checksums,
    damaged,
    earlier_results,
    git_commit,
    merge_reports,
    merge_rows,
    merge_search,
    package_versions,
    read_record,
    recorded_settings,
    remove_temporaries,
    results_status,
)
from dfb_ood.harness.search import is_searchable, search_detector
from dfb_ood.harness.settings import BenchSettings
from dfb_ood.harness.train import TrainResult, train_network
from dfb_ood.networks import (
    OODNet,
    Split,
    create_network,
    dfb_from_pretrained,
    from_classifier,
    load_checkpoint,
    network_spec,
    save_checkpoint,
    sidecar_path,
    split_network,
)
from dfb_ood.postprocessors.base import Outputs, Postprocessor

STAGES = ("classifier", "masks", "dense", "outputs", "evaluate")
# Training images whose CAMs are held at once while masks are made (float32 at the stored size);
# a multiple of compute_cams' batch of 256, so the batches, and so the masks, are those of one pass.
MASK_CHUNK = 4096
# How a set's role reads in a message ("far-OOD set 'noise' changed").
ROLE_LABELS = {"id": "ID", "ood_val": "OOD-val", "near": "near-OOD", "far": "far-OOD"}


def default_device() -> torch.device:
    """CUDA when present, else the CPU; never hard-coded (under torchrun: this rank's GPU)."""
    return distributed.device_for(None)


class Pipeline:
    """Runs the stages of one (benchmark, network, seed) in its run directory."""

    def __init__(self, settings: BenchSettings, reporter: Reporter | None = None) -> None:
        check_settings(settings)
        check_device(settings.device)
        in_memory_limit_mb(settings.in_memory_mb)  # a bad threshold or worker count fails now
        data_workers(settings.data_workers)
        self.settings = settings
        self.reporter = reporter or Reporter(quiet=settings.quiet)
        self.benchmark: Benchmark = load_benchmark(
            settings.benchmark, settings.data_root, classes=settings.classes, class_seed=settings.class_seed
        )
        recipe = load_recipe(settings.recipe)
        changes: dict[str, Any] = {}
        if settings.steps is not None:
            changes["steps"] = settings.steps
        if settings.batch_size is not None:
            changes["batch_size"] = settings.batch_size
        self.recipe: Recipe = recipe.with_overrides(**changes) if changes else recipe
        self.network_name = settings.network or self.recipe.network
        check_network(self.network_name, self.recipe)
        self.device = distributed.device_for(settings.device)
        self.world = distributed.init(self.device)
        self.main = distributed.is_main()
        if not self.main:
            self.reporter = Reporter(quiet=True)  # one set of progress bars and messages: rank 0's
        self.eval_size = int(self.recipe.eval_size or self.benchmark.image_size)
        self.mean, self.std = self._normalisation()
        self.cached = self.recipe.trainable != "all"  # trains on cached features (harness.cached)
        if self.cached and settings.checkpoint and self.recipe.dense_init == "pretrained":
            raise ValueError(
                f"recipe {self.recipe.name!r} caches the features of the --checkpoint classifier, so its DFB "
                "net must start from that classifier: set dense.init: classifier, or use trainable: all"
            )
        self._features: FeatureCache | None = None
        # cached recipes take CAMs from the cached maps at scale 1; other scales need image passes
        self.cams_from_cache = self.cached and tuple(self.recipe.cam.scales) == (1.0,)
        self.run_dir = (
            Path(settings.out)
            if settings.out
            # "timm:<model>" -> "timm-<model>": a colon is not allowed in Windows paths. Each part
            # is one plain name (the benchmark's is checked where its YAML is read): the default
            # run folder stays inside runs/ whatever the names.
            else join_inside(
                Path("runs"),
                self.benchmark.name,
                self.network_name.replace(":", "-"),
                f"seed{settings.seed}",
                what="run folder name (benchmark, network, seed)",
            )
        )
        self._arrays: dict[str, tuple[torch.Tensor, np.ndarray]] = {}
        self._streamed: dict[str, tuple[StreamedImages, np.ndarray]] = {}
        self._fingerprints: dict[str, str] = {}
        self._entries: dict[str, FileTable] = {}  # list / folder sets' entries, read once
        self.timings: dict[str, float] = {}
        self.read_only = False
        self.search_results: dict[str, dict[str, Any]] = {}
        self.replacing = False  # --overwrite of a run made with other settings: drop its results
        self._checked = False  # preflight() done
        # detectors whose rows this run wrote or dropped (their search record follows the rows)
        self.evaluated: list[str] = []

    def _normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The input normalisation: a pretrained network's own (what its weights expect), else the data's."""
        spec = network_spec(self.network_name)
        if self.recipe.pretrained and spec.mean is not None and spec.std is not None:
            return tuple(spec.mean), tuple(spec.std)
        return tuple(self.benchmark.mean), tuple(self.benchmark.std)

    # ------------------------------------------------------------------ bookkeeping
    @property
    def stages_path(self) -> Path:
        return self.run_dir / "stages.json"

    def _stages(self) -> dict[str, Any]:
        return read_json(self.stages_path, follow_symlinks=False) if self.stages_path.exists() else {}

    def _done(self, stage: str, key: str, *artifacts: Path, collective: bool = True) -> bool:
        """Whether a stage is complete: its key matches and every artifact matches its checksum.

        A damaged artifact is recomputed with a warning; a re-opened (read-only) run cannot
        recompute, so it stops naming the file. Rank 0 decides for every rank, so all take the
        same branch; ``collective=False`` is for what rank 0 alone does (evaluation), where the
        other ranks are not there to take part in the broadcast.
        """
        done = None
        if self.main:
            record = self._stages().get(stage)
            done = bool(record) and record.get("key") == key
            if record and not done:
                self._say_what_changed(stage, record)
            if done:
                problems = damaged(self.run_dir, record.get("files"), artifacts)
                if problems and self.read_only:
                    raise RunFolderError(
                        f"{self.run_dir}: {'; '.join(problems)}; re-run the `harness bench` command that "
                        f"made this run (its options are in run.json) to recompute the {stage} stage"
                    )
                if problems:
                    self.reporter.message(
                        f"{'; '.join(problems)}: recomputing the {stage} stage", label="warning:"
                    )
                    done = False
        return bool(distributed.from_main(done)) if collective else bool(done)

    #: Stages made from the ID training images: their records keep the train set's fingerprint.
    TRAIN_STAGES = ("classifier", "features", "masks", "dense")

    def _say_what_changed(self, stage: str, record: dict[str, Any]) -> None:
        """A stage about to be recomputed because the data it read changed says which set did."""
        recorded = record.get("data")
        if not isinstance(recorded, dict):
            return
        roles = self._set_specs()
        changed = [
            name
            for name, fingerprint in recorded.items()
            if name in roles and self.data_fingerprint(name) != fingerprint
        ]
        for name in changed:
            self.reporter.message(
                f"{ROLE_LABELS[roles[name][0]]} set {name!r} changed (its list or image files): "
                f"recomputing the {stage} stage",
                label="warning:",
            )

    def _compute(self, stage: str) -> None:
        """Called before a stage computes anything; a read-only (re-opened) run refuses."""
        if self.read_only:
            raise ValueError(
                f"{self.run_dir}: the {stage} stage is missing or out of date for this code and settings; "
                "re-run `harness bench` with the same options to complete it"
            )

    def _mark(self, stage: str, key: str, files: Sequence[Path] = (), **info: Any) -> None:
        """Record a finished stage: its key, the checksum of each artifact, and what it measured."""
        if not self.main:
            return
        if stage in self.TRAIN_STAGES:
            info.setdefault("data", {"train": self.data_fingerprint("train")})
        stages = self._stages()
        stages[stage] = {"key": key, "files": checksums(self.run_dir, files), **info}
        write_json(self.stages_path, stages)

    def _benchmark_key(self) -> str:
        source = self.benchmark.source
        subset = self.benchmark.class_subset  # --classes / --class-seed change the data, not the file
        return content_hash(
            self.benchmark.name,
            file_hash(source) if source and source.is_file() else None,
            *([subset.of, subset.ids] if subset is not None else []),
        )

    def _set_specs(self) -> dict[str, tuple[str, SetSpec]]:
        """Every set of the benchmark by name, with its role."""
        b = self.benchmark
        specs: dict[str, tuple[str, SetSpec]] = {"train": ("id", b.train), "test": ("id", b.test)}
        if b.val is not None:
            specs["val"] = ("id", b.val)
        if b.ood_val is not None:
            specs["ood_val"] = ("ood_val", b.ood_val)
        for name, spec in b.near.items():
            specs[name] = ("near", spec)
        for name, spec in b.far.items():
            specs[name] = ("far", spec)
        return specs

    def data_fingerprint(self, set_name: str) -> str:
        """What a set holds now (entries, each image's size and mtime): see harness.data.fingerprint."""
        if set_name not in self._fingerprints:
            _, spec = self._set_specs()[set_name]
            entries = self._listed(set_name) if spec.type in ("imglist", "folder") else None
            self._fingerprints[set_name] = set_fingerprint(
                spec, self.benchmark, skip_bad=self.settings.skip_bad, entries=entries
            )
        return self._fingerprints[set_name]

    def _listed(self, set_name: str) -> FileTable:
        """A list or folder set's entries (warnings left to the load), read once per pipeline."""
        if set_name not in self._entries:
            _, spec = self._set_specs()[set_name]
            self._entries[set_name] = listed_entries(spec, self.benchmark, skip_bad=self.settings.skip_bad)
        return self._entries[set_name]

    def data_key(self) -> str:
        """Every set's fingerprint in one hash: the data a run's results were computed from."""
        return content_hash({name: self.data_fingerprint(name) for name in self._set_specs()})

    @contextlib.contextmanager
    def _data_warnings(self) -> Iterator[None]:
        """Say what ``--skip-bad`` dropped (DataWarnings) where the user reads; pass other warnings on."""
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DataWarning)
            yield
        for warning in caught:
            if issubclass(warning.category, DataWarning):
                self.reporter.message(str(warning.message), label="warning:")
            else:
                warnings.warn(warning.message, stacklevel=1)

    def arrays(self, set_name: str) -> tuple[torch.Tensor, np.ndarray]:
        """A set's decoded images as a uint8 (N, 3, H, W) tensor and its labels, loaded once."""
        if set_name not in self._arrays:
            _, spec = self._set_specs()[set_name]
            with self._data_warnings():
                images, labels = load_arrays(spec, self.benchmark, skip_bad=self.settings.skip_bad)
            tensor = torch.from_numpy(np.array(images))  # a copy: cached sets arrive memory-mapped, read-only
            tensor = tensor.permute(0, 3, 1, 2).contiguous()
            self._arrays[set_name] = (tensor, np.asarray(labels, dtype=np.int64))
        return self._arrays[set_name]

    def eval_images(self, set_name: str) -> tuple[torch.Tensor | StreamedImages, np.ndarray]:
        """A set's test-size uint8 images for evaluation passes: held in memory, or streamed from files.

        A file-backed set (list or folder) whose decoded size exceeds ``in_memory_mb`` is read in
        batches by DataLoader workers on every pass instead of being decoded into memory (see
        :mod:`harness.data.streaming`); both give the same pixels, so the same outputs.
        """
        if set_name in self._arrays:
            return self._arrays[set_name]
        if set_name in self._streamed:
            return self._streamed[set_name]
        _, spec = self._set_specs()[set_name]
        if spec.type in ("imglist", "folder"):
            skip_bad = self.settings.skip_bad
            crop = self.benchmark.test_crop
            if stream_set(len(self._listed(set_name)), crop, in_memory_limit_mb(self.settings.in_memory_mb)):
                with self._data_warnings():  # --skip-bad also checks headers: drops are known up front
                    table = file_table(spec, self.benchmark, skip_bad=skip_bad, headers=skip_bad)
                dataset = ImageFileDataset(
                    table, self.benchmark.test_resize, crop, name=f"{self.benchmark.name}/{spec.name}"
                )
                images = StreamedImages(
                    dataset,
                    workers=data_workers(self.settings.data_workers),
                    pin_memory=self.device.type == "cuda",
                )
                self._streamed[set_name] = (images, np.asarray(table.labels, dtype=np.int64))
                return self._streamed[set_name]
        return self.arrays(set_name)

    def train_images(self) -> tuple[torch.Tensor | StreamedImages, np.ndarray]:
        """The ID train set's test-size uint8 images and labels, held or streamed (:meth:`eval_images`).

        Every stage that reads training images (training, CAM masks, cached features, previews)
        takes them from here, so a train set above ``in_memory_mb`` is streamed through all of
        them: decoded once per epoch (training) or per pass, never held whole.
        """
        return self.eval_images("train")

    def _pass_arrays(
        self, folder: Path, shapes: dict[str, tuple[int, ...]], dtype: type[np.generic] = np.float32
    ) -> contextlib.AbstractContextManager[dict[str, np.ndarray]]:
        """Where a pass writes its rows: temporary memory maps, so memory stays flat in N.

        Rank 0 of a run that writes its folder gets them beside the cache (``folder``); the other
        ranks under DDP and a re-opened, read-only run (nothing is written into its folder) get
        unnamed ones in the system's temporary directory (:func:`harness.outputs.scratch_arrays`).
        """
        return scratch_arrays(folder if self.main and not self.read_only else None, shapes, dtype=dtype)

    def _scratch_rows(self, n: int) -> int:
        """Rows of this rank's scratch for a sharded pass over ``n`` rows.

        Rank 0 maps the whole set: its own shard is the first rows and the others' are gathered
        after it (:func:`harness.distributed.gather_rows_into`); another rank maps its shard alone.
        """
        start, stop = distributed.shard_range(n)
        return n if self.main else stop - start

    # ------------------------------------------------------------------ stages
    def _net_path(self, kind: str) -> Path:
        return self.run_dir / f"{kind}.safetensors"

    def _save_net(self, net: OODNet, kind: str, key: str) -> None:
        if not self.main:
            return
        save_checkpoint(
            net,
            self._net_path(kind),
            input_size=self.eval_size,
            normalization={"mean": list(self.mean), "std": list(self.std)},
            settings_hash=key,
            extra={"benchmark": self.benchmark.name, "recipe": self.recipe.name, "seed": self.settings.seed},
        )

    def features_key(self) -> str:
        """What the cached features depend on: the frozen part's weights, the images and their transform."""
        checkpoint = self.settings.checkpoint
        source = (
            ("checkpoint", file_hash(checkpoint)) if checkpoint else ("pretrained", self.recipe.pretrained)
        )
        return content_hash(
            "features",
            self._benchmark_key(),
            self.data_fingerprint("train"),
            self.network_name,
            self.recipe.network_options,
            self.recipe.trainable,
            source,
            self.eval_size,
            self.mean,
            self.std,
            self.recipe.flip,
            # a random frozen backbone is drawn from the seed; pretrained weights are not
            None if self.recipe.pretrained or checkpoint else self.settings.seed,
        )

    def feature_cache(self, net: OODNet, split: Split) -> FeatureCache:
        """The frozen part's output for every ID training image (and its mirror), computed once.

        ``net`` is the network whose frozen part the recipe trains on (the classifier, which in
        these recipes shares it with the DFB net). A stage of its own, ``features``: keyed,
        checksummed, and reused by the classifier, masks and dense stages of this run.
        """
        if self._features is not None:
            return self._features
        key = self.features_key()
        folder = self._own_folder("features")
        paths = [folder / "train.npy"] + ([folder / "train_flipped.npy"] if self.recipe.flip else [])
        if self._done("features", key, *paths):
            arrays = [np.load(path, mmap_mode="r") for path in paths]
        else:
            arrays = self._extract_features(net, split, key, paths)
        self._features = FeatureCache(arrays[0], arrays[1] if len(arrays) == 2 else None)
        return self._features

    def _extract_features(self, net: OODNet, split: Split, key: str, paths: list[Path]) -> list[np.ndarray]:
        """Compute the features stage (plain, then mirrored when ``paths`` has two files) and record it."""
        self._compute("features")
        started = time.perf_counter()
        images, _ = self.train_images()
        start, stop = distributed.shard_range(images.shape[0])
        arrays = []
        for mirrored in (False, True)[: len(paths)]:
            part = extract_features(
                split,
                net,
                images[start:stop],
                mean=self.mean,
                std=self.std,
                size=self.eval_size,
                device=self.device,
                mirrored=mirrored,
                batch_size=self.settings.eval_batch_size,
                reporter=self.reporter,
                description="features (mirrored)" if mirrored else "features",
            )
            arrays.append(distributed.gather_rows(part, images.shape[0]))
        seconds = time.perf_counter() - started
        if self.main:
            self._own_folder("features", create=True)
            for path, array in zip(paths, arrays):
                save_npy(path, array)
        self._mark(
            "features",
            key,
            files=paths,
            seconds=seconds,
            images_per_s=images.shape[0] * len(paths) / seconds if seconds > 0 else 0.0,
            shape=list(arrays[0].shape),
        )
        self.timings["features"] = seconds
        return arrays

    def classifier_key(self) -> str:
        checkpoint = self.settings.checkpoint
        source = (
            ("checkpoint", file_hash(checkpoint))
            if checkpoint
            else ("trained", self.recipe.as_dict(), self.data_fingerprint("train"))
        )
        return content_hash(
            "classifier", self._benchmark_key(), self.network_name, self.settings.seed, source
        )

    def stage_classifier(self) -> OODNet:
        """Stage 1: load the user's K-class classifier, or train one with the recipe."""
        key = self.classifier_key()
        path = self._net_path("classifier")
        k = self.benchmark.num_classes
        if self._done("classifier", key, path, sidecar_path(path)):
            return load_checkpoint(path, num_classes=k, background=False, device=self.device)
        self._compute("classifier")
        started = time.perf_counter()
        if self.settings.checkpoint:
            self.reporter.message(f"stage 1: loading the classifier from {self.settings.checkpoint}")
            net = create_network(
                self.network_name,
                k,
                weights=self.settings.checkpoint,
                load_head="require",
                **self.recipe.network_options,
            )
            info: dict[str, Any] = {"source": str(self.settings.checkpoint)}
        else:
            self.reporter.message(
                f"stage 1: training the {self.network_name} classifier ({self.recipe.name})"
            )
            torch.manual_seed(self.settings.seed)
            net = create_network(
                self.network_name, k, pretrained=self.recipe.pretrained, **self.recipe.network_options
            )
            _, labels = self.train_images()
            result = self._train(
                net, torch.from_numpy(labels), mode="classifier", seed=self.settings.seed, source=net
            )
            info = {
                "images_per_s": result.images_per_s,
                "resumed_from": result.resumed_from,
                "final_loss": float(np.mean(result.losses[-20:])) if result.losses else None,
            }
        self._save_net(net, "classifier", key)
        if self.main:
            (self.run_dir / "classifier.resume.pt").unlink(missing_ok=True)
        # the features stage, when it ran inside this one, is timed on its own
        self.timings["classifier"] = time.perf_counter() - started - self.timings.get("features", 0.0)
        files = [path, sidecar_path(path)]
        self._mark("classifier", key, files=files, seconds=self.timings["classifier"], **info)
        return net.to(self.device).eval()

    def masks_key(self) -> str:
        return content_hash(
            "masks",
            self.classifier_key(),
            asdict(self.recipe.cam),
            self.eval_size,
            self.data_fingerprint("train"),  # a --checkpoint classifier's key does not hold it
        )

    def stage_masks(self, classifier: OODNet) -> np.ndarray:
        """Stage 2: CAM pseudo masks for every ID training image, one uint8 array, memory-mapped.

        The masks of image CAMs are written chunk by chunk into a memory map, so neither the CAMs
        nor the masks of a streamed train set are ever held whole: at ImageNet scale (1.28M images
        at 224 px) the masks alone are 64 GB. Under DDP each rank writes the masks of its
        contiguous shard into a map of its own (an unnamed temporary; rank 0's is its map of the
        whole set, beside ``masks.npy``), and rank 0 gathers the others' shards into it a bounded
        piece at a time (:func:`harness.distributed.gather_rows_into`), then writes ``masks.npy``
        with its statistics. The dense stage trains on all the masks on every rank, each reading
        its batches' rows: so after a barrier the other ranks map rank 0's ``masks.npy`` from the
        run folder they share (the module doc of :mod:`harness.distributed`), and no rank holds
        the masks in memory. Every rank returns the same read-only map of that file.

        Masks of the cached feature maps (:meth:`_cached_masks`) are computed by rank 0 alone and
        reach the other ranks the same way; those ranks only take part in the features stage,
        which is collective and which their dense stage reads anyway (cached training reads the
        features and the masks whole, on every rank).
        """
        key = self.masks_key()
        path = self.run_dir / "masks.npy"
        if self._done("masks", key, path):
            return np.load(path, mmap_mode="r")
        self._compute("masks")
        self.reporter.message("stage 2: pseudo masks from class activation maps")
        started = time.perf_counter()
        images, labels = self.train_images()
        show = np.linspace(0, len(labels) - 1, num=min(12, len(labels))).astype(int)
        if self.cams_from_cache:
            self.feature_cache(classifier, split_network(classifier, self.recipe.trainable))
            if self.main:
                masks, cams = self._cached_masks(classifier)
                show_cams = cams[show]
                del cams
                self._finish_masks(key, path, masks, show, show_cams, started)
                del masks
        else:
            shape = (self._scratch_rows(len(labels)), *images.shape[-2:])
            with self._pass_arrays(self.run_dir, {"masks": shape}, dtype=np.uint8) as scratch:
                self._image_masks(classifier, scratch["masks"])
                if self.main:
                    show_cams = self._cams_of(classifier, show)
                    self._finish_masks(key, path, scratch["masks"], show, show_cams, started)
        # Rank 0 has written masks.npy. Had it failed, the others wait here (as they otherwise
        # would in the dense stage's first collective) until torchrun stops them or the timeout.
        distributed.barrier()
        return np.load(path, mmap_mode="r")

    def _image_masks(self, classifier: OODNet, into: np.ndarray) -> None:
        """Masks from multi-scale CAMs of this rank's shard of the images, written into ``into``.

        CAMs are computed :data:`MASK_CHUNK` images at a time and turned into masks at once, so
        the float CAMs of the whole set never exist. ``into`` is a memory map: rank 0's (and a
        single process's) holds every image's row, this rank's shard first; another rank's holds
        its shard alone. Under DDP the shards are then gathered into rank 0's map a bounded piece
        at a time (:func:`harness.distributed.gather_rows_into`), so that no rank holds all the
        masks in memory, as :func:`harness.distributed.gather_rows` would have every rank do.
        """
        images, labels = self.train_images()
        start, stop = distributed.shard_range(len(labels))
        part = into[: stop - start]
        k = self.benchmark.num_classes
        with self.reporter.task("CAM masks", total=stop - start) as bar:
            for first in range(start, stop, MASK_CHUNK):
                last = min(first + MASK_CHUNK, stop)
                cams = compute_cams(
                    classifier,
                    images[first:last],
                    torch.from_numpy(labels[first:last]),
                    self.recipe.cam,
                    mean=self.mean,
                    std=self.std,
                    size=self.eval_size,
                    device=self.device,
                )
                targets = torch.from_numpy(labels[first:last])
                if self.recipe.cam.target == "prediction":
                    targets = torch.from_numpy(
                        # the release's choice: predicted class
                        self._predict(classifier, images[first:last]).astype(np.int64)
                    )
                part[first - start : last - start] = masks_from_cams(cams, targets, self.recipe.cam.theta, k)
                bar.advance(last - first)
        distributed.gather_rows_into(part, len(labels), into if self.main else None, dst=0)

    def _cached_masks(self, classifier: OODNet) -> tuple[np.ndarray, torch.Tensor]:
        """Masks from CAMs of the cached feature maps (one scale and the mirror), all in memory (rank 0)."""
        images, labels = self.train_images()
        split = split_network(classifier, self.recipe.trainable)
        cache = self.feature_cache(classifier, split)
        targets = torch.from_numpy(labels)
        if self.recipe.cam.target == "prediction":
            targets = cached_predictions(classifier, split, cache, self.device)
        cams = cached_cams(
            classifier,
            split,
            cache,
            targets,
            size=tuple(images.shape[-2:]),
            normalise=self.recipe.cam.normalise,
            sigma=self.recipe.cam.sigma,
            device=self.device,
            reporter=self.reporter,
        )
        k = self.benchmark.num_classes
        return masks_from_cams(cams, targets, self.recipe.cam.theta, k), cams

    def _finish_masks(
        self,
        key: str,
        path: Path,
        masks: np.ndarray,
        show: np.ndarray,
        show_cams: torch.Tensor,
        started: float,
    ) -> None:
        """Write ``masks.npy``, its statistics, the preview, the agreement with true objects (where
        known) and the stage record (rank 0 alone)."""
        save_npy(path, masks)
        k = self.benchmark.num_classes
        stats = mask_stats(masks, k)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            warn_if_degenerate(stats, self.recipe.cam.theta)
        for warning in caught:
            self.reporter.message(str(warning.message), label="warning:")
        images, labels = self.train_images()
        mask_preview(
            images[show].permute(0, 2, 3, 1).numpy(),
            show_cams.numpy(),
            masks[show],
            labels[show],
            self.benchmark.class_names,
            k,
            self.run_dir / "masks_preview.png",
            title=f"{self.benchmark.name}: ID train images, CAMs and pseudo masks "
            f"(theta {self.recipe.cam.theta})",
        )
        info: dict[str, Any] = {
            **asdict(stats),
            "mean_background": 1.0 - stats.mean_foreground,
            "degenerate": stats.degenerate,
            "normalise": self.recipe.cam.normalise,
            "theta": self.recipe.cam.theta,
            "source": "cached feature maps" if self.cams_from_cache else "image CAMs at cam.scales",
        }
        truth = self._true_object_masks()
        if truth is not None and truth.shape == masks.shape:
            info["vs_true_objects"] = mask_agreement(masks, truth, k)
            self.reporter.message(
                "pseudo masks vs true objects: "
                + ", ".join(f"{name} {value:.2f}" for name, value in info["vs_true_objects"].items())
            )
        self.timings["masks"] = time.perf_counter() - started
        write_json(self.run_dir / "masks.json", {"key": key, **info})
        self._mark("masks", key, files=[path], seconds=self.timings["masks"], **info)

    def _cams_of(self, classifier: OODNet, rows: np.ndarray) -> torch.Tensor:
        """CAMs of a few training images (the preview's), computed on this rank alone."""
        images, labels = self.train_images()
        return compute_cams(
            classifier,
            images[torch.from_numpy(rows)],
            torch.from_numpy(labels[rows]),
            self.recipe.cam,
            mean=self.mean,
            std=self.std,
            size=self.eval_size,
            device=self.device,
        )

    def _true_object_masks(self) -> np.ndarray | None:
        """Ground-truth object masks of the ID train set, where the benchmark generates them (shapes)."""
        spec = self.benchmark.train
        if spec.type != "shapes" or spec.params.get("subset"):
            return None
        from dfb_ood.harness.data.shapes import generate_set

        params = spec.params
        return generate_set(
            params["set"], params["count"], params["seed"], params["size"], return_masks=True
        )[2]

    def _predict(self, net: OODNet, images: torch.Tensor) -> np.ndarray:
        logits, _ = forward_outputs(
            net,
            images,
            mean=self.mean,
            std=self.std,
            size=self.eval_size,
            device=self.device,
            batch_size=self.settings.eval_batch_size,
        )
        return logits[:, : net.num_classes].argmax(axis=1)

    def dense_key(self) -> str:
        return content_hash("dense", self.masks_key(), self.recipe.as_dict(), self.settings.seed)

    def stage_dense(self, classifier: OODNet, masks: np.ndarray) -> OODNet:
        """Stage 3: the (K+1)-class DFB network, trained per pixel against the pseudo masks."""
        key = self.dense_key()
        path = self._net_path("dfb")
        k = self.benchmark.num_classes
        if self._done("dense", key, path, sidecar_path(path)):
            return load_checkpoint(path, num_classes=k, background=True, device=self.device)
        self._compute("dense")
        self.reporter.message("stage 3: training the (K+1)-class DFB network on the pseudo masks")
        started = time.perf_counter()
        torch.manual_seed(self.settings.seed)
        if self.recipe.dense_init == "pretrained":  # the paper: the pretrained backbone, a fresh K+1 head
            net = dfb_from_pretrained(self.network_name, k, pretrained=True, **self.recipe.network_options)
        else:  # the trained classifier's backbone and K head rows, background row zero
            net = from_classifier(classifier.to("cpu"))
        result = self._train(net, masks, mode="dense", seed=self.settings.seed + 1, source=classifier)
        self._save_net(net, "dfb", key)
        if self.main:
            (self.run_dir / "dfb.resume.pt").unlink(missing_ok=True)
        self.timings["dense"] = time.perf_counter() - started
        self._mark(
            "dense",
            key,
            files=[path, sidecar_path(path)],
            seconds=self.timings["dense"],
            images_per_s=result.images_per_s,
            resumed_from=result.resumed_from,
            final_loss=float(np.mean(result.losses[-20:])) if result.losses else None,
        )
        return net.to(self.device).eval()

    def _train(
        self, net: OODNet, targets: torch.Tensor | np.ndarray, *, mode: str, seed: int, source: OODNet
    ) -> TrainResult:
        """Train ``net`` in place on the ID train set: on the cached features of ``source``'s frozen
        part (cached recipes; the classifier, whose frozen part the DFB net shares), else on the images.

        ``targets`` are labels or masks; masks may be memory-mapped (``masks.npy``): the image
        loop reads a batch of rows at a time, the cached loop (features in memory) reads them whole.
        """
        checkpoint = self.run_dir / ("classifier.resume.pt" if mode == "classifier" else "dfb.resume.pt")
        if self.cached:
            cache = self.feature_cache(source, split_network(source, self.recipe.trainable))
            return train_on_features(
                net,
                split_network(net, self.recipe.trainable),
                cache,
                targets if isinstance(targets, torch.Tensor) else torch.from_numpy(np.array(targets)),
                self.recipe,
                mode=mode,  # type: ignore[arg-type]
                device=self.device,
                seed=seed,
                checkpoint=checkpoint,
                reporter=self.reporter,
            )
        images, _ = self.train_images()
        return train_network(
            net,
            images,
            targets,
            self.recipe,
            mode=mode,  # type: ignore[arg-type]
            mean=self.mean,
            std=self.std,
            device=self.device,
            seed=seed,
            checkpoint=checkpoint,
            reporter=self.reporter,
        )

    def outputs_key(self, kind: str) -> str:
        net_key = self.classifier_key() if kind == CLASSIFIER else self.dense_key()
        return content_hash("outputs", kind, net_key, self._benchmark_key(), self.eval_size)

    def outputs_set_key(self, kind: str, set_name: str) -> str:
        """The key of one set's cached pass: the network's outputs key and what the set holds now."""
        return content_hash(self.outputs_key(kind), set_name, self.data_fingerprint(set_name))

    def _stale_sets(self, kind: str, key: str, paths: Mapping[str, Path]) -> list[str]:
        """The sets whose cached pass of ``kind`` must be (re)computed, each with its reason said.

        All of them when the network or the benchmark definition changed (or nothing is cached);
        otherwise exactly the sets whose data changed, whose file is damaged, or that are new.
        Rank 0 decides for every rank. A re-opened (read-only) run cannot recompute: it stops,
        naming the sets.
        """
        stale: list[str] | None = None
        if self.main:
            record = self._stages().get(f"outputs_{kind}") or {}
            recorded = record.get("sets") if record.get("key") == key else None
            if not isinstance(recorded, dict):
                stale = list(paths)
                reasons = []
            else:
                stale, reasons = [], []
                roles = self._set_specs()
                for name, path in paths.items():
                    if name not in recorded:
                        why = f"set {name!r} has no cached {kind} outputs"
                    elif recorded[name] != self.outputs_set_key(kind, name):
                        why = f"{ROLE_LABELS[roles[name][0]]} set {name!r} changed (its list or image files)"
                    else:
                        problems = damaged(self.run_dir, record.get("files"), [path])
                        why = "; ".join(problems) if problems else ""
                    if why:
                        stale.append(name)
                        reasons.append(why)
            if stale and self.read_only and record:
                raise RunFolderError(
                    f"{self.run_dir}: the cached {kind} outputs are out of date or damaged "
                    f"({'; '.join(reasons) or 'made for other networks or another benchmark definition'}); "
                    "re-run the `harness bench` command that made this run (its options are in run.json)"
                )
            for why in reasons:
                self.reporter.message(f"{why}: recomputing its {kind} outputs", label="warning:")
        return list(distributed.from_main(stale))

    def stage_outputs(self, nets: dict[str, OODNet]) -> dict[str, SetOutputs]:
        """Stage 4: one forward pass per (network, dataset), cached; loaded back as Outputs.

        Each set's pass is keyed on its own (:meth:`outputs_set_key`), so an edited list or a
        replaced image recomputes that set's pass alone. Each rank passes its contiguous shard of
        every set into memory maps; rank 0 gathers the shards into its maps of the whole set a
        bounded piece at a time (:func:`harness.distributed.gather_rows_into`), so no rank holds a
        set's outputs in memory, then writes and loads them (the other ranks get an empty dict:
        they do not evaluate).
        """
        started = time.perf_counter()
        result: dict[str, SetOutputs] = {}
        for kind, net in nets.items():
            key = self.outputs_key(kind)
            folder = self._own_folder(f"outputs/{kind}")
            paths = {name: join_inside(folder, f"{name}.npz", what="set file") for name in self._set_specs()}
            stale = self._stale_sets(kind, key, paths)
            if stale:
                self._compute(f"outputs ({kind})")
                for name in stale:
                    images, labels = self.eval_images(name)
                    n = len(labels)
                    start, stop = distributed.shard_range(n)
                    rows = self._scratch_rows(n)
                    shapes = {"logits": (rows, net.num_outputs), "features": (rows, net.feature_dim)}
                    with self._pass_arrays(folder, shapes) as scratch:
                        logits, features = forward_outputs(
                            net,
                            images[start:stop],
                            mean=self.mean,
                            std=self.std,
                            size=self.eval_size,
                            device=self.device,
                            batch_size=self.settings.eval_batch_size,
                            reporter=self.reporter,
                            description=f"{kind} pass: {name}",
                            into=(scratch["logits"][: stop - start], scratch["features"][: stop - start]),
                        )
                        for part, array in ((logits, "logits"), (features, "features")):
                            whole = scratch[array] if self.main else None
                            distributed.gather_rows_into(part, n, whole, dst=0)
                        if self.main:
                            self._check_finite(kind, name, scratch["logits"], scratch["features"])
                            save_outputs(paths[name], scratch["logits"], scratch["features"], labels)
                sets = {name: self.outputs_set_key(kind, name) for name in paths}
                self._mark(f"outputs_{kind}", key, files=list(paths.values()), sets=sets)
            if not self.main:
                continue
            head = head_arrays(net)
            loaded = {
                name: load_outputs(path, head, background=net.background) for name, path in paths.items()
            }
            specs = self._set_specs()
            result[kind] = SetOutputs(
                train=loaded["train"],
                test=loaded["test"],
                val=loaded.get("val"),
                ood_val=loaded.get("ood_val"),
                ood={n: o for n, o in loaded.items() if specs[n][0] in ("near", "far")},
                groups={n: specs[n][0] for n in loaded if specs[n][0] in ("near", "far")},
            )
        self.timings["outputs"] = time.perf_counter() - started
        return result

    def perturbed_outputs(self, nets: dict[str, OODNet]):  # noqa: ANN201 - the evaluate callback
        """The callback that serves (and caches) detectors' own passes (ODIN, RankFeat) to evaluate."""

        def fetch(detector: Postprocessor, kind: str, set_name: str) -> Outputs:
            base = getattr(detector, "base", detector)
            if hasattr(base, "input_std"):  # ODIN's perturbation is divided by the normalisation std
                base.input_std = tuple(self.std)
            # one folder per (detector settings, network); each set's file keyed on what that set holds
            tag = content_hash(type(base).__name__, base.params(), self.outputs_key(kind))
            source = self.outputs_set_key(kind, set_name)
            key = content_hash(tag, source)
            folder = self._own_folder(f"outputs/{kind}/perturbed-{tag}")
            path = join_inside(folder, f"{set_name}.npz", what="set file")
            net = nets[kind]
            stage = f"{kind}/{path.parent.name}/{set_name}"
            if not self._done(stage, key, path, collective=False):  # rank 0 alone evaluates
                images, labels = self.eval_images(set_name)
                with self._pass_arrays(path.parent, {"logits": (len(labels), net.num_outputs)}) as scratch:
                    logits = perturbed_logits(
                        base,
                        net,
                        images,
                        mean=self.mean,
                        std=self.std,
                        size=self.eval_size,
                        device=self.device,
                        reporter=self.reporter,
                        description=f"{base.name} pass ({kind}): {set_name}",
                        into=scratch["logits"],
                    )
                    if self.read_only:  # a re-opened run is only read: the pass is used, not cached
                        weight, bias = head_arrays(net)
                        return Outputs(logits, None, labels, weight, bias, background=net.background)
                    save_outputs(path, logits, None, labels)
                self._mark(stage, key, files=[path], source=source)
            return load_outputs(path, head_arrays(net), background=net.background)

        return fetch

    def _check_finite(self, kind: str, set_name: str, logits: np.ndarray, features: np.ndarray) -> None:
        """Refuse NaN / inf outputs before they are cached, naming the network that produced them."""
        bad = count_nonfinite(logits)  # in chunks: the outputs may be memory maps larger than memory
        bad_features = count_nonfinite(features)
        if not bad and not bad_features:
            return
        stage = "classifier" if kind == CLASSIFIER else "dense"
        if kind == CLASSIFIER and self.settings.checkpoint:
            source = f"the classifier loaded from --checkpoint {self.settings.checkpoint}"
            advice = "check that checkpoint (it may hold NaN weights or belong to another network)"
        else:
            loss = self._stages().get(stage, {}).get("final_loss")
            source = f"the {kind} network {self._net_path(kind)} (final training loss {loss})"
            advice = (
                "its training diverged: lower the recipe's lr (or use fewer steps) and run into a new --out"
            )
            if isinstance(loss, (int, float)) and np.isfinite(loss):  # trained fine: the file is what broke
                advice = (
                    "its training ended with a finite loss, so the weights file itself is not the network "
                    "trained (damaged or replaced): delete it and run the same command again to retrain it"
                )
        raise ValueError(
            f"{source} gives {bad} non-finite logit(s) and {bad_features} non-finite feature value(s) on set "
            f"{set_name!r}; {advice}"
        )

    def detector_overrides(self) -> dict[str, dict[str, object]]:
        """Per-detector settings from the run: where DFB variants take their foreground score."""
        if self.settings.foreground == "dfb":  # the only other choice, classifier, checked at start
            return {}
        return {name: {"foreground": "classifier"} for name in self.settings.detectors if "_dfb" in name}

    def _search(
        self, outputs: dict[str, SetOutputs], nets: dict[str, OODNet], overrides: dict[str, dict[str, object]]
    ) -> dict[str, dict[str, object]]:
        """Choose each searchable detector's hyper-parameters on ID-val vs OOD-val (cached outputs)."""
        started = time.perf_counter()
        chosen = {name: dict(values) for name, values in overrides.items()}
        for name in self.settings.detectors:
            if not is_searchable(name):
                continue
            fixed = overrides.get(name, {})
            from_classifier = fixed.get("foreground") == "classifier"
            network = CLASSIFIER if from_classifier else network_of(name)
            result = search_detector(
                name,
                outputs[network],
                network=network,
                perturbed=self.perturbed_outputs(nets),
                fixed=fixed,
                background=outputs[DFB] if from_classifier else None,
            )
            chosen.setdefault(name, {}).update(result.chosen)
            self.search_results[name] = {
                "chosen": result.chosen,
                "val_auroc": result.best_auroc,
                "grid_points": len(result.tried),
                "tried": result.tried,
            }
            self.reporter.message(
                f"search {name}: "
                + (", ".join(f"{k}={v}" for k, v in result.chosen.items()) or "no grid")
                + f" (ID-val vs OOD-val AUROC {100 * result.best_auroc:.2f}, {len(result.tried)} points)"
            )
        self.timings["search"] = time.perf_counter() - started
        return chosen

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
            raise FileNotFoundError(f"{run_dir} has no run.json; run `harness bench --out {run_dir}` first")
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

    def _own_folder(self, relative: str, create: bool | None = None) -> Path:
        """``run_dir/relative``, each folder a plain one of the run's (:func:`harness.io.own_folder`).

        Made (by default) where this process writes the run folder: rank 0 of a run that is not
        re-opened read-only. A link, or a file, in the folder's place raises; a folder not there
        (a read-only run's) is returned as the path it would have.
        """
        if create is None:
            create = self.main and not self.read_only
        found = own_folder(self.run_dir, relative, create=create)
        return found if found is not None else self.run_dir / relative

    def _lock(self, wait_s: float = 0.0) -> contextlib.AbstractContextManager[Any]:
        """The run-folder lock: rank 0's exclusive one to write, a shared one to read a finished run."""
        if not self.main:
            return contextlib.nullcontext()
        if self.read_only:
            return read_lock(self.run_dir)
        return run_lock(self.run_dir, wait_s=wait_s)

    def artifacts(self) -> tuple[dict[str, OODNet], dict[str, SetOutputs]]:
        """The networks and cached outputs of the run (computed if needed, unless read-only)."""
        with self._lock():
            classifier = self.stage_classifier()
            nets = {CLASSIFIER: classifier}
            if (self.run_dir / "masks.npy").exists() or any(
                network_of(d) == DFB for d in self.settings.detectors
            ):
                nets[DFB] = self.stage_dense(classifier, self.stage_masks(classifier))
            return nets, self.stage_outputs(nets)

    # ------------------------------------------------------------------ checks before any work
    def identity(self) -> dict[str, Any]:
        """The settings that define this run's results (see :mod:`harness.runfolder`)."""
        checkpoint = self.settings.checkpoint
        subset = self.benchmark.class_subset
        return {
            **({"classes": {"count": subset.count, "seed": subset.seed}} if subset is not None else {}),
            "benchmark": self.benchmark.name,
            "benchmark_definition": self._benchmark_key(),
            "network": self.network_name,
            "seed": self.settings.seed,
            "recipe": self.recipe.as_dict(),
            "checkpoint": file_hash(checkpoint) if checkpoint else None,
            "skip_bad": self.settings.skip_bad,
        }

    def preflight(self) -> None:
        """Everything that can be checked before stage 1: data, run folder (options were checked
        when the pipeline was built). Creates nothing; raises one clear error."""
        if not self.main or self._checked:
            return
        check_benchmark_data(self.benchmark, self.settings.skip_bad)
        check_checkpoint(
            self.settings.checkpoint,
            self.network_name,
            self.benchmark.num_classes,
            self.recipe.network_options,
        )
        self.replacing = check_run_folder(self.run_dir, self.identity(), self.settings.overwrite)
        if self.run_dir.is_dir():
            with read_lock(self.run_dir):  # fails now, not after the checks, if another process holds it
                pass
        self._checked = True

    def run(self, until: str = "evaluate") -> list[dict[str, object]]:
        """Run the stages up to ``until`` (one of STAGES), skipping those already done.

        Under torchrun every rank returns only once rank 0 has evaluated and written everything
        (a rank that failed never gets there: torchrun then stops them all); ranks other than 0
        return no rows.
        """
        if until not in STAGES:
            raise ValueError(f"unknown stage {until!r}; stages: {', '.join(STAGES)}")
        self.preflight()
        try:
            rows = self._run_locked(until)
        except OSError as error:
            if error.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
                raise self._disk_full(error) from error
            raise
        distributed.finish()
        return rows

    def _disk_full(self, error: OSError) -> SystemResourceError:
        """A full disk: say which file system, what it was writing, and what was kept for a resume."""
        try:
            free_mb = shutil.disk_usage(self.run_dir).free / 2**20
            free = f"{free_mb:.0f} MiB free"
        except OSError:
            free = "free space unknown"
        stages = self._stages() if self.stages_path.is_file() else {}
        order = [*STAGES[:3], f"outputs_{CLASSIFIER}", f"outputs_{DFB}"]
        kept = [
            name
            for name in order
            if name in stages and all((self.run_dir / f).is_file() for f in stages[name].get("files", {}))
        ]
        kept += [p.name for p in sorted(self.run_dir.glob("*.resume.pt"))]
        return SystemResourceError(
            error.errno,
            f"no space left on the file system holding {self.run_dir.resolve()} ({free}) while writing "
            f"{error.filename or 'an artifact'}; kept: {', '.join(kept) or 'nothing yet'}. Free some space "
            "and run the same command again: it resumes from what was kept",
        )

    def _run_locked(self, until: str) -> list[dict[str, object]]:
        """The stages themselves, under the lock (rank 0's; the other ranks hold none)."""
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if self.main:
                if self.replacing:
                    self._discard_results()
                remove_temporaries(self.run_dir)
                self._write_record(status="running")
            started = time.perf_counter()
            needs_dfb = any(network_of(d) == DFB for d in self.settings.detectors)
            classifier = self.stage_classifier()
            nets = {CLASSIFIER: classifier}
            if until == "classifier":
                return self._finish(started, [])
            if needs_dfb or until in ("masks", "dense"):
                masks = self.stage_masks(classifier)
                if until == "masks":
                    return self._finish(started, [])
                nets[DFB] = self.stage_dense(classifier, masks)
                if until == "dense":
                    return self._finish(started, [])
            outputs = self.stage_outputs(nets)
            if until == "outputs" or not self.main:
                return self._finish(started, [])
            eval_started = time.perf_counter()
            overrides = self.detector_overrides()
            if self.settings.search:
                overrides = self._search(outputs, nets, overrides)
            rows, reports = evaluate_detectors(
                self.settings.detectors,
                outputs,
                fpr_convention=self.settings.fpr_convention,
                overrides=overrides,
                perturbed=self.perturbed_outputs(nets),
            )
            self.timings["evaluate"] = time.perf_counter() - eval_started
            for report in reports:
                for note in report.notes:
                    text = note if note.startswith(report.name) else f"{report.name}: {note}"
                    self.reporter.message(text, label="note")
                if report.clamped:
                    self.reporter.message(
                        f"{report.name}: background logit clamped before the log on "
                        + ", ".join(f"{count} {name}" for name, count in report.clamped.items()),
                        label="note",
                    )
            for row in rows:
                row.update(benchmark=self.benchmark.name, network=self.network_name, seed=self.settings.seed)
                searched = self.search_results.get(str(row["detector"]), {}).get("chosen", {})
                row["hyperparameters"] = ", ".join(f"{k}={v}" for k, v in searched.items())
            self._write_results(rows, [asdict(r) for r in reports])
            return self._finish(started, rows)

    def _write_results(self, rows: list[dict[str, object]], reports: list[dict[str, Any]]) -> None:
        """Add this evaluation's rows to the run's results, replacing earlier rows of the same detectors.

        Earlier rows are kept only when they were computed from the data the sets hold now: a
        detector evaluated before a list or an image changed is dropped, and the message says
        which, so that a results file never mixes rows of two versions of a data set.
        """
        earlier_rows, earlier_reports, earlier_inputs = earlier_results(self.run_dir)
        if results_status(self.run_dir, "results.json")[0] == "damaged":  # edited: not the run's rows
            self.reporter.message(
                "results: results.json was changed after harness wrote it; its earlier rows are not kept "
                f"({', '.join(sorted({str(r['detector']) for r in earlier_rows})) or 'none'}): evaluate "
                "them again with --post",
                label="warning:",
            )
            earlier_rows, earlier_reports, earlier_inputs = [], [], {}
        data = self.data_key()
        latest = {str(row["detector"]) for row in rows}
        earlier = {str(row["detector"]) for row in earlier_rows} - latest
        outdated = sorted(name for name in earlier if earlier_inputs.get(name) != data)
        if outdated:
            self.reporter.message(
                f"results: dropped {len(outdated)} detector(s) evaluated earlier on other data (a list or "
                f"an image changed since, or they predate this record): {', '.join(outdated)}; evaluate "
                "them again with --post",
                label="warning:",
            )
            earlier_rows = [row for row in earlier_rows if str(row["detector"]) not in outdated]
            earlier_reports = [report for report in earlier_reports if report.get("name") not in outdated]
        kept = earlier - set(outdated)
        if kept:
            self.reporter.message(
                f"results: {len(kept)} detector(s) evaluated earlier in this run folder are kept "
                f"({', '.join(sorted(kept))})"
            )
        self.evaluated = sorted(latest | set(outdated))
        all_rows = merge_rows(earlier_rows, rows)
        inputs = {name: earlier_inputs[name] for name in kept} | {name: data for name in latest}
        write_csv(self.run_dir / "results.csv", all_rows)
        write_json(
            self.run_dir / "results.json",
            {
                "rows": all_rows,
                "detectors": merge_reports(earlier_reports, reports),
                "fpr_convention": self.settings.fpr_convention,
                "inputs": inputs,
            },
        )
        # checksums, like every artifact: a hand-edited results file is then refused by every reader
        results = [self.run_dir / name for name in RESULTS_FILES]
        self._mark(RESULTS_STAGE, content_hash(inputs), results)

    def _discard_results(self) -> None:
        """--overwrite of a run made with other settings: its results describe other networks."""
        for name in ("results.csv", "results.json"):
            (self.run_dir / name).unlink(missing_ok=True)
        for resume in self.run_dir.glob("*.resume.pt"):  # a half-trained stage of the other settings
            resume.unlink()
        self.reporter.message(f"--overwrite: discarded the results of the earlier run in {self.run_dir}")

    def _finish(self, started: float, rows: list[dict[str, object]]) -> list[dict[str, object]]:
        if not self.main:
            return rows
        self.timings["total"] = time.perf_counter() - started
        self._write_record(status="complete")
        return rows

    def _write_record(self, status: str) -> None:
        """``run.json``: what defines the run, how it ran, and where it got to."""
        earlier = {} if self.replacing else (read_record(self.run_dir) or {})
        search = merge_search(earlier.get("search") or {}, self.search_results, self.evaluated)
        write_json(
            self.run_dir / "run.json",
            {
                "status": status,
                "cwd": os.getcwd(),  # what the relative paths in "settings" are relative to
                "identity": self.identity(),
                "settings": asdict(self.settings),
                "benchmark": {
                    "name": self.benchmark.name,
                    "source": self.benchmark.source,
                    "num_classes": self.benchmark.num_classes,
                    "image_size": self.benchmark.image_size,
                    "mean": self.benchmark.mean,
                    "std": self.benchmark.std,
                    "classes": subset.record() if (subset := self.benchmark.class_subset) else None,
                },
                "recipe": self.recipe.as_dict(),
                "network": self.network_name,
                "normalization": {"mean": list(self.mean), "std": list(self.std)},
                "eval_size": self.eval_size,
                # how this invocation read the sets (not part of the identity: both paths give the
                # same outputs); streamed_sets names those it streamed, so a rerun that found every
                # stage done, and read no images, records none
                "data_path": {
                    "in_memory_mb": in_memory_limit_mb(self.settings.in_memory_mb),
                    "workers": data_workers(self.settings.data_workers),
                    "streamed_sets": sorted(self._streamed),
                },
                "device": str(self.device),
                "device_name": torch.cuda.get_device_name(self.device)
                if self.device.type == "cuda"
                else platform.processor() or platform.machine(),
                "torch_threads": torch.get_num_threads(),
                "distributed": {"world_size": self.world.size, "backend": self.world.backend},
                "versions": package_versions(),
                "git_commit": git_commit(Path(__file__).resolve().parent.parent),
                "timings_s": self.timings,
                "search": search,
                "stages": self._stages() if self.stages_path.is_file() else {},
            },
        )


def run_seeds(
    settings: BenchSettings, seeds: Sequence[int], reporter: Reporter | None = None
) -> tuple[list[dict[str, object]], list[Path]]:
    """Run the pipeline once per seed (each in its own run directory); all rows and the run dirs.

    Every seed's pipeline is built and checked before the first one starts, so a mistake that
    only shows for seed 3 (say, its folder holds another run) costs no training of seeds 0-2.
    """
    if not seeds:
        raise ValueError("--seeds: give at least one seed, e.g. --seeds 0 or --seeds 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds: each seed once, got {','.join(map(str, seeds))}")
    pipelines = []
    for seed in seeds:
        per_seed = BenchSettings(**{**asdict(settings), "seed": seed})
        if settings.out is not None and len(seeds) > 1:
            per_seed.out = Path(settings.out) / f"seed{seed}"
        pipeline = Pipeline(per_seed, reporter)
        pipeline.preflight()
        pipelines.append(pipeline)
    rows: list[dict[str, object]] = []
    for pipeline in pipelines:
        rows.extend(pipeline.run())
    return rows, [pipeline.run_dir for pipeline in pipelines]
