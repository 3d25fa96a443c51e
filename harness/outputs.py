"""Stage 4: one forward pass per (network, dataset), cached on disk as arrays.

Detectors score cached outputs, so a leaderboard of many detectors costs one pass per image.
The only exception is a detector that needs its own pass through the network (ODIN with noise > 0
perturbs the input, RankFeat edits the feature map): that pass is run here too, batched, and cached
under a key that includes its settings.

A pass writes its rows chunk by chunk into arrays the caller gives (``into``): the pipeline gives
temporary ``.npy`` memory maps (:func:`scratch_arrays`), so a set's outputs never need to fit in
memory. The cache is one folder of ``.npy`` files per set (:mod:`harness.array_folder`), written
from those maps, and :func:`load_outputs` has numpy map them back read-only instead of reading them.
A pass may start at a later row (``resume``) and reports each filled batch (``rows_done``): the
stage gives a partial pass's maps there (:mod:`harness.partial_pass`), so a killed run resumes.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch

from dfb_ood.errors import InputError
from dfb_ood.harness.array_folder import map_arrays, save_arrays
from dfb_ood.harness.augment import BatchSource, evaluation_batches
from dfb_ood.harness.partial_pass import progress_label
from dfb_ood.harness.progress import Reporter
from dfb_ood.networks import OODNet
from dfb_ood.postprocessors.base import Outputs, Postprocessor


def head_arrays(net: OODNet) -> tuple[np.ndarray, np.ndarray]:
    """The head's (W, b) as float32 arrays, the same for every dataset of one network."""
    return (
        net.head_weight.detach().float().cpu().numpy(),
        net.head_bias.detach().float().cpu().numpy(),
    )


def forward_outputs(
    net: OODNet,
    images: torch.Tensor | BatchSource,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    size: int,
    device: torch.device,
    batch_size: int = 256,
    reporter: Reporter | None = None,
    description: str = "forward",
    into: tuple[np.ndarray, np.ndarray] | None = None,
    resume: int = 0,
    rows_done: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(logits (N, C), pooled features (N, D)) as float32 for uint8 images (N, 3, H, W).

    ``images`` is an in-memory tensor or a streamed set (:class:`harness.data.streaming.StreamedImages`);
    ``into`` are the (logits, features) arrays to fill (e.g. memory maps), else new ones are made.
    ``resume`` (a multiple of ``batch_size``) is the row to start at: ``into`` already holds the
    rows before it (a resumed pass, :mod:`harness.partial_pass`); ``rows_done(rows)`` is told after
    every batch that rows ``[0, rows)`` are filled.
    """
    reporter = reporter or Reporter(quiet=True)
    net.to(device).eval()
    n = images.shape[0]
    if into is None:
        logits = np.empty((n, net.num_outputs), dtype=np.float32)
        features = np.empty((n, net.feature_dim), dtype=np.float32)
    else:
        logits, features = into
        _check_into(logits, (n, net.num_outputs))
        _check_into(features, (n, net.feature_dim))
    cuda = device.type == "cuda"
    _check_resume(resume, n, batch_size)
    task = reporter.task(progress_label(description, resume), total=n, completed=resume)
    with task as bar, torch.inference_mode():
        batches = evaluation_batches(
            images[resume:] if resume else images,
            mean=mean,
            std=std,
            size=size,
            device=device,
            batch_size=batch_size,
        )
        for offset, batch in batches:
            start = resume + offset
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
                fmap = net.forward_features(batch)
            pooled = net.forward_head(fmap.float(), pre_logits=True)
            stop = start + batch.shape[0]
            features[start:stop] = pooled.cpu().numpy()
            logits[start:stop] = (
                torch.nn.functional.linear(pooled, net.head_weight, net.head_bias).cpu().numpy()
            )
            if rows_done is not None:
                rows_done(stop)
            bar.advance(batch.shape[0])
    return logits, features


def perturbed_logits(
    detector: Postprocessor,
    net: OODNet,
    images: torch.Tensor | BatchSource,
    *,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    size: int,
    device: torch.device,
    batch_size: int = 128,
    reporter: Reporter | None = None,
    description: str = "perturbed pass",
    into: np.ndarray | None = None,
    resume: int = 0,
    rows_done: Callable[[int], None] | None = None,
) -> np.ndarray:
    """Logits of a detector's own pass (ODIN's perturbed inputs, RankFeat's rank-1 removal), (N, C) float32.

    For a DFB network the detector is told ``num_classes=K``: ODIN perturbs along the K class logits
    only and keeps the clean background logit; RankFeat's columns all come from its edited features.
    ``resume`` and ``rows_done`` resume a partial pass, as in :func:`forward_outputs`.
    """
    reporter = reporter or Reporter(quiet=True)
    net.to(device).eval()
    k = net.num_classes if net.background else None
    shape = (images.shape[0], net.num_outputs)
    out = np.empty(shape, dtype=np.float32) if into is None else _check_into(into, shape)
    _check_resume(resume, shape[0], batch_size)
    with reporter.task(progress_label(description, resume), total=shape[0], completed=resume) as bar:
        batches = evaluation_batches(
            images[resume:] if resume else images,
            mean=mean,
            std=std,
            size=size,
            device=device,
            batch_size=batch_size,
        )
        for offset, batch in batches:
            start = resume + offset
            logits = detector.infer(net, batch, num_classes=k)
            out[start : start + batch.shape[0]] = logits.detach().float().cpu().numpy()
            if rows_done is not None:
                rows_done(start + batch.shape[0])
            bar.advance(batch.shape[0])
    return out


def save_outputs(path: Path, logits: np.ndarray, features: np.ndarray | None, labels: np.ndarray) -> None:
    """Cache one (network, dataset) pass atomically as the folder ``path`` of ``.npy`` files."""
    arrays = {"logits": logits, "labels": labels}
    if features is not None:
        arrays["features"] = features
    save_arrays(path, arrays)


def load_outputs(path: Path, head: tuple[np.ndarray, np.ndarray], background: bool) -> Outputs:
    """Read a cached pass back as :class:`Outputs` (a perturbed pass caches no features).

    ``path`` is the set's folder; its arrays are numpy's read-only memory maps of its ``.npy`` files
    (:func:`harness.array_folder.map_arrays`), so a set whose outputs exceed memory can still be
    scored; pages are read as a detector touches them.
    """
    data = map_arrays(path)
    logits, labels = data["logits"], data["labels"]
    features = data.get("features")
    return Outputs(
        logits=logits, features=features, labels=labels, weight=head[0], bias=head[1], background=background
    )


def _check_resume(resume: int, n: int, batch_size: int) -> None:
    """A resumed pass starts on a batch boundary, so its batches are the uninterrupted pass's."""
    if resume < 0 or resume > n or (resume % batch_size and resume != n):
        raise InputError(f"cannot resume a pass of {n} rows in batches of {batch_size} at row {resume}")


def _check_into(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if array.shape != shape or array.dtype != np.float32:
        raise InputError(f"output array is {array.dtype} {array.shape}; the pass fills float32 {shape}")
    return array


@contextlib.contextmanager
def scratch_arrays(
    folder: Path | None, shapes: dict[str, tuple[int, ...]], dtype: type[np.generic] = np.float32
) -> Iterator[dict[str, np.ndarray]]:
    """Arrays (float32 unless ``dtype`` says) backed by temporary ``.npy`` files in ``folder``.

    The files are removed on exit.

    A forward pass fills them chunk by chunk, so its memory does not grow with the set; the
    files live beside the cache they are written into (same disk), named ``.*.tmp.scratch.npy``
    (a killed run's are removed as temporaries). Each is mapped through the descriptor that
    created it (``O_EXCL``), never by reopening its name, so a link planted in a shared run folder
    cannot redirect the writes.

    ``folder=None`` is for a process that may not write a run folder (a rank other than 0 under
    DDP, or a re-opened, read-only run): the files are unnamed temporaries in the system's
    temporary directory (``TMPDIR``), unlinked from the start, so nothing is left behind even by a
    killed process. Their maps stay valid after exit, for as long as an array refers to them.
    """
    made: list[Path] = []
    arrays: dict[str, np.ndarray] = {}
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    try:
        for name, shape in shapes.items():
            if folder is None:
                handle = tempfile.TemporaryFile(prefix=f".{name}.", suffix=".tmp.scratch.npy")
            else:
                fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp.scratch.npy", dir=folder)
                made.append(Path(tmp))
                handle = os.fdopen(fd, "w+b")
            with handle:
                arrays[name] = _npy_memmap(handle, shape, np.dtype(dtype))
        yield arrays
    finally:
        arrays.clear()  # drop the maps before their files go
        for tmp in made:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _npy_memmap(handle: BinaryIO, shape: tuple[int, ...], dtype: np.dtype | None = None) -> np.ndarray:
    """A writable ``.npy`` of ``shape`` and ``dtype`` in the open, empty file ``handle``, memory-mapped.

    What ``np.lib.format.open_memmap`` makes, but through a file object: the map outlives the
    handle, which the caller may close.
    """
    dtype = np.dtype(np.float32) if dtype is None else dtype
    header = {
        "descr": np.lib.format.dtype_to_descr(dtype),
        "fortran_order": False,
        "shape": shape,
    }
    np.lib.format.write_array_header_1_0(handle, header)
    offset = handle.tell()
    handle.truncate(offset + int(np.prod(shape)) * dtype.itemsize)
    handle.flush()
    return np.memmap(handle, dtype=dtype, mode="r+", offset=offset, shape=shape)


def count_nonfinite(array: np.ndarray, rows: int = 65536) -> int:
    """How many values of ``array`` are NaN or infinite, read ``rows`` rows at a time (bounded memory)."""
    bad = 0
    for start in range(0, array.shape[0], rows):
        chunk = np.asarray(array[start : start + rows])
        bad += int(chunk.size - np.count_nonzero(np.isfinite(chunk)))
    return bad
