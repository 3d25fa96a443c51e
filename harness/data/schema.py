"""The benchmark YAML schema (``docs/benchmarks.md``): one file's mapping to a :class:`Benchmark`.

Everything is resolved eagerly (paths, normalisation, transforms, line numbers), so that errors
name the YAML file and line before any image is read, and so that a shipped config parses even
when its data is absent. The top level lives here; one set's keys in :mod:`harness.data.set_schema`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from dfb_ood.errors import InputError
from dfb_ood.harness.data.set_schema import SetParser
from dfb_ood.harness.data.specs import (
    MAX_CLASSES,
    MAX_SEED,
    RECIPES,
    RESERVED_SET_NAMES,
    Benchmark,
    ClassSubset,
    SetSpec,
    draw_classes,
)
from dfb_ood.harness.names import check_file_name, safe_file_name

_TOP_KEYS = {
    "name",
    "description",
    "num_classes",
    "class_names",
    "image_size",
    "channels",
    "normalization",
    "seed",
    "root",
    "images",
    "transforms",
    "id",
    "ood",
    "hint",
    "id_classes",
}
_ID_CLASSES_KEYS = {"count", "seed"}


class BenchmarkParser(SetParser):
    """Turns one YAML mapping into a :class:`Benchmark`, with file:line in every error."""

    def __init__(
        self,
        path: Path,
        data_root: Path,
        shipped: bool,
        *,
        classes: int | None = None,
        class_seed: int | None = None,
    ) -> None:
        super().__init__(path, data_root)
        self.shipped = shipped
        self.classes = classes
        self.class_seed = class_seed
        self.class_ids: tuple[int, ...] | None = None

    def parse(self) -> Benchmark:
        """The benchmark the file defines (the first problem raises, naming its line)."""
        raw = self.raw
        unknown = sorted(set(raw) - _TOP_KEYS)
        if unknown:
            raise self.fail(
                (unknown[0],), f"unknown key {unknown[0]!r}; known keys: {', '.join(sorted(_TOP_KEYS))}"
            )
        if raw.get("name") is not None and raw.get("name") != "":
            # the name becomes the default run folder (runs/<name>/...): one plain file name
            name = check_file_name(str(raw["name"]), "benchmark name", self.where("name"))
        else:
            name = safe_file_name(self.path.stem, fallback="benchmark")
        for key in ("num_classes", "image_size", "normalization", "id", "ood"):
            if key not in raw:
                raise InputError(f"{self.path}: missing required key {key!r} (see docs/benchmarks.md)")
        num_classes = self.integer(raw["num_classes"], ("num_classes",), maximum=MAX_CLASSES)
        image_size = self.side(raw["image_size"], ("image_size",))
        channels = self.integer(raw.get("channels", 3), ("channels",))
        if channels not in (1, 3):
            raise self.fail(("channels",), f"channels must be 1 or 3, got {channels}")
        class_names = self.class_names(raw.get("class_names"), num_classes)
        class_subset = self.id_classes(raw.get("id_classes"), num_classes, class_names, name)
        if class_subset is not None:
            self.class_ids = class_subset.ids
            # The draw is part of the name: runs of different draws get their own run folders and
            # leaderboard rows (runs/<name>/...), and a results row says which draw it measured.
            drawn = f"{name}_c{class_subset.count}_s{class_subset.seed}"
            name = check_file_name(drawn, "benchmark name", self.where("id_classes"))
            num_classes, class_names = class_subset.count, class_subset.names
        mean, std = self.normalization(raw["normalization"], channels)
        self.root = self.path.parent
        if "root" in raw:
            self.root = self.path_value(raw["root"], ("root",), self.path.parent)
        self.images = self.root
        if "images" in raw:
            self.images = self.path_value(raw["images"], ("images",), self.root)
        transforms = self.transforms(raw.get("transforms") or {}, image_size)

        id_section = raw["id"]
        if not isinstance(id_section, dict):
            raise self.fail(("id",), "id must be a mapping with train, val and test")
        extra_id = sorted(set(id_section) - {"train", "val", "test"})
        if extra_id:
            raise self.fail(
                ("id", extra_id[0]), f"unknown ID split {extra_id[0]!r}; expected train, val, test"
            )
        id_sets = {}
        for split in ("train", "val", "test"):
            if split not in id_section or id_section[split] is None:
                raise self.fail(("id",), f"id.{split} is required")
            id_sets[split] = self.set_spec(split, f"id_{split}", id_section[split], ("id", split))

        ood = raw["ood"]
        if not isinstance(ood, dict):
            raise self.fail(("ood",), "ood must be a mapping with near and/or far groups (and optional val)")
        extra_ood = sorted(set(ood) - {"val", "near", "far"})
        if extra_ood:
            raise self.fail(
                ("ood", extra_ood[0]), f"unknown OOD key {extra_ood[0]!r}; expected val, near, far"
            )
        ood_val = None
        if ood.get("val") is not None:
            ood_val = self.set_spec("ood_val", "ood_val", ood["val"], ("ood", "val"))
        groups: dict[str, dict[str, SetSpec]] = {}
        seen: set[str] = set()
        for group in ("near", "far"):
            entries = ood.get(group) or {}
            if not isinstance(entries, dict):
                raise self.fail(("ood", group), f"ood.{group} must map set names to sets")
            groups[group] = {}
            for set_name, value in entries.items():
                set_name = str(set_name)
                # the name becomes a file of the run (outputs/<network>/<set>/): one plain file name
                check_file_name(set_name, f"{group}-OOD set name", self.where("ood", group, set_name))
                if set_name in RESERVED_SET_NAMES or set_name in seen:
                    raise self.fail(
                        ("ood", group, set_name), f"OOD set name {set_name!r} is reserved or repeated"
                    )
                others = (*RESERVED_SET_NAMES, *seen)
                twin = next((other for other in others if other.lower() == set_name.lower()), None)
                if twin is not None:
                    raise self.fail(
                        ("ood", group, set_name),
                        f"OOD set names {twin!r} and {set_name!r} differ only in case: on a file system "
                        "that ignores case (macOS, Windows) their outputs would be one file; rename one",
                    )
                seen.add(set_name)
                groups[group][set_name] = self.set_spec(set_name, group, value, ("ood", group, set_name))
        if not groups["near"] and not groups["far"]:
            raise self.fail(("ood",), "a benchmark needs at least one near or far OOD set")

        hint = str(raw.get("hint") or "")
        if not hint and self.shipped and self.uses_data_root:
            hint = f"run `harness data download {name}`"
        return Benchmark(
            name=name,
            num_classes=num_classes,
            class_names=class_names,
            image_size=image_size,
            channels=channels,
            mean=mean,
            std=std,
            train=id_sets["train"],
            val=id_sets["val"],
            test=id_sets["test"],
            ood_val=ood_val,
            near=groups["near"],
            far=groups["far"],
            transforms=transforms,
            source=self.path,
            root=self.root,
            data_root=self.data_root if self.uses_data_root else None,
            uses_data_root=self.uses_data_root,
            shipped=self.shipped,
            hint=hint,
            extra={k: raw[k] for k in ("description", "seed") if k in raw},
            class_subset=class_subset,
        )

    def id_classes(
        self, value: Any, num_classes: int, class_names: tuple[str, ...], name: str
    ) -> ClassSubset | None:
        """The ``id_classes`` section drawn (with the ``--classes`` / ``--class-seed`` overrides)."""
        overrides = [
            flag
            for flag, v in (("--classes", self.classes), ("--class-seed", self.class_seed))
            if v is not None
        ]
        if value is None:
            if overrides:
                verb = "apply" if len(overrides) > 1 else "applies"
                raise InputError(
                    f"{' and '.join(overrides)} only {verb} to a class-subset benchmark, and {name!r} "
                    f"({self.path}) has no id_classes section: use --benchmark imagenet_subset, or add "
                    "`id_classes: {count: C, seed: S}` to the YAML (see docs/benchmarks.md)"
                )
            return None
        keys = ("id_classes",)
        if not isinstance(value, dict):
            raise self.fail(keys, f"id_classes must be a mapping {{count: C, seed: S}}, got {value!r}")
        unknown = sorted(set(value) - _ID_CLASSES_KEYS)
        if unknown:
            raise self.fail((*keys, unknown[0]), f"unknown id_classes key {unknown[0]!r}; known: count, seed")
        if "count" not in value:
            raise self.fail(keys, "id_classes needs count: the number of ID classes to draw")
        count = self.integer(value["count"], (*keys, "count"))
        seed = self.integer(value.get("seed", 0), (*keys, "seed"), minimum=0, maximum=MAX_SEED)
        if count > num_classes:
            raise self.fail(
                (*keys, "count"),
                f"id_classes count {count} exceeds num_classes {num_classes} (the lists' classes)",
            )
        if self.classes is not None:
            if isinstance(self.classes, bool) or not 1 <= self.classes <= num_classes:
                raise InputError(
                    f"--classes {self.classes}: {name!r} draws from its {num_classes} classes, so give "
                    f"1..{num_classes} (the paper's study uses 200, 300, 500 and 1000)"
                )
            count = self.classes
        if self.class_seed is not None:
            if not 0 <= self.class_seed <= MAX_SEED:
                raise InputError(f"--class-seed {self.class_seed}: give a seed in 0..{MAX_SEED}")
            seed = self.class_seed
        ids = draw_classes(num_classes, count, seed)
        return ClassSubset(
            of=num_classes, count=count, seed=seed, ids=ids, names=tuple(class_names[i] for i in ids)
        )

    def class_names(self, value: Any, num_classes: int) -> tuple[str, ...]:
        if value is None:
            return tuple(str(i) for i in range(num_classes))
        if not isinstance(value, list) or len(value) != num_classes:
            count = len(value) if isinstance(value, list) else "not a list"
            raise self.fail(
                ("class_names",), f"class_names must list num_classes={num_classes} names ({count})"
            )
        return tuple(str(v) for v in value)

    def normalization(
        self, value: Any, channels: int = 3
    ) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """``mean`` and ``std``: finite numbers, std > 0, one value or one per channel.

        An infinite std makes every input 0 (all detectors score alike, AUROC 0.5), a NaN makes
        every output NaN; neither is an error anywhere later, so both are refused here.
        """
        if not isinstance(value, dict) or "mean" not in value or "std" not in value:
            raise self.fail(("normalization",), "normalization needs mean and std (1 or 3 values each)")
        unknown = sorted(set(value) - {"mean", "std"})
        if unknown:
            raise self.fail(("normalization", unknown[0]), f"unknown normalization key {unknown[0]!r}")
        lengths = (1,) if channels == 1 else (1, 3)
        wanted = "1 number" if channels == 1 else "1 or 3 numbers"
        out = []
        for key in ("mean", "std"):
            numbers = value[key]
            keys = ("normalization", key)
            if isinstance(numbers, (int, float)) and not isinstance(numbers, bool):
                numbers = [numbers]
            ok = isinstance(numbers, list) and len(numbers) in lengths
            ok = ok and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in numbers)
            if not ok:
                raise self.fail(keys, f"{key} must be {wanted} (channels: {channels}), got {numbers!r}")
            if not all(math.isfinite(x) for x in numbers):
                raise self.fail(keys, f"{key} must be finite numbers, got {numbers!r}")
            if key == "std" and any(x <= 0 for x in numbers):
                raise self.fail(keys, f"std must be positive, got {numbers!r}")
            triple = [float(x) for x in numbers] * (3 if len(numbers) == 1 else 1)
            out.append((triple[0], triple[1], triple[2]))
        return out[0], out[1]

    def transforms(self, value: Any, image_size: int) -> dict[str, dict[str, Any]]:
        if not isinstance(value, dict):
            raise self.fail(("transforms",), "transforms must be a mapping (test / train / dense)")
        unknown = sorted(set(value) - {"test", "train", "dense"})
        if unknown:
            raise self.fail(
                ("transforms", unknown[0]), f"unknown transform {unknown[0]!r}; known: test, train, dense"
            )
        test = dict(value.get("test") or {})
        crop = self.side(test.get("crop", image_size), ("transforms", "test", "crop"))
        if crop != image_size:
            raise self.fail(
                ("transforms", "test", "crop"), f"test crop {crop} must equal image_size {image_size}"
            )
        resize = test.get("resize", image_size)
        if isinstance(resize, list):
            if len(resize) != 2:
                raise self.fail(("transforms", "test", "resize"), "resize is an int or [height, width]")
            resize = (
                self.side(resize[0], ("transforms", "test", "resize")),
                self.side(resize[1], ("transforms", "test", "resize")),
            )
            too_small = min(resize) < crop
        else:
            resize = self.side(resize, ("transforms", "test", "resize"))
            too_small = resize < crop
        if too_small:
            raise self.fail(
                ("transforms", "test", "resize"), f"resize {resize} is smaller than the crop {crop}"
            )
        interpolation = test.get("interpolation", "bilinear")
        if interpolation != "bilinear":
            raise self.fail(
                ("transforms", "test", "interpolation"), "only bilinear interpolation is supported"
            )
        unknown_test = sorted(set(test) - {"resize", "crop", "interpolation"})
        if unknown_test:
            raise self.fail(
                ("transforms", "test", unknown_test[0]), f"unknown test transform key {unknown_test[0]!r}"
            )

        train = dict(value.get("train") or {})
        recipe = train.get("recipe", "cifar" if image_size <= 64 else "paper")
        if recipe not in RECIPES:
            raise self.fail(
                ("transforms", "train", "recipe"), f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}"
            )
        train_crop = self.side(train.get("crop", image_size), ("transforms", "train", "crop"))
        train_out = {
            "recipe": recipe,
            "crop": train_crop,
            "resize": self.side(
                train.get("resize", round(train_crop * 1.25)), ("transforms", "train", "resize")
            ),
            "pad": self.side(train.get("pad", 4), ("transforms", "train", "pad"), minimum=0),
            "flip": bool(train.get("flip", True)),
        }
        unknown_train = sorted(set(train) - set(train_out))
        if unknown_train:
            raise self.fail(
                ("transforms", "train", unknown_train[0]), f"unknown train key {unknown_train[0]!r}"
            )

        dense = dict(value.get("dense") or {})
        scale = dense.get("scale", [0.5, 2.0])
        if not (isinstance(scale, list) and len(scale) == 2 and 0 < float(scale[0]) <= float(scale[1])):
            raise self.fail(("transforms", "dense", "scale"), f"scale must be [low, high], got {scale!r}")
        dense_out = {
            "scale": (float(scale[0]), float(scale[1])),
            "crop": self.side(dense.get("crop", image_size), ("transforms", "dense", "crop")),
            "flip": bool(dense.get("flip", True)),
            "ignore_index": self.integer(
                dense.get("ignore_index", 255), ("transforms", "dense", "ignore_index"), 0
            ),
        }
        unknown_dense = sorted(set(dense) - set(dense_out))
        if unknown_dense:
            raise self.fail(
                ("transforms", "dense", unknown_dense[0]), f"unknown dense key {unknown_dense[0]!r}"
            )
        return {
            "test": {"resize": resize, "crop": crop, "interpolation": "bilinear"},
            "train": train_out,
            "dense": dense_out,
        }
