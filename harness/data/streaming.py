"""Images read from files in batches, for sets too large to decode into memory.

The pipeline keeps a set in memory as uint8 ``(N, S, S, 3)`` at the test size S (see
:func:`harness.data.datasets.load_arrays`): fine for CIFAR, impossible for ImageNet-1k (about
193 GB at 224 px for the train set). A file-backed set whose decoded size is above a threshold
(``in_memory_mb``, default :data:`DEFAULT_IN_MEMORY_MB`, or ``$HARNESS_IN_MEMORY_MB``) is read
instead by a torch ``DataLoader`` over its files, with worker processes that decode each image
once per pass: in dataset order for evaluation passes, CAM masks and cached features, in each
training step's seeded order for training (once per epoch). The pixels are those the in-memory
path stores (the same ``decode_rgb`` + ``fit_pil``), so a network's outputs and its training do not
depend on which path was taken; the threshold is recorded with the run's settings but is not part
of its identity.

The workers' batches are received by a helper thread, not by the thread that runs the network
(:func:`_received_in_thread`), unless the loader's own pin-memory thread already receives them.
Received in the main thread, they made that thread's malloc heap grow over a pass, by a different
amount each time (``rv2_tiny`` at 16 px, two workers, a busy 2-core machine: 2-26 MB over 40k
images, 178 MB over 160k; without workers 0-4 MB): bytes in use stayed flat while freed chunks
piled up, fragmentation most likely caused by the small objects made on receipt (the shared-memory
storage's handle, the message) sitting between the forward pass's large buffers and outliving
them. Received by their own thread, whose objects go to that thread's malloc arena, the growth is
gone (0.5-5 MB over 40k, 8 MB over 160k). Having the workers return numpy arrays fixed it too, but
numpy arrays travel pickled through a pipe instead of in shared memory: about a third of the
transfer rate (batches of 256 images of 224 px, the same machine).
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from dfb_ood.errors import InputError
from dfb_ood.harness.data.datasets import ImageFileDataset
from dfb_ood.harness.data.images import decode_rgb, fit_pil

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
            raise InputError(
                f"{source}={text!r}: give a size in MiB, e.g. 4096 (0 streams every file set)"
            ) from None
    if not value >= 0:  # also refuses NaN
        raise InputError(f"{source}={value}: give a size in MiB >= 0 (0 streams every file-backed set)")
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
            raise InputError(
                f"${WORKERS_ENV}={text!r}: give a whole number of worker processes (0: none)"
            ) from None
    if setting < 0:
        raise InputError(f"data workers {setting}: give 0 (decode in this process) or more")
    return setting


def decoded_mb(count: int, crop: int) -> float:
    """MiB that ``count`` images take decoded as uint8 ``(crop, crop, 3)``."""
    return count * crop * crop * 3 / 2**20


def stream_set(count: int, crop: int, limit_mb: float) -> bool:
    """Whether a file-backed set of ``count`` images at test size ``crop`` is streamed, not held."""
    return decoded_mb(count, crop) > limit_mb


class _RowDecoder:
    """Decodes chosen rows of a file table into one uint8 ``(B, 3, S, S)`` tensor.

    It makes the calls :func:`harness.data.datasets.load_arrays` makes (``decode_rgb`` +
    ``fit_pil``) into one preallocated array (no per-image tensors, no collate), so the pixels are
    the in-memory path's. The rows' paths are held as one numpy byte array: a forked worker reading
    a list of Python strings would touch each one's reference count and so copy every page of the
    list, a copy per worker that grows with the set.
    """

    def __init__(self, dataset: ImageFileDataset, start: int = 0, stop: int | None = None) -> None:
        table = dataset.table
        stop = len(table) if stop is None else stop
        paths = table.paths[start:stop]
        # one fixed-width byte array filled in one go: no list of bytes objects on the way
        width = max((len(os.fsencode(path)) for path in paths), default=1)
        self.paths = np.fromiter((os.fsencode(path) for path in paths), dtype=f"S{width}", count=len(paths))
        self.lines = None if table.lines is None else np.asarray(table.lines[start:stop])
        self.list_path = table.list_path
        self.resize = dataset.resize
        self.crop = dataset.crop

    def __len__(self) -> int:
        return len(self.paths)

    def decode(self, rows: Sequence[int] | np.ndarray, mirrored: bool = False) -> torch.Tensor:
        """uint8 ``(len(rows), 3, S, S)``: the images of ``rows`` (relative to this decoder's first row)."""
        out = np.empty((len(rows), self.crop, self.crop, 3), dtype=np.uint8)
        for slot, row in enumerate(rows):
            path = os.fsdecode(self.paths[row])
            origin = path if self.lines is None else f"{self.list_path}:{int(self.lines[row])}"
            out[slot] = fit_pil(decode_rgb(path, origin), self.resize, self.crop)
        if mirrored:
            out = np.ascontiguousarray(out[:, :, ::-1])
        return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


class _Batches(Dataset):
    """Item ``b`` is batch ``b`` of the decoder's rows in order (an evaluation pass)."""

    def __init__(self, decoder: _RowDecoder, batch_size: int, mirrored: bool) -> None:
        self.decoder = decoder
        self.batch_size = batch_size
        self.mirrored = mirrored

    def __len__(self) -> int:
        return -(-len(self.decoder) // self.batch_size)

    def __getitem__(self, batch: int) -> torch.Tensor:
        stop = min((batch + 1) * self.batch_size, len(self.decoder))
        return self.decoder.decode(range(batch * self.batch_size, stop), self.mirrored)


class _StepBatches(Dataset):
    """Item ``i`` is the training batch of step ``steps[i]``: the rows ``rows_of_step`` names, decoded.

    ``rows_of_step`` is a pure function of the step (the epoch's seeded order), so the workers
    decode exactly the rows the training loop will use at that step, and a resumed loop that
    starts at a later step asks for the same rows again.
    """

    def __init__(
        self, decoder: _RowDecoder, rows_of_step: Callable[[int], torch.Tensor], steps: range
    ) -> None:
        self.decoder = decoder
        self.rows_of_step = rows_of_step
        self.steps = steps

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, item: int) -> torch.Tensor:
        return self.decoder.decode(self.rows_of_step(self.steps[item]).numpy())


def _received_in_thread(loader: DataLoader) -> Iterator[torch.Tensor]:
    """The loader's batches, received from its worker processes by a helper thread and handed over.

    The workers are started here, in the calling thread (signal handlers can only be set from the
    main thread); the helper thread then only takes the batches off the workers' queue, so that
    the objects made on receipt are allocated in its own malloc arena (see the module's docstring).
    An error of the loader is raised here; when the caller stops early (``close``, an error in the
    caller's loop) the thread stops after the batch it is receiving and the workers are shut down.
    """
    batches = [iter(loader)]  # a list, so that the iterator can be dropped after the thread ends
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)  # ("batch" | "error" | "done", value)
    stop = threading.Event()

    def put(item: tuple[str, Any]) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def receive() -> None:
        try:
            for batch in batches[0]:
                if not put(("batch", batch)):
                    return
        except BaseException as error:  # raised in the caller's thread
            put(("error", error))
            return
        put(("done", None))

    thread = threading.Thread(target=receive, name="StreamedImages-receive", daemon=True)
    thread.start()
    try:
        while True:
            kind, value = handoff.get()
            if kind == "error":
                raise value
            if kind == "done":
                return
            yield value
    finally:
        stop.set()
        thread.join()
        batches.clear()  # the last reference: the loader shuts its workers down


class StreamedImages:
    """The uint8 ``(N, 3, S, S)`` images of a file-backed set, or of a contiguous part of it, as batches.

    Stands in for the in-memory uint8 tensor wherever images are read: evaluation passes in order
    (:meth:`batches`, through :func:`harness.augment.evaluation_batches`), training steps in their
    seeded random order (:meth:`step_batches`), a few chosen rows (``images[rows]``, previews),
    a contiguous part (``images[start:stop]``, a DDP rank's shard) and the mirror image
    (``images.flip(-1)``). Memory is a few batches per worker, whatever N is, plus the file table
    (paths and labels: 27 MB for 160k images with 37-character paths). Worker batches are received
    off the main thread so that its heap does not grow over a pass (see the module's docstring).
    """

    def __init__(
        self,
        dataset: ImageFileDataset,
        *,
        workers: int = 0,
        pin_memory: bool = False,
        start: int = 0,
        stop: int | None = None,
        mirrored: bool = False,
    ) -> None:
        if dataset.transform is not None:
            raise InputError("StreamedImages reads test-size pixels: give it a dataset without a transform")
        self.dataset = dataset
        self.workers = workers
        self.pin_memory = pin_memory
        self.start = start
        self.stop = len(dataset) if stop is None else stop
        self.mirrored = mirrored
        if not 0 <= self.start <= self.stop <= len(dataset):
            raise InputError(f"rows {self.start}:{self.stop} lie outside the set's {len(dataset)} images")

    @property
    def shape(self) -> tuple[int, int, int, int]:
        """``(N, 3, S, S)``, as the in-memory tensor's shape."""
        return (self.stop - self.start, 3, self.dataset.crop, self.dataset.crop)

    def __len__(self) -> int:
        return self.stop - self.start

    def _part(self, start: int, stop: int, mirrored: bool) -> StreamedImages:
        return StreamedImages(
            self.dataset,
            workers=self.workers,
            pin_memory=self.pin_memory,
            start=start,
            stop=stop,
            mirrored=mirrored,
        )

    @overload
    def __getitem__(self, rows: slice) -> StreamedImages: ...
    @overload
    def __getitem__(self, rows: torch.Tensor | np.ndarray | Sequence[int]) -> torch.Tensor: ...
    def __getitem__(
        self, rows: slice | torch.Tensor | np.ndarray | Sequence[int]
    ) -> StreamedImages | torch.Tensor:
        """A contiguous part (``images[start:stop]``, still streamed), or chosen rows decoded now.

        Rows (a sequence or 1-D integer array, negatives counted from the end) give the uint8
        ``(len(rows), 3, S, S)`` tensor the in-memory path's ``images[rows]`` gives, decoded in
        this process: meant for a few images (previews), not for passes.
        """
        if isinstance(rows, slice):
            if rows.step not in (None, 1):
                raise TypeError("StreamedImages takes contiguous slices only (images[start:stop])")
            start, stop, _ = rows.indices(len(self))
            return self._part(self.start + start, self.start + max(start, stop), self.mirrored)
        index = np.asarray(rows.cpu() if isinstance(rows, torch.Tensor) else rows)
        if index.ndim != 1 or not (index.size == 0 or np.issubdtype(index.dtype, np.integer)):
            raise TypeError(
                f"StreamedImages takes a slice or a 1-D array of row numbers, not {index.dtype} {index.shape}"
            )
        if index.size and not (-len(self) <= index.min() and index.max() < len(self)):
            raise IndexError(f"row numbers {index.min()}..{index.max()} lie outside the {len(self)} images")
        absolute = np.where(index < 0, index + len(self), index) + self.start
        return _RowDecoder(self.dataset).decode(absolute, self.mirrored)

    def flip(self, dim: int) -> StreamedImages:
        """The mirror images (left-right), as ``tensor.flip(-1)`` gives for the in-memory path."""
        if dim not in (-1, 3):
            raise InputError(f"StreamedImages flips left-right only (dim -1), not dim {dim}")
        return self._part(self.start, self.stop, not self.mirrored)

    def _loader(self, items: Dataset, count: int) -> Iterator[torch.Tensor]:
        """The items in order: decoded by worker processes (if any), received off the main thread."""
        workers = min(self.workers, count)  # no idle workers for small sets
        loader = DataLoader(
            items,
            batch_size=None,  # items are batches already
            shuffle=False,
            num_workers=workers,
            pin_memory=self.pin_memory,
            prefetch_factor=2 if workers else None,
        )
        if workers and not self.pin_memory:  # pinned: the loader's pin-memory thread receives them
            yield from _received_in_thread(loader)
        else:
            yield from loader

    def batches(self, batch_size: int) -> Iterator[torch.Tensor]:
        """uint8 ``(B, 3, S, S)`` batches in dataset order; each image decoded once per call."""
        if not len(self):
            return
        batches = _Batches(_RowDecoder(self.dataset, self.start, self.stop), batch_size, self.mirrored)
        yield from self._loader(batches, len(batches))

    def step_batches(
        self, rows_of_step: Callable[[int], torch.Tensor], steps: range
    ) -> Iterator[torch.Tensor]:
        """The uint8 images of each training step's rows, for ``steps`` in order, decoded ahead by workers.

        ``rows_of_step(step)`` gives row numbers of this set (a pure function of the step, picklable
        for the workers); batch ``i`` equals ``images[rows_of_step(steps[i])]`` of the in-memory path.
        The workers decode a few steps ahead of the loop (two per worker).
        """
        if self.start or self.stop != len(self.dataset) or self.mirrored:
            raise InputError("training reads the whole set as stored: give step_batches the unsliced set")
        if not len(steps):
            return
        yield from self._loader(_StepBatches(_RowDecoder(self.dataset), rows_of_step, steps), len(steps))
