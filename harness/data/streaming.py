"""Evaluation images read from files in batches, for sets too large to decode into memory.

The pipeline keeps a set in memory as uint8 ``(N, S, S, 3)`` at the test size S (see
:func:`harness.data.datasets.load_arrays`): fine for CIFAR, impossible for ImageNet-1k (about
193 GB at 224 px for the train set). A file-backed set whose decoded size is above a threshold
(``in_memory_mb``, default :data:`DEFAULT_IN_MEMORY_MB`, or ``$HARNESS_IN_MEMORY_MB``) is read
instead by a torch ``DataLoader`` over its files, in dataset order, with worker processes that
decode each image once per pass. The pixels are those the in-memory path stores (the same
``decode_rgb`` + ``fit_pil``), so a network's outputs do not depend on which path was taken; the
threshold is recorded with the run's settings but is not part of its identity.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from harness.data.datasets import ImageFileDataset
from harness.data.images import decode_rgb, fit_pil

#: Sets whose decoded test-size pixels take more than this many MiB are streamed from their files.
DEFAULT_IN_MEMORY_MB = 4096.0
IN_MEMORY_ENV = "HARNESS_IN_MEMORY_MB"
WORKERS_ENV = "HARNESS_DATA_WORKERS"


def in_memory_limit_mb(setting: float | None = None) -> float:
    """The threshold in MiB: the setting, else ``$HARNESS_IN_MEMORY_MB``, else the default."""
    if setting is not None:
        value: float = setting
        source = "in_memory_mb"
    else:
        text = os.environ.get(IN_MEMORY_ENV)
        if text is None or not text.strip():
            return DEFAULT_IN_MEMORY_MB
        source = f"${IN_MEMORY_ENV}"
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"{source}={text!r}: give a size in MiB, e.g. 4096 (0 streams every file set)"
            ) from None
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{source}={value}: give a size in MiB >= 0 (0 streams every file-backed set)")
    return value


def data_workers(setting: int | None = None) -> int:
    """Decoding worker processes: the setting, else ``$HARNESS_DATA_WORKERS``, else min(4, CPUs)."""
    if setting is None:
        text = os.environ.get(WORKERS_ENV)
        if text is None or not text.strip():
            return min(4, os.cpu_count() or 1)
        try:
            setting = int(text)
        except ValueError:
            raise ValueError(
                f"${WORKERS_ENV}={text!r}: give a whole number of worker processes (0: none)"
            ) from None
    if setting < 0:
        raise ValueError(f"data workers {setting}: give 0 (decode in this process) or more")
    return setting


def decoded_mb(count: int, crop: int) -> float:
    """MiB that ``count`` images take decoded as uint8 ``(crop, crop, 3)``."""
    return count * crop * crop * 3 / 2**20


def stream_set(count: int, crop: int, limit_mb: float) -> bool:
    """Whether a file-backed set of ``count`` images at test size ``crop`` is streamed, not held."""
    return decoded_mb(count, crop) > limit_mb


class _Batches(Dataset):
    """Item ``b`` is batch ``b`` of rows ``start..stop-1``, decoded as one uint8 ``(B, 3, S, S)`` tensor.

    A worker decodes a whole batch into one array (no per-image tensors, no collate), with the
    calls :func:`harness.data.datasets.load_arrays` makes, so the pixels are the in-memory path's.
    The rows' paths are held as one numpy byte array: a forked worker reading a list of Python
    strings would touch each one's reference count and so copy every page of the list, a copy per
    worker that grows with the set.
    """

    def __init__(self, dataset: ImageFileDataset, start: int, stop: int, batch_size: int) -> None:
        table = dataset.table
        self.paths = np.array([os.fsencode(path) for path in table.paths[start:stop]])
        self.lines = None if table.lines is None else np.asarray(table.lines[start:stop])
        self.list_path = table.list_path
        self.resize = dataset.resize
        self.crop = dataset.crop
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __getitem__(self, batch: int) -> torch.Tensor:
        rows = range(batch * self.batch_size, min((batch + 1) * self.batch_size, len(self.paths)))
        out = np.empty((len(rows), self.crop, self.crop, 3), dtype=np.uint8)
        for slot, row in enumerate(rows):
            path = os.fsdecode(self.paths[row])
            origin = path if self.lines is None else f"{self.list_path}:{int(self.lines[row])}"
            out[slot] = fit_pil(decode_rgb(path, origin), self.resize, self.crop)
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


class StreamedImages:
    """The uint8 ``(N, 3, S, S)`` images of a file-backed set, or of a contiguous part of it, as batches.

    Stands in for the in-memory uint8 tensor wherever evaluation reads images in order
    (:func:`harness.augment.evaluation_batches`): it has a ``shape``, a ``len``, slicing by a
    contiguous range (a DDP rank's shard) and :meth:`batches`. Memory is a few batches per worker,
    whatever N is.
    """

    def __init__(
        self,
        dataset: ImageFileDataset,
        *,
        workers: int = 0,
        pin_memory: bool = False,
        start: int = 0,
        stop: int | None = None,
    ) -> None:
        if dataset.transform is not None:
            raise ValueError("StreamedImages reads test-size pixels: give it a dataset without a transform")
        self.dataset = dataset
        self.workers = workers
        self.pin_memory = pin_memory
        self.start = start
        self.stop = len(dataset) if stop is None else stop
        if not 0 <= self.start <= self.stop <= len(dataset):
            raise ValueError(f"rows {self.start}:{self.stop} lie outside the set's {len(dataset)} images")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, 3, S, S)``, as the in-memory tensor's shape."""
        return (self.stop - self.start, 3, self.dataset.crop, self.dataset.crop)

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, rows: slice) -> StreamedImages:
        """A contiguous part (``images[start:stop]``), as the DDP shards take."""
        if not isinstance(rows, slice) or rows.step not in (None, 1):
            raise TypeError("StreamedImages takes contiguous slices only (images[start:stop])")
        start, stop, _ = rows.indices(len(self))
        stop = max(start, stop)
        return StreamedImages(
            self.dataset,
            workers=self.workers,
            pin_memory=self.pin_memory,
            start=self.start + start,
            stop=self.start + stop,
        )

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """uint8 ``(B, 3, S, S)`` batches in dataset order; each image decoded once per call."""
        if not len(self):
            return
        batches = _Batches(self.dataset, self.start, self.stop, batch_size)
        workers = min(self.workers, len(batches))  # no idle workers for small sets
        loader = DataLoader(
            batches,
            batch_size=None,  # items are batches already
            shuffle=False,
            num_workers=workers,
            pin_memory=self.pin_memory,
            prefetch_factor=2 if workers else None,
        )
        yield from loader
