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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch
from dfb_ood.harness.data.arrays import load_array_set
from dfb_ood.harness.data.benchmark import Benchmark, SetSpec
from dfb_ood.harness.data.cache import cache_key, cache_root, load_decoded, store_decoded
from dfb_ood.harness.data.images import (
    DECODE_ERRORS,
    ImageDecodeError,
    as_hwc_rgb,
    decode_rgb,
    fit_array,
    fit_pil,
    header_ok,
    hwc_to_chw_tensor,
    resized_size,
    to_rgb,
)
from dfb_ood.harness.data.imglist import FileTable, find_missing, read_folder, read_imglist
from dfb_ood.harness.data.problems import Problem, describe_path, raise_or_warn
from PIL import Image
from torch.utils.data import Dataset

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
            raise ValueError(f"ArrayDataset needs uint8 images, got {images.dtype}")
        if images.ndim == 3:
            images = images.unsqueeze(-1)
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(
                f"ArrayDataset needs images shaped (N, H, W, 3) or (N, H, W), got {tuple(images.shape)}"
            )
        if images.shape[-1] == 1:
            images = images.expand(-1, -1, -1, 3)
        self.images = images.permute(0, 3, 1, 2).contiguous()
        self._labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(self._labels) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self._labels)} labels")
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
            raise ValueError(
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


def check_root(spec: SetSpec, benchmark: Benchmark) -> None:
    """Fail early, naming the data root and the set's YAML line, when the root is absent."""
    root = benchmark.root
    # torchvision sets report a missing root themselves, with the class to download it with.
    if spec.type in ("shapes", "torchvision", "arrays") or root is None or root.is_dir():
        return
    if benchmark.uses_data_root:
        hint = f"; {benchmark.hint}" if benchmark.hint else ""
        raise FileNotFoundError(
            f"data root {benchmark.data_root} does not exist (pass --data-root or set $HARNESS_DATA)"
            f"{hint}; needed by set {spec.name!r} defined at {spec.source}"
        )
    raise FileNotFoundError(
        f"benchmark root {root} does not exist; needed by set {spec.name!r} at {spec.source}"
    )


def _subset_indices(spec: SetSpec, size: int) -> np.ndarray:
    subset = spec.params.get("subset")
    if subset is None:
        return np.arange(size)
    start, stop = subset
    if stop > size:
        raise ValueError(f"{spec.source}: subset [{start}, {stop}] reaches beyond the set's {size} entries")
    return np.arange(start, stop)


def file_table(
    spec: SetSpec, benchmark: Benchmark, *, skip_bad: bool = False, headers: bool = False
) -> FileTable:
    """The checked file table of an imglist or folder set (bad entries raise, or are skipped)."""
    check_root(spec, benchmark)
    label = f"set {spec.name!r} ({spec.source})"
    num_classes = None if spec.is_ood else benchmark.list_classes
    if spec.type == "imglist":
        table, problems = read_imglist(
            spec.params["list"], spec.params["images"], num_classes=num_classes, source=spec.source
        )
        table, problems = _list_subset(spec, table, problems)
        table = keep_classes(spec, table, benchmark.list_classes)
        raise_or_warn(
            problems,
            what="bad list lines",
            set_label=label,
            skip_bad=skip_bad,
            total=len(table) + len(problems),
            hint=f"each line of {spec.params['list']} is '<relative path> <label>'",
        )
    elif spec.type == "folder":
        table = read_folder(
            spec.params["path"],
            num_classes=num_classes,
            class_names=benchmark.class_names,
            classes=spec.params["classes"],
            source=spec.source,
        )
        table = table.select(_subset_indices(spec, len(table)))
    else:
        raise ValueError(f"{spec.source}: a {spec.type} set has no files")
    missing = find_missing(table)
    if spec.type == "imglist" and missing and len(missing) == len(table):
        images = spec.params["images"]
        if not images.is_dir():
            hint = f"; {benchmark.hint}" if benchmark.hint else ""
            raise FileNotFoundError(
                f"image folder {images} does not exist: the paths in {spec.params['list']} are read "
                f"relative to it (`images:` of {label}){hint}"
            )
    problems = [
        Problem(table.origin(i), f"image not found: {describe_path(table.paths[i])}") for i in missing
    ]
    raise_or_warn(
        problems,
        what="missing images",
        set_label=label,
        skip_bad=skip_bad,
        error=FileNotFoundError,
        total=len(table),
        hint=_missing_hint(spec, benchmark),
    )
    if missing:
        table = table.select(np.setdiff1d(np.arange(len(table)), missing))
    if headers:
        reasons = _map_threads(header_ok, table.paths)
        bad = [i for i, reason in enumerate(reasons) if reason is not None]
        problems = [
            Problem(table.origin(i), f"cannot decode image {table.paths[i]}: {reasons[i]}") for i in bad
        ]
        raise_or_warn(
            problems,
            what="undecodable images",
            set_label=label,
            skip_bad=skip_bad,
            error=ImageDecodeError,
            total=len(table),
        )
        if bad:
            table = table.select(np.setdiff1d(np.arange(len(table)), bad))
    if not len(table):
        raise ValueError(f"{label}: no usable images left")
    return table


def _list_subset(spec: SetSpec, table: FileTable, problems: list[Problem]) -> tuple[FileTable, list[Problem]]:
    """A list set's ``subset``, counted over all its entries, bad lines included.

    Counting bad lines too means skipping them (``--skip-bad``) never shifts which images a subset
    holds; bad lines outside the subset do not concern the set.
    """
    if spec.params.get("subset") is None:
        return table, problems
    lines = np.sort(np.concatenate([np.asarray(table.lines, dtype=np.int64), [p.line for p in problems]]))
    chosen = set(lines[_subset_indices(spec, len(lines))].tolist())
    keep = [i for i, line in enumerate(table.lines) if int(line) in chosen]
    return table.select(keep), [p for p in problems if p.line in chosen]


def keep_classes(spec: SetSpec, table: FileTable, list_classes: int) -> FileTable:
    """The entries of a class-subset benchmark's drawn classes, relabelled ``0..C-1``.

    ``spec.params["class_ids"]`` (set on ID sets by ``id_classes``) holds the drawn original
    labels, sorted; original label ``class_ids[i]`` becomes ``i``, so the mapping depends on the
    draw alone, not on the order of the list. Entries of other classes are not errors: the
    subset simply leaves them out. Other sets come back unchanged.
    """
    class_ids = spec.params.get("class_ids")
    if class_ids is None:
        return table
    new_label = np.full(list_classes, -1, dtype=np.int64)
    new_label[np.asarray(class_ids, dtype=np.int64)] = np.arange(len(class_ids))
    mapped = new_label[table.labels]
    kept = np.flatnonzero(mapped >= 0)
    subset = table.select(kept)
    subset.labels = mapped[kept]
    return subset


def _missing_hint(spec: SetSpec, benchmark: Benchmark) -> str:
    """What to check when none of a set's files exist."""
    if benchmark.hint:
        return benchmark.hint
    if spec.type == "imglist":
        return f"the paths in {spec.params['list']} are read relative to {spec.params['images']}"
    return f"check the image folder {spec.params['path']}"


def open_torchvision(spec: SetSpec) -> Dataset:
    """Instantiate the torchvision class a set names; ``download`` only when the YAML says so."""
    import torchvision.datasets as tv_datasets

    name = spec.params["dataset"]
    cls = getattr(tv_datasets, name, None)
    if not isinstance(cls, type):
        raise ValueError(
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
            raise ValueError(f"{spec.source}: {name} has splits 'train' and 'test', not {split!r}")
        kwargs["train"] = split == "train"
    if "download" in parameters:
        kwargs["download"] = spec.params["download"]
    root = spec.params["root"]
    try:
        return cls(root=str(root), **kwargs)
    except (RuntimeError, FileNotFoundError, NotADirectoryError) as error:
        raise FileNotFoundError(
            f"{spec.source}: torchvision {name} (split {split!r}) not found under {root}: {error} "
            f"Get it with torchvision.datasets.{name}(root={str(root)!r}, download=True) "
            "or set `download: true` on the set"
        ) from None
    except (ValueError, TypeError) as error:
        raise ValueError(f"{spec.source}: cannot open torchvision {name} with {kwargs}: {error}") from None


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
        raise ValueError(
            f"{spec.source}: {len(bad)} labels outside 0..{benchmark.num_classes - 1} in ID set "
            f"{spec.name!r} (first: item {int(bad[0])} has label {int(labels[bad[0]])})"
        )


def generate_shapes(spec: SetSpec) -> tuple[np.ndarray, np.ndarray]:
    """The built-in shapes set a spec names (generated, deterministic in its seed)."""
    from dfb_ood.harness.data import shapes

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
            raise ValueError(f"{spec.source}: ID set {spec.name!r} needs {key}_labels in its file")
        labels = stored if stored is not None else np.full(len(images), -1, dtype=np.int64)
    elif spec.type == "torchvision":
        arrays = torchvision_arrays(open_torchvision(spec))
        if arrays is None:
            return None
        images, labels = arrays
    else:
        return None
    indices = _subset_indices(spec, len(images))
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
    indices = _subset_indices(spec, len(dataset))
    labels = _torchvision_labels(dataset)
    if spec.is_ood:
        labels = np.full(len(indices), -1, dtype=np.int64)
    elif labels is None:
        raise ValueError(f"{spec.source}: cannot read the labels of torchvision {spec.params['dataset']}")
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

        results = _map_threads(decode, range(len(table)), workers)
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


def _map_threads(function: Callable[[Any], Any], items: Any, workers: int | None = None) -> list[Any]:
    items = list(items)
    # Sequential by default: for small PNGs thread hand-offs cost more than the decode (measured
    # 2.5x slower with 2 threads on fmnist); threads pay off for large JPEGs (ImageNet).
    workers = workers or 1
    if workers <= 1 or len(items) < 64:
        return [function(item) for item in items]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(function, items))
