"""Datasets for the sets of a benchmark: image lists, image folders, torchvision sets, shapes.

Every dataset yields ``(image, label)``. With no transform the image is a uint8 tensor
``(3, H, W)`` at the benchmark's test size (resize + centre crop); with a transform, the transform
receives the image as a uint8 CHW tensor at its stored size and its output is returned. OOD sets
carry label -1 whatever their source says. Every dataset exposes ``labels`` (int64 numpy array),
so callers need not iterate to get them.

Problems surface when a set is built: a missing list or folder, a missing data root, list lines
without a label or with an ID label outside 0..K-1, missing image files (found by listing the
folders, not on first access). An undecodable image is reported with its list line when it is
read; ``skip_bad=True`` drops bad entries with a :class:`DataWarning` instead (and then also
checks image headers up front, so a dropped set is announced before evaluation starts).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from dfb_ood.errors import InputError, MissingInputError
from dfb_ood.harness.data.arrays import load_array_set
from dfb_ood.harness.data.cache import cache_key, cache_root, load_decoded, store_decoded
from dfb_ood.harness.data.images import (
    DECODE_ERRORS,
    ImageDecodeError,
    as_hwc_rgb,
    decode_rgb,
    fit_array,
    fit_pil,
    hwc_to_chw_tensor,
    resized_size,
    to_rgb,
)
from dfb_ood.harness.data.imglist import FileTable
from dfb_ood.harness.data.problems import Problem, raise_or_warn
from dfb_ood.harness.data.specs import Benchmark, SetSpec
from dfb_ood.harness.data.tables import check_root, file_table, map_threads, subset_indices

Transform = Callable[[torch.Tensor], Any]


class ImageFileDataset(Dataset):
    """Images read from files (an OpenOOD list or a folder), decoded on access."""

    def __init__(
        self,
        table: FileTable,
        resize: int | tuple[int, int],
        crop: int,
        transform: Transform | None = None,
        name: str = "",
    ) -> None:
        self.table = table
        self.resize = resize
        self.crop = crop
        self.transform = transform
        self.name = name

    @property
    def labels(self) -> np.ndarray:
        """int64 labels (-1 for OOD)."""
        return self.table.labels

    def __len__(self) -> int:
        return len(self.table)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = decode_rgb(self.table.paths[index], self.table.origin(index))
        label = int(self.table.labels[index])
        if self.transform is None:
            return hwc_to_chw_tensor(fit_pil(image, self.resize, self.crop)), label
        return self.transform(hwc_to_chw_tensor(np.asarray(image))), label


class ArrayDataset(Dataset):
    """An in-memory set: uint8 images ``(N, H, W, 3)`` (or ``(N, H, W)`` grayscale) and labels.

    Images are stored once as a uint8 CHW tensor, so an item costs an index, not a decode. With
    ``fit=(resize, crop)`` and no transform, items are fitted to that test size on access (for
    sets stored at another size); without ``fit`` they are returned as stored.
    """

    def __init__(
        self,
        images_uint8_nhwc: np.ndarray | torch.Tensor,
        labels: np.ndarray | torch.Tensor | list[int],
        transform: Transform | None = None,
        *,
        fit: tuple[int | tuple[int, int], int] | None = None,
        name: str = "",
    ) -> None:
        images = torch.as_tensor(images_uint8_nhwc)
        if images.dtype != torch.uint8:
            raise InputError(f"ArrayDataset needs uint8 images, got {images.dtype}")
        if images.ndim == 3:
            images = images.unsqueeze(-1)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise InputError(
                f"ArrayDataset needs images shaped (N, H, W, 3) or (N, H, W), got {tuple(images.shape)}"
            )
        if images.shape[-1] == 1:
            images = images.expand(-1, -1, -1, 3)
        self.images = images.permute(0, 3, 1, 2).contiguous()
        self._labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(self._labels) != len(self.images):
            raise InputError(f"{len(self.images)} images but {len(self._labels)} labels")
        self.transform = transform
        self.fit = fit
        self.name = name

    @property
    def labels(self) -> np.ndarray:
        """int64 labels (-1 for OOD)."""
        return self._labels

    def __len__(self) -> int:
        return len(self._labels)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image = self.images[index]
        label = int(self._labels[index])
        if self.transform is not None:
            return self.transform(image), label
        if self.fit is not None:
            resize, crop = self.fit
            height, width = image.shape[-2:]
            if (height, width) != (crop, crop) or resized_size(height, width, resize) != (height, width):
                return hwc_to_chw_tensor(fit_array(image.permute(1, 2, 0).numpy(), resize, crop)), label
        return image, label


class MaskedArrayDataset(Dataset):
    """In-memory images with per-pixel label masks, for the dense stage.

    Items are ``(image uint8 (3, H, W), mask int64 (H, W))``, or the output of ``transform(image,
    mask)``, a joint image+mask augmentation.
    """

    def __init__(
        self,
        images_uint8_nhwc: np.ndarray | torch.Tensor,
        masks_uint8_nhw: np.ndarray | torch.Tensor,
        transform: Callable[[torch.Tensor, torch.Tensor], Any] | None = None,
    ) -> None:
        self.base = ArrayDataset(images_uint8_nhwc, np.zeros(len(images_uint8_nhwc), dtype=np.int64))
        self.masks = torch.as_tensor(masks_uint8_nhw)
        if self.masks.ndim != 3 or len(self.masks) != len(self.base):
            raise InputError(
                f"masks must be (N, H, W) with N={len(self.base)}, got {tuple(self.masks.shape)}"
            )
        self.transform = transform

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> Any:
        image, _ = self.base[index]
        mask = self.masks[index]
        if self.transform is not None:
            return self.transform(image, mask)
        return image, mask.long()


class TorchvisionDataset(Dataset):
    """A torchvision data set (read with ``download=False`` unless the YAML asks) as a benchmark set."""

    def __init__(
        self,
        dataset: Dataset,
        indices: np.ndarray,
        labels: np.ndarray,
        resize: int | tuple[int, int],
        crop: int,
        transform: Transform | None = None,
        name: str = "",
    ) -> None:
        self.dataset = dataset
        self.indices = indices
        self._labels = labels
        self.resize = resize
        self.crop = crop
        self.transform = transform
        self.name = name

    @property
    def labels(self) -> np.ndarray:
        """int64 labels (-1 for OOD)."""
        return self._labels

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, _ = self.dataset[int(self.indices[index])]
        array = _image_to_hwc(image)
        if self.transform is None:
            return hwc_to_chw_tensor(fit_array(array, self.resize, self.crop)), int(self._labels[index])
        return self.transform(hwc_to_chw_tensor(array)), int(self._labels[index])


def _image_to_hwc(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(to_rgb(image))
    if isinstance(image, torch.Tensor):
        array = image.numpy()
        if array.ndim == 3 and array.shape[0] in (1, 3):
            array = array.transpose(1, 2, 0)
        return as_hwc_rgb(array)
    return as_hwc_rgb(np.asarray(image))


# -- building ---------------------------------------------------------------------------------


def open_torchvision(spec: SetSpec) -> Dataset:
    """Instantiate the torchvision class a set names; ``download`` only when the YAML says so."""
    import torchvision.datasets as tv_datasets

    name = spec.params["dataset"]
    cls = getattr(tv_datasets, name, None)
    if not isinstance(cls, type):
        raise InputError(
            f"{spec.source}: torchvision.datasets has no class {name!r} "
            "(e.g. CIFAR10, CIFAR100, SVHN, MNIST, FashionMNIST, DTD, Places365)"
        )
    parameters = inspect.signature(cls).parameters
    kwargs = dict(spec.params["options"])
    split = spec.params["split"]
    if "split" in parameters:
        kwargs["split"] = split
    elif "train" in parameters:
        if split not in ("train", "test"):
            raise InputError(f"{spec.source}: {name} has splits 'train' and 'test', not {split!r}")
        kwargs["train"] = split == "train"
    if "download" in parameters:
        kwargs["download"] = spec.params["download"]
    root = spec.params["root"]
    try:
        return cls(root=str(root), **kwargs)
    except (RuntimeError, FileNotFoundError, NotADirectoryError) as error:
        raise MissingInputError(
            f"{spec.source}: torchvision {name} (split {split!r}) not found under {root}: {error} "
            f"Get it with torchvision.datasets.{name}(root={str(root)!r}, download=True) "
            "or set `download: true` on the set"
        ) from None
    except (ValueError, TypeError) as error:
        raise InputError(f"{spec.source}: cannot open torchvision {name} with {kwargs}: {error}") from None


def torchvision_arrays(dataset: Dataset) -> tuple[np.ndarray, np.ndarray] | None:
    """The decoded arrays of the torchvision sets that keep them in memory (CIFAR, MNIST family,
    SVHN), as uint8 NHWC + labels; None for sets read from files (DTD, Places365, ...)."""
    import torchvision.datasets as tv_datasets

    if isinstance(dataset, tv_datasets.CIFAR10):  # CIFAR100 derives from it
        return np.asarray(dataset.data), np.asarray(dataset.targets, dtype=np.int64)
    if isinstance(dataset, tv_datasets.MNIST):  # FashionMNIST, KMNIST, EMNIST too
        return np.asarray(dataset.data), np.asarray(dataset.targets, dtype=np.int64)
    if isinstance(dataset, tv_datasets.SVHN):
        return np.asarray(dataset.data).transpose(0, 2, 3, 1), np.asarray(dataset.labels, dtype=np.int64)
    return None


def _torchvision_labels(dataset: Dataset) -> np.ndarray | None:
    for attribute in ("targets", "labels", "_labels"):
        value = getattr(dataset, attribute, None)
        if value is not None and len(value) == len(dataset):
            return np.asarray(value, dtype=np.int64)
    return None


def _check_id_labels(labels: np.ndarray, spec: SetSpec, benchmark: Benchmark) -> None:
    bad = np.flatnonzero((labels < 0) | (labels >= benchmark.num_classes))
    if len(bad):
        raise InputError(
            f"{spec.source}: {len(bad)} labels outside 0..{benchmark.num_classes - 1} in ID set "
            f"{spec.name!r} (first: item {int(bad[0])} has label {int(labels[bad[0]])})"
        )


def generate_shapes(spec: SetSpec) -> tuple[np.ndarray, np.ndarray]:
    """The built-in shapes set a spec names (generated, deterministic in its seed)."""
    import dfb_ood.harness.data.shapes as shapes  # lazy: only shapes sets need the generators

    params = spec.params
    images, labels = shapes.generate_set(
        params["set"], count=params["count"], seed=params["seed"], size=params["size"]
    )
    return np.asarray(images, dtype=np.uint8), np.asarray(labels, dtype=np.int64)


def _array_source(spec: SetSpec, benchmark: Benchmark) -> tuple[np.ndarray, np.ndarray] | None:
    """(images NHWC, labels) of array-backed sets, subset and labels applied; None otherwise."""
    if spec.type == "shapes":
        images, labels = generate_shapes(spec)
    elif spec.type == "arrays":
        images, stored = load_array_set(spec)
        if stored is None and not spec.is_ood:
            key = spec.params["key"]
            raise InputError(f"{spec.source}: ID set {spec.name!r} needs {key}_labels in its file")
        labels = stored if stored is not None else np.full(len(images), -1, dtype=np.int64)
    elif spec.type == "torchvision":
        arrays = torchvision_arrays(open_torchvision(spec))
        if arrays is None:
            return None
        images, labels = arrays
    else:
        return None
    indices = subset_indices(spec, len(images))
    images, labels = images[indices], labels[indices]
    if spec.is_ood:
        labels = np.full(len(images), -1, dtype=np.int64)
    else:
        _check_id_labels(labels, spec, benchmark)
    return images, labels


def build_dataset(
    spec: SetSpec, benchmark: Benchmark, transform: Transform | None = None, *, skip_bad: bool = False
) -> Dataset:
    """The dataset of one set of ``benchmark``; items are ``(image, label)`` (see module docs)."""
    fit = (benchmark.test_resize, benchmark.test_crop)
    name = f"{benchmark.name}/{spec.name}"
    if spec.type in ("imglist", "folder"):
        table = file_table(spec, benchmark, skip_bad=skip_bad, headers=skip_bad)
        return ImageFileDataset(table, *fit, transform=transform, name=name)
    check_root(spec, benchmark)
    arrays = _array_source(spec, benchmark)
    if arrays is not None:
        return ArrayDataset(arrays[0], arrays[1], transform, fit=fit, name=name)
    dataset = open_torchvision(spec)  # torchvision sets read from files
    indices = subset_indices(spec, len(dataset))
    labels = _torchvision_labels(dataset)
    if spec.is_ood:
        labels = np.full(len(indices), -1, dtype=np.int64)
    elif labels is None:
        raise InputError(f"{spec.source}: cannot read the labels of torchvision {spec.params['dataset']}")
    else:
        labels = labels[indices]
        _check_id_labels(labels, spec, benchmark)
    return TorchvisionDataset(dataset, indices, labels, *fit, transform=transform, name=name)


def load_arrays(
    spec: SetSpec, benchmark: Benchmark, *, skip_bad: bool = False, workers: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Decode a whole set once: uint8 ``(N, S, S, 3)`` at the test size S, and int64 labels.

    For 32x32-scale benchmarks the pipeline keeps every set in memory and wraps it in an
    :class:`ArrayDataset`. File-backed sets are kept in the decoded cache
    (:mod:`harness.data.cache`), so the next run reads them back without decoding. Files are
    decoded in this thread, or by ``workers`` threads (worth it for large JPEGs, where Pillow's
    decoder releases the GIL; not for 32x32 PNGs).
    An undecodable image raises (naming its list line), or is dropped with a warning under
    ``skip_bad``.
    """
    resize, crop = benchmark.test_resize, benchmark.test_crop
    if spec.type in ("imglist", "folder"):
        table = file_table(spec, benchmark, skip_bad=skip_bad)
        label = f"set {spec.name!r} ({spec.source})"
        key = cache_key(table, resize, crop) if cache_root() is not None else None
        cached = load_decoded(key, (len(table), crop, crop, 3)) if key is not None else None
        if cached is not None:
            images, labels, skipped = cached
            # Stored with entries left out: announced (or refused) exactly as when decoded.
            _report_undecodable(skipped, label, skip_bad, len(table))
            return images, labels
        out = np.empty((len(table), crop, crop, 3), dtype=np.uint8)

        def decode(index: int) -> Problem | None:
            try:
                out[index] = fit_pil(decode_rgb(table.paths[index]), resize, crop)
            except (ImageDecodeError, FileNotFoundError) as error:
                return Problem(table.origin(index), str(error))
            return None

        results = map_threads(decode, range(len(table)), workers)
        skipped = [problem for problem in results if problem is not None]
        _report_undecodable(skipped, label, skip_bad, len(table))
        keep = np.flatnonzero([problem is None for problem in results])
        images, labels = (out, table.labels.copy()) if not skipped else (out[keep], table.labels[keep])
        if key is not None:
            store_decoded(key, images, labels, f"{benchmark.name}/{spec.name} ({spec.source})", skipped)
        return images, labels
    check_root(spec, benchmark)
    arrays = _array_source(spec, benchmark)
    if arrays is not None:
        images, labels = arrays
        if images.ndim == 4 and images.shape[1:] == (crop, crop, 3) and resize == crop:
            return np.ascontiguousarray(images), labels
        return np.stack([fit_array(image, resize, crop) for image in images]), labels
    dataset = build_dataset(spec, benchmark, skip_bad=skip_bad)  # a torchvision set read from files
    items: list[np.ndarray] = []
    keep: list[int] = []
    problems: list[Problem] = []
    for i in range(len(dataset)):
        try:
            items.append(dataset[i][0].permute(1, 2, 0).numpy())
            keep.append(i)
        except DECODE_ERRORS as error:  # a missing or corrupt file of, e.g., DTD or Places365
            origin = f"torchvision {spec.params['dataset']} item {int(dataset.indices[i])}"
            problems.append(Problem(origin, f"cannot read the image: {error}"))
    _report_undecodable(problems, f"set {spec.name!r} ({spec.source})", skip_bad, len(dataset))
    return np.stack(items), np.asarray(dataset.labels, dtype=np.int64)[keep]


def _report_undecodable(skipped: list[Problem], label: str, skip_bad: bool, total: int) -> None:
    raise_or_warn(
        skipped,
        what="undecodable images",
        set_label=label,
        skip_bad=skip_bad,
        error=ImageDecodeError,
        total=total,
    )
