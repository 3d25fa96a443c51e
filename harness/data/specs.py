"""What a benchmark is once its YAML is read: its sets, its classes, its transforms.

The model alone, apart from the YAML schema that builds it (:mod:`harness.data.schema`), so that
the datasets, caches and checks that take a :class:`Benchmark` need not load the parser, and so
that the limits the schema enforces (sizes, seeds) are stated once next to what they bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dfb_ood.errors import InputError, UnknownNameError
from dfb_ood.suggest import suggestion

SET_TYPES = ("imglist", "torchvision", "folder", "shapes", "arrays")
ROLES = ("id_train", "id_val", "id_test", "ood_val", "near", "far")
RECIPES = ("paper", "cifar", "test")
RESERVED_SET_NAMES = ("train", "val", "test", "ood_val")

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
        raise InputError(f"{option}: a seed is a whole number from 0 to {MAX_SEED} (2**32-1), got {value!r}")
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
        raise InputError(f"cannot draw {count} classes out of {of}: the count must be in 1..{of}")
    if seed < 0:
        raise InputError(f"the class-draw seed must be >= 0, got {seed}")
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
        known = [s.name for s in self.sets()]
        raise UnknownNameError(f"benchmark {self.name!r} has no set {name!r}; {suggestion(name, known)}")

    @property
    def test_resize(self) -> int | tuple[int, int]:
        """The test-time resize: an int resizes the shorter side, a pair is an exact (h, w)."""
        return self.transforms["test"]["resize"]

    @property
    def test_crop(self) -> int:
        """The side of the centre crop the network sees at test time (= ``image_size``)."""
        return int(self.transforms["test"]["crop"])
