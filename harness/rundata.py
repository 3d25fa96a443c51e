"""The data below a run's stages: its sets' images and labels, read once, and their fingerprints.

Every stage reads the benchmark's sets through one :class:`RunData`, so a set is decoded (or its
list read) once per run whatever the number of stages that read it, a set too large for memory
is streamed by all of them alike, and the fingerprints that stage keys hold are computed once.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from dfb_ood.harness import distributed
from dfb_ood.harness.data.benchmark import Benchmark, SetSpec
from dfb_ood.harness.data.datasets import ImageFileDataset, load_arrays
from dfb_ood.harness.data.fingerprint import listed_entries, set_fingerprint
from dfb_ood.harness.data.imglist import FileTable
from dfb_ood.harness.data.problems import DataWarning
from dfb_ood.harness.data.streaming import StreamedImages, data_workers, in_memory_limit_mb, stream_set
from dfb_ood.harness.data.tables import file_table
from dfb_ood.harness.io import content_hash
from dfb_ood.harness.outputs import scratch_arrays
from dfb_ood.harness.plan import RunPlan
from dfb_ood.harness.progress import Reporter

#: How a set's role reads in a message ("far-OOD set 'noise' changed").
ROLE_LABELS = {"id": "ID", "ood_val": "OOD-val", "near": "near-OOD", "far": "far-OOD"}


def set_specs(benchmark: Benchmark) -> dict[str, tuple[str, SetSpec]]:
    """Every set of the benchmark by name, with its role."""
    b = benchmark
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


class RunData:
    """A run's sets: fingerprints, entries, decoded or streamed images, and pass scratch space.

    ``read_only`` (a re-opened run) and ``reporter`` are the run's: every part of the pipeline
    reads them here, so a change (quiet ranks under torchrun) reaches them all.
    """

    def __init__(self, plan: RunPlan, reporter: Reporter) -> None:
        self.plan = plan
        self.reporter = reporter
        self.read_only = False
        self.specs = set_specs(plan.benchmark)
        self._arrays: dict[str, tuple[torch.Tensor, np.ndarray]] = {}
        self.streamed: dict[str, tuple[StreamedImages, np.ndarray]] = {}
        self._fingerprints: dict[str, str] = {}
        self._entries: dict[str, FileTable] = {}  # list / folder sets' entries, read once

    @property
    def main(self) -> bool:
        """Rank 0 (or a single process): the one that writes the run folder."""
        return distributed.is_main()

    def fingerprint(self, set_name: str) -> str:
        """What a set holds now (entries, each image's size and mtime): see harness.data.fingerprint."""
        if set_name not in self._fingerprints:
            _, spec = self.specs[set_name]
            entries = self.listed(set_name) if spec.type in ("imglist", "folder") else None
            self._fingerprints[set_name] = set_fingerprint(
                spec, self.plan.benchmark, skip_bad=self.plan.settings.skip_bad, entries=entries
            )
        return self._fingerprints[set_name]

    def listed(self, set_name: str) -> FileTable:
        """A list or folder set's entries (warnings left to the load), read once per pipeline."""
        if set_name not in self._entries:
            _, spec = self.specs[set_name]
            self._entries[set_name] = listed_entries(
                spec, self.plan.benchmark, skip_bad=self.plan.settings.skip_bad
            )
        return self._entries[set_name]

    def key(self) -> str:
        """Every set's fingerprint in one hash: the data a run's results were computed from."""
        return content_hash({name: self.fingerprint(name) for name in self.specs})

    @contextlib.contextmanager
    def warnings_said(self) -> Iterator[None]:
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
            _, spec = self.specs[set_name]
            with self.warnings_said():
                images, labels = load_arrays(spec, self.plan.benchmark, skip_bad=self.plan.settings.skip_bad)
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
        if set_name in self.streamed:
            return self.streamed[set_name]
        _, spec = self.specs[set_name]
        settings, benchmark = self.plan.settings, self.plan.benchmark
        if spec.type in ("imglist", "folder"):
            skip_bad = settings.skip_bad
            crop = benchmark.test_crop
            if stream_set(len(self.listed(set_name)), crop, in_memory_limit_mb(settings.in_memory_mb)):
                with self.warnings_said():  # --skip-bad also checks headers: drops are known up front
                    table = file_table(spec, benchmark, skip_bad=skip_bad, headers=skip_bad)
                dataset = ImageFileDataset(
                    table, benchmark.test_resize, crop, name=f"{benchmark.name}/{spec.name}"
                )
                images = StreamedImages(
                    dataset,
                    workers=data_workers(settings.data_workers),
                    pin_memory=self.plan.device.type == "cuda",
                )
                self.streamed[set_name] = (images, np.asarray(table.labels, dtype=np.int64))
                return self.streamed[set_name]
        return self.arrays(set_name)

    def train_images(self) -> tuple[torch.Tensor | StreamedImages, np.ndarray]:
        """The ID train set's test-size uint8 images and labels, held or streamed (:meth:`eval_images`).

        Every stage that reads training images (training, CAM masks, cached features, previews)
        takes them from here, so a train set above ``in_memory_mb`` is streamed through all of
        them: decoded once per epoch (training) or per pass, never held whole.
        """
        return self.eval_images("train")

    def pass_arrays(
        self, folder: Path, shapes: dict[str, tuple[int, ...]], dtype: type[np.generic] = np.float32
    ) -> contextlib.AbstractContextManager[dict[str, np.ndarray]]:
        """Where a pass writes its rows: temporary memory maps, so memory stays flat in N.

        Rank 0 of a run that writes its folder gets them beside the cache (``folder``); the other
        ranks under DDP and a re-opened, read-only run (nothing is written into its folder) get
        unnamed ones in the system's temporary directory (:func:`harness.outputs.scratch_arrays`).
        """
        return scratch_arrays(folder if self.main and not self.read_only else None, shapes, dtype=dtype)

    def scratch_rows(self, n: int) -> int:
        """Rows of this rank's scratch for a sharded pass over ``n`` rows.

        Rank 0 maps the whole set: its own shard is the first rows and the others' are gathered
        after it (:func:`harness.distributed.gather_rows_into`); another rank maps its shard alone.
        """
        start, stop = distributed.shard_range(n)
        return n if self.main else stop - start
