"""Benchmark definitions: one YAML file names an ID data set and its near/far OOD sets.

A benchmark is data, not code. Adding one (OpenOOD's most asked-for missing piece) means writing a
YAML file in the schema documented in ``docs/benchmarks.md`` and passing its path; the shipped
ones under ``configs/benchmarks/`` use the same schema. Everything here is resolved eagerly
(paths, normalisation, transforms, line numbers), so that errors name the YAML file and line
before any image is read, and so that a shipped config parses even when its data is absent.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from dfb_ood.harness.config import compose_yaml, config_names, configs_root
from dfb_ood.harness.names import check_file_name, safe_file_name

SET_TYPES = ("imglist", "torchvision", "folder", "shapes", "arrays")
ROLES = ("id_train", "id_val", "id_test", "ood_val", "near", "far")
RECIPES = ("paper", "cifar", "test")
RESERVED_SET_NAMES = ("train", "val", "test", "ood_val")

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
_SET_KEYS = {
    "imglist": {"list", "images"},
    "torchvision": {"dataset", "split", "root", "download", "options"},
    "folder": {"path", "classes"},
    "shapes": {"set", "count", "seed", "size"},
    "arrays": {"file", "key", "sha256"},
}
_COMMON_SET_KEYS = {"type", "subset", "description"}
_ID_CLASSES_KEYS = {"count", "seed"}
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

#: Upper bounds of the sizes a benchmark YAML declares, checked before anything is allocated from
#: them: ``num_classes: 2000000000`` would otherwise build two billion class names, a huge
#: ``image_size`` or shapes ``count`` arrays of that size. Far above any real benchmark
#: (ImageNet-21k has 21,841 classes; OpenOOD's largest test size is 224, 518 for DINOv2).
MAX_CLASSES = 100_000
MAX_IMAGE_SIDE = 4096
MAX_SHAPES_PIXELS = 2**30  # count x size x size x 3 bytes of one generated set
#: Seeds (run seeds, class-draw seeds, shapes seeds) are 0..2**32-1: what numpy's seeding takes
#: everywhere (``RandomState`` refuses more), and what a seed recorded in run.json reproduces.
MAX_SEED = 2**32 - 1


def check_seed(value: object, option: str) -> int:
    """``value`` as a seed (an integer in 0..:data:`MAX_SEED`), else one error naming ``option``.

    Why a bound: a seed above 2**32-1 is refused by numpy's seeding deep inside a run (a traceback
    after the data is loaded), or silently reduced elsewhere, so the run would not be the one asked for.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise ValueError(f"{option}: a seed is a whole number from 0 to {MAX_SEED} (2**32-1), got {value!r}")
    return value


@dataclass(frozen=True)
class SetSpec:
    """One data set of a benchmark, resolved but not loaded.

    ``params`` holds the type's settings with every path made absolute; ``source`` is
    ``"<yaml>:<line>"`` so that any later error about this set can point at its definition.
    """

    name: str
    type: str
    params: dict[str, Any]
    source: str
    role: str = ""

    def __hash__(self) -> int:  # params is a dict; a set is identified by where it is defined
        return hash((self.name, self.type, self.source, self.role))

    @property
    def is_ood(self) -> bool:
        """OOD sets carry label -1 whatever their source says."""
        return self.role in ("ood_val", "near", "far")


def draw_classes(of: int, count: int, seed: int) -> tuple[int, ...]:
    """``count`` of the class ids ``0..of-1``, drawn without replacement from ``seed``, sorted.

    The paper's class-subset study (Fig. 7) trains on C random ImageNet-1k classes; drawing with
    numpy's ``default_rng(seed)`` makes the draw a pure function of ``(of, count, seed)``, so a
    recorded seed reproduces the classes on any machine and numpy version (the Generator's
    stream is stable). Sorting fixes the new labels: drawn class ``ids[i]`` becomes label ``i``.
    """
    if not 1 <= count <= of:
        raise ValueError(f"cannot draw {count} classes out of {of}: the count must be in 1..{of}")
    if seed < 0:
        raise ValueError(f"the class-draw seed must be >= 0, got {seed}")
    chosen = np.random.default_rng(seed).choice(of, size=count, replace=False)
    return tuple(int(i) for i in np.sort(chosen))


@dataclass(frozen=True)
class ClassSubset:
    """The ID classes a class-subset benchmark keeps (the YAML's ``id_classes`` section, drawn).

    ``ids`` are the original labels of the ID lists (``0..of-1``), sorted; the benchmark's label
    ``i`` is original class ``ids[i]``. ``names`` are those classes' names (the YAML's
    ``class_names`` when it gives them, else the ids as text).
    """

    of: int
    count: int
    seed: int
    ids: tuple[int, ...]
    names: tuple[str, ...]

    def record(self) -> dict[str, Any]:
        """What ``run.json`` keeps: enough to redraw the classes and to read them without redrawing."""
        return {
            "count": self.count,
            "seed": self.seed,
            "of": self.of,
            "ids": list(self.ids),
            "names": list(self.names),
        }


@dataclass(frozen=True)
class Benchmark:
    """An ID data set (train / val / test) with named near- and far-OOD groups.

    ``mean``/``std`` always have three entries (a one-channel normalisation is broadcast, since
    every image is converted to RGB). ``transforms`` is the YAML section with defaults filled in:
    ``test`` (``resize``: int = shorter side or ``(h, w)``; ``crop``), ``train`` (``recipe`` and its
    sizes) and ``dense`` (the joint image+mask augmentation of the DFB dense stage).
    """

    name: str
    num_classes: int
    class_names: tuple[str, ...]
    image_size: int
    channels: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    train: SetSpec
    val: SetSpec
    test: SetSpec
    ood_val: SetSpec | None
    near: dict[str, SetSpec]
    far: dict[str, SetSpec]
    transforms: dict[str, dict[str, Any]]
    source: Path | None = None
    root: Path | None = None
    data_root: Path | None = None
    uses_data_root: bool = False
    shipped: bool = False
    hint: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    class_subset: ClassSubset | None = None

    def __hash__(self) -> int:  # near/far are dicts; a benchmark is identified by its file
        return hash((self.name, str(self.source), str(self.data_root)))

    @property
    def list_classes(self) -> int:
        """The label range of the ID lists: ``num_classes``, or all classes a subset is drawn from."""
        return self.class_subset.of if self.class_subset is not None else self.num_classes

    @property
    def description(self) -> str:
        """The YAML's one-line ``description`` (empty when absent)."""
        return str(self.extra.get("description", ""))

    def sets(self) -> list[SetSpec]:
        """Every set in a fixed order: ID train, val, test, OOD val, near, far."""
        out = [self.train, self.val, self.test]
        if self.ood_val is not None:
            out.append(self.ood_val)
        return out + list(self.near.values()) + list(self.far.values())

    def ood_sets(self) -> dict[str, SetSpec]:
        """The test-time OOD sets (near then far), by name."""
        return {**self.near, **self.far}

    def get_set(self, name: str) -> SetSpec:
        """A set by its name (``train``, ``val``, ``test``, ``ood_val`` or a near/far name)."""
        for spec in self.sets():
            if spec.name == name:
                return spec
        raise KeyError(f"benchmark {self.name!r} has no set {name!r}; sets: {[s.name for s in self.sets()]}")

    @property
    def test_resize(self) -> int | tuple[int, int]:
        """The test-time resize: an int resizes the shorter side, a pair is an exact (h, w)."""
        return self.transforms["test"]["resize"]

    @property
    def test_crop(self) -> int:
        """The side of the centre crop the network sees at test time (= ``image_size``)."""
        return int(self.transforms["test"]["crop"])


def default_data_root() -> Path:
    """``$HARNESS_DATA`` when set, else ``./data``: where OpenOOD-layout data is expected."""
    return Path(os.path.abspath(os.environ.get("HARNESS_DATA") or "data"))


def available_benchmarks() -> list[str]:
    """Names of the shipped benchmarks (``configs/benchmarks/*.yaml``)."""
    return config_names("benchmarks")


def load_benchmark(
    name_or_path: str | Path,
    data_root: Path | None = None,
    *,
    classes: int | None = None,
    class_seed: int | None = None,
) -> Benchmark:
    """A shipped benchmark by name, or a user's benchmark YAML by path.

    ``data_root`` replaces ``{data_root}`` in the file's ``root:`` key (default
    :func:`default_data_root`). The data root need not exist here: loading only parses, so every
    config can be checked offline; building a dataset reports a missing root.

    ``classes`` / ``class_seed`` replace the count and seed of the file's ``id_classes`` section
    (``--classes`` / ``--class-seed``); a file without that section refuses them rather than
    silently running on all its classes.
    """
    path = _find_yaml(name_or_path)
    data_root = Path(os.path.abspath(data_root)) if data_root is not None else default_data_root()
    shipped = path.parent.resolve() == (configs_root() / "benchmarks").resolve()
    return _Parser(path, data_root, shipped, classes=classes, class_seed=class_seed).parse()


def _find_yaml(name_or_path: str | Path) -> Path:
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    looks_like_path = isinstance(name_or_path, Path) or text.endswith((".yaml", ".yml")) or os.sep in text
    if candidate.is_file() or (candidate.exists() and not candidate.is_dir()):
        return Path(os.path.abspath(candidate))  # a FIFO or device: refused, with its kind, when read
    if looks_like_path:
        raise FileNotFoundError(f"benchmark file not found: {candidate}")
    shipped = configs_root() / "benchmarks" / f"{text}.yaml"
    if shipped.is_file():
        return shipped
    raise ValueError(
        f"unknown benchmark {text!r}: not a shipped name ({', '.join(available_benchmarks())}) "
        "and not a YAML file"
    )


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """The YAML mapping of a benchmark file and the 1-based line of every key, by key path.

    YAML loaders drop line numbers, and errors need them. A key repeated in one mapping is an
    error here: YAML would silently keep only the last one (a second ``near:`` would lose the
    first group's sets). The text may carry a UTF-8 byte-order mark or CRLF line ends.
    """
    index: dict[tuple[str, ...], int] = {}
    _, data = compose_yaml(path, "a benchmark YAML", visit=lambda root: _index_node(root, (), index, path))
    if data is None:
        return {}, index
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data, index


def _index_node(
    node: yaml.Node, prefix: tuple[str, ...], index: dict[tuple[str, ...], int], path: Path
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name, line = str(key.value), key.start_mark.line + 1
            if key.tag != "tag:yaml.org,2002:merge" and name in seen:
                dotted = ".".join((*prefix, name))
                raise ValueError(
                    f"{path}:{line}: key {dotted!r} appears twice (first at line {seen[name]}); "
                    "YAML would keep only the last, so merge the two"
                )
            seen[name] = line
            index[(*prefix, name)] = line
            _index_node(value, (*prefix, name), index, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index[(*prefix, str(i))] = item.start_mark.line + 1
            _index_node(item, (*prefix, str(i)), index, path)


class _Parser:
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
        self.path = path
        self.data_root = data_root
        self.shipped = shipped
        self.raw, self.lines = _read_yaml(path)
        self.uses_data_root = False
        self.classes = classes
        self.class_seed = class_seed
        self.class_ids: tuple[int, ...] | None = None

    # -- helpers -----------------------------------------------------------------------------
    def where(self, *keys: str) -> str:
        """``file:line`` of the deepest key of ``keys`` that the index knows."""
        for n in range(len(keys), 0, -1):
            line = self.lines.get(tuple(keys[:n]))
            if line is not None:
                return f"{self.path}:{line}"
        return f"{self.path}:1"

    def fail(self, keys: tuple[str, ...], message: str) -> ValueError:
        return ValueError(f"{self.where(*keys)}: {message}")

    def expand(self, value: Any, keys: tuple[str, ...]) -> str:
        if not isinstance(value, str) or not value:
            raise self.fail(keys, f"expected a path string, got {value!r}")

        def substitute(match: re.Match[str]) -> str:
            if match.group(1) == "data_root":
                self.uses_data_root = True
                return str(self.data_root)
            if match.group(1) == "here":
                return str(self.path.parent)
            raise self.fail(keys, f"unknown placeholder {{{match.group(1)}}}; known: {{data_root}}, {{here}}")

        return os.path.expanduser(_PLACEHOLDER.sub(substitute, value))

    def path_value(self, value: Any, keys: tuple[str, ...], base: Path) -> Path:
        expanded = Path(self.expand(value, keys))
        return Path(os.path.abspath(expanded if expanded.is_absolute() else base / expanded))

    def integer(self, value: Any, keys: tuple[str, ...], minimum: int = 1, maximum: int | None = None) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(keys, f"{keys[-1]} must be an integer >= {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise self.fail(
                keys,
                f"{keys[-1]} must be at most {maximum}, got {value}: is it a typo? (a larger value "
                "would be allocated before anything else is read)",
            )
        return value

    def side(self, value: Any, keys: tuple[str, ...], minimum: int = 1) -> int:
        """An image side in pixels (sizes, crops, resizes, pads), at most :data:`MAX_IMAGE_SIDE`."""
        return self.integer(value, keys, minimum, maximum=MAX_IMAGE_SIDE)

    # -- the schema --------------------------------------------------------------------------
    def parse(self) -> Benchmark:
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
                raise ValueError(f"{self.path}: missing required key {key!r} (see docs/benchmarks.md)")
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
                # the name becomes a file of the run (outputs/<network>/<set>.npz): one plain file name
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
                raise ValueError(
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
                raise ValueError(
                    f"--classes {self.classes}: {name!r} draws from its {num_classes} classes, so give "
                    f"1..{num_classes} (the paper's study uses 200, 300, 500 and 1000)"
                )
            count = self.classes
        if self.class_seed is not None:
            if not 0 <= self.class_seed <= MAX_SEED:
                raise ValueError(f"--class-seed {self.class_seed}: give a seed in 0..{MAX_SEED}")
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

    def set_spec(self, name: str, role: str, value: Any, keys: tuple[str, ...]) -> SetSpec:
        source = self.where(*keys)
        if isinstance(value, str):  # the plain form: an OpenOOD image list
            value = {"type": "imglist", "list": value}
        elif not isinstance(value, dict):
            raise self.fail(keys, f"a set is a list-file path or a mapping with a type, got {value!r}")
        set_type = value.get("type")
        if set_type not in SET_TYPES:
            raise self.fail(
                (*keys, "type"), f"set type must be one of {', '.join(SET_TYPES)}, got {set_type!r}"
            )
        allowed = _SET_KEYS[set_type] | _COMMON_SET_KEYS
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(
                (*keys, unknown[0]),
                f"unknown key {unknown[0]!r} for a {set_type} set; allowed: {', '.join(sorted(allowed))}",
            )
        params: dict[str, Any] = {"subset": self.subset(value.get("subset"), (*keys, "subset"))}
        if self.class_ids is not None and role.startswith("id_"):
            if set_type != "imglist":
                raise self.fail(
                    (*keys, "type"),
                    f"id_classes keeps the drawn classes of image-list ID sets; {name} is a {set_type} set "
                    "(write its files into an OpenOOD list, see docs/benchmarks.md)",
                )
            params["class_ids"] = self.class_ids
        if set_type == "imglist":
            if "list" not in value:
                raise self.fail(keys, "an imglist set needs list: <path to the list file>")
            params["list"] = self.path_value(value["list"], (*keys, "list"), self.root)
            images = self.images
            if "images" in value:
                images = self.path_value(value["images"], (*keys, "images"), self.root)
            params["images"] = images
        elif set_type == "torchvision":
            if not isinstance(value.get("dataset"), str):
                raise self.fail(keys, "a torchvision set needs dataset: <class name>, e.g. CIFAR10")
            params["dataset"] = value["dataset"]
            params["split"] = str(value.get("split", "test"))
            params["root"] = self.root
            if "root" in value:
                params["root"] = self.path_value(value["root"], (*keys, "root"), self.root)
            params["download"] = value.get("download", False) is True
            options = value.get("options") or {}
            if not isinstance(options, dict):
                raise self.fail((*keys, "options"), "options must be a mapping of keyword arguments")
            params["options"] = dict(options)
        elif set_type == "folder":
            if "path" not in value:
                raise self.fail(keys, "a folder set needs path: <image folder>")
            params["path"] = self.path_value(value["path"], (*keys, "path"), self.root)
            classes = value.get("classes")
            if classes is not None and not (
                isinstance(classes, list) and all(isinstance(c, str) for c in classes)
            ):
                raise self.fail((*keys, "classes"), "classes must list subfolder names in label order")
            params["classes"] = list(classes) if classes is not None else None
        elif set_type == "arrays":
            if "file" not in value:
                raise self.fail(keys, "an arrays set needs file: <path to the .npz file>")
            params["file"] = self.path_value(value["file"], (*keys, "file"), self.root)
            array_key = value.get("key", name)
            if not (isinstance(array_key, str) and re.fullmatch(r"[A-Za-z0-9_]{1,64}", array_key)):
                raise self.fail((*keys, "key"), f"key must be letters, digits or '_', got {array_key!r}")
            params["key"] = array_key
            digest = value.get("sha256")
            if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
                raise self.fail((*keys, "sha256"), f"sha256 must be 64 lowercase hex digits, got {digest!r}")
            params["sha256"] = digest
        else:  # shapes
            params["set"] = str(value.get("set", name))
            count = value.get("count")
            params["count"] = None if count is None else self.integer(count, (*keys, "count"))
            params["seed"] = self.integer(value.get("seed", 0), (*keys, "seed"), minimum=0, maximum=MAX_SEED)
            params["size"] = self.side(value.get("size", self.raw["image_size"]), (*keys, "size"))
            if params["count"] is not None and params["count"] * params["size"] ** 2 * 3 > MAX_SHAPES_PIXELS:
                raise self.fail(
                    (*keys, "count"),
                    f"{params['count']} shapes of {params['size']}x{params['size']} would take more than "
                    f"{MAX_SHAPES_PIXELS >> 30} GiB; give a smaller count or size",
                )
        return SetSpec(name=name, type=set_type, params=params, source=source, role=role)

    def subset(self, value: Any, keys: tuple[str, ...]) -> tuple[int, int] | None:
        if value is None:
            return None
        ok = isinstance(value, list) and len(value) == 2
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        if not ok or value[0] >= value[1]:
            raise self.fail(keys, f"subset must be [start, stop] with 0 <= start < stop, got {value!r}")
        return (value[0], value[1])
