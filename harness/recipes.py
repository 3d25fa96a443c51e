"""Training recipes (``configs/recipes/*.yaml``) as typed, validated objects."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dfb_ood.errors import InputError
from dfb_ood.harness.config import config_names, configs_root
from dfb_ood.harness.names import name_problem
from dfb_ood.harness.yaml_reader import read_yaml
from dfb_ood.suggest import unknown_name


@dataclass(frozen=True)
class CamSettings:
    """How stage 2 turns the classifier's class activation maps into pseudo masks."""

    scales: tuple[float, ...] = (1.0, 0.5, 1.5, 2.0)
    flip: bool = True
    sigma: float = 0.0
    theta: float = 0.5
    target: str = "label"  # "label" (the paper) or "prediction" (the DFB release)
    # How the summed CAM is scaled to [0, 1] before the threshold: "max" divides by its maximum
    # (the DFB release); "minmax" subtracts its minimum first, which keeps masks meaningful on a
    # coarse (4x4) feature map, where the rectified class map is rarely zero anywhere.
    normalise: str = "max"


@dataclass(frozen=True)
class Recipe:
    """One training schedule, shared by the classifier stage and the dense stage."""

    name: str
    description: str = ""
    network: str = "rv2_tiny"
    pretrained: bool = False
    # The network builder's options, e.g. {output_stride: 16, freeze_bn: true} for effnet_lite*
    # (`harness list networks`); recorded in every checkpoint so a reload builds the same function.
    network_options: dict[str, Any] = field(default_factory=dict)
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    batch_size: int = 128
    steps: int = 1000
    warmup_steps: int = 0
    lr_drops: tuple[float, ...] = (0.3, 0.6, 0.9)
    lr_drop_factor: float = 0.1
    mixup_alpha: float = 0.0
    resize: int | None = None
    pad: int = 0
    crop: int | None = None
    flip: bool = True
    eval_size: int | None = None
    dense_scale: tuple[float, float] = (0.5, 2.0)
    dense_flip: bool = True
    dense_init: str = "classifier"  # "classifier" (trained K-class weights) or "pretrained" (the paper)
    # What trains: "all" (every weight, images augmented per step), or on cached features: "head"
    # (backbone frozen, linear heads only) or "tail" (the last stage and the heads; the earlier
    # stages frozen and cached). See harness.cached.
    trainable: str = "all"
    cam: CamSettings = field(default_factory=CamSettings)
    checkpoint_every_s: float = 300.0

    def lr_at(self, step: int) -> float:
        """Learning rate at a 0-based step: linear warm-up, then a drop at each fraction of ``steps``."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        drops = sum(step >= round(fraction * self.steps) for fraction in self.lr_drops)
        return self.lr * self.lr_drop_factor**drops

    def as_dict(self) -> dict[str, Any]:
        """Plain data for run.json and settings hashes."""
        return asdict(self)

    def with_overrides(self, **changes: Any) -> Recipe:
        """A copy with some fields replaced (e.g. ``steps`` for a quick test run)."""
        unknown = set(changes) - set(self.__dataclass_fields__)
        if unknown:
            raise InputError(f"unknown recipe field(s) {sorted(unknown)}")
        data = self.as_dict()
        data.update(changes)
        data["cam"] = CamSettings(**data["cam"]) if isinstance(data["cam"], dict) else data["cam"]
        return Recipe(**data)


TRAINABLE = ("all", "head", "tail")


def _cached_problems(recipe: Recipe) -> list[str]:
    """Settings a cached-feature recipe cannot honour: its images are seen once, not re-augmented.

    Only the horizontal flip survives caching (the flipped images' features are cached too), so
    crops, resizes, padding, mixup and dense rescaling are refused rather than silently ignored.
    CAMs are not training: ``cam.scales: [1.0]`` takes them from the cached maps, any other scales
    from passes over the images (``harness.masks.compute_cams``), at one backbone pass per scale.
    """
    problems = []
    why = f"trainable: {recipe.trainable} trains on cached features, which cannot be"
    for name in ("resize", "crop"):
        if getattr(recipe, name) is not None:
            problems.append(f"{why} resized or cropped per step: remove train_transform.{name}")
    if recipe.pad:
        problems.append(f"{why} padded per step: remove train_transform.pad")
    if recipe.mixup_alpha:
        problems.append(f"{why} mixed up: set mixup_alpha: 0")
    if tuple(recipe.dense_scale) != (1.0, 1.0):
        problems.append(f"{why} rescaled per step: set dense.scale: [1.0, 1.0]")
    if tuple(recipe.cam.scales) == (1.0,) and recipe.cam.flip != recipe.flip:
        problems.append(
            "cam.flip must equal train_transform.flip: CAMs at cam.scales [1.0] come from the cached "
            "features, whose mirror is cached or not"
        )
    if recipe.dense_flip != recipe.flip:
        problems.append("dense.flip must equal train_transform.flip: both stages read one feature cache")
    return problems


def available_recipes() -> list[str]:
    """Names of the shipped recipes."""
    return config_names("recipes")


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A shipped recipe by name, or a recipe YAML by path."""
    path = Path(name_or_path)
    if not path.suffix:
        # a shipped name is one plain file name: "../x" never reaches outside configs/recipes/
        path = configs_root() / "recipes" / f"{name_or_path}.yaml"
        if name_problem(str(name_or_path)) is not None or not path.is_file():
            known = available_recipes()
            raise InputError(unknown_name("recipe", str(name_or_path), known, "harness list recipes"))
    raw = read_yaml(path).mapping()
    if not raw:
        raise InputError(
            f"{path}: the recipe is empty; copy a shipped one (`harness list recipes`) and edit it"
        )
    return _parse(raw, path)


def _parse(raw: dict[str, Any], path: Path) -> Recipe:
    data = dict(raw)
    known_top = {
        "name",
        "description",
        "network",
        "network_options",
        "pretrained",
        "optimizer",
        "batch_size",
        "steps",
        "warmup_steps",
        "lr_drops",
        "lr_drop_factor",
        "mixup_alpha",
        "train_transform",
        "eval_size",
        "dense",
        "cam",
        "checkpoint_every_s",
        "trainable",
    }
    unknown = set(data) - known_top
    if unknown:
        raise InputError(f"{path}: unknown recipe key(s) {sorted(unknown)}; known: {sorted(known_top)}")
    for section in ("optimizer", "train_transform", "dense", "cam", "network_options"):
        if not isinstance(data.get(section) or {}, dict):
            raise InputError(f"{path}: `{section}` must be a mapping of settings, got {data[section]!r}")
    fields: dict[str, Any] = {
        k: data[k] for k in known_top & set(data) if k not in ("optimizer", "train_transform", "dense", "cam")
    }
    if "network_options" in fields:
        fields["network_options"] = dict(fields["network_options"] or {})
    optimizer = data.get("optimizer") or {}
    for key in ("lr", "momentum", "weight_decay", "nesterov"):
        if key in optimizer:
            fields[key] = optimizer[key]
    transform = data.get("train_transform") or {}
    for key in ("resize", "pad", "crop", "flip"):
        if key in transform:
            fields[key] = transform[key]
    dense = data.get("dense") or {}
    if "scale" in dense:
        fields["dense_scale"] = _numbers(dense["scale"], "dense.scale", path)
    if "flip" in dense:
        fields["dense_flip"] = bool(dense["flip"])
    if "init" in dense:
        fields["dense_init"] = str(dense["init"])
    if "cam" in data:
        cam = dict(data["cam"])
        if "scales" in cam:
            cam["scales"] = _numbers(cam["scales"], "cam.scales", path)
        _check_types(cam, CamSettings, path, prefix="cam.")
        try:
            fields["cam"] = CamSettings(**cam)
        except TypeError as error:
            raise InputError(f"{path}: bad cam settings: {error}") from None
    if "lr_drops" in fields:
        fields["lr_drops"] = _numbers(fields["lr_drops"], "lr_drops", path)
    _check_types(fields, Recipe, path)
    fields.setdefault("name", path.stem)
    recipe = Recipe(**fields)
    _validate(recipe, path)
    return recipe


def _numbers(value: Any, name: str, path: Path) -> tuple[float, ...]:
    """A YAML list of numbers as floats, or one error naming the key."""
    if not isinstance(value, (list, tuple)) or not all(_is_number(v) for v in value):
        raise InputError(f"{path}: `{name}` must be a list of numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# What each annotation of Recipe / CamSettings accepts from YAML (ints are accepted for floats).
_ACCEPTS = {
    "str": lambda v: isinstance(v, str),
    "bool": lambda v: isinstance(v, bool),
    "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "float": _is_number,
    "int | None": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)),
}
_KIND_WORDS = {"str": "text", "bool": "true or false", "int": "a whole number", "float": "a number",
               "int | None": "a whole number or null"}  # fmt: skip


# Recipe fields that live in a YAML section under another name.
_YAML_KEYS = {
    **{name: f"optimizer.{name}" for name in ("lr", "momentum", "weight_decay", "nesterov")},
    **{name: f"train_transform.{name}" for name in ("resize", "pad", "crop", "flip")},
    "dense_flip": "dense.flip",
    "dense_init": "dense.init",
}


def _check_types(values: dict[str, Any], schema: type, path: Path, prefix: str = "") -> None:
    """Every scalar setting has the type its field declares (``lr: fast`` is refused by name)."""
    annotations = {name: str(f.type) for name, f in schema.__dataclass_fields__.items()}
    for name, value in values.items():
        accepts = _ACCEPTS.get(annotations.get(name, ""))
        if accepts is not None and not accepts(value):
            kind = _KIND_WORDS[annotations[name]]
            key = prefix + _YAML_KEYS.get(name, name)
            raise InputError(f"{path}: `{key}` must be {kind}, got {value!r}")


def _validate(recipe: Recipe, path: Path) -> None:
    problems = []
    if recipe.steps < 1:
        problems.append(f"steps must be >= 1, got {recipe.steps}")
    if recipe.batch_size < 1:
        problems.append(f"batch_size must be >= 1, got {recipe.batch_size}")
    if not recipe.lr > 0:
        problems.append(f"lr must be > 0, got {recipe.lr}")
    if any(not 0 < f < 1 for f in recipe.lr_drops):
        problems.append(f"lr_drops are fractions of the steps in (0, 1), got {recipe.lr_drops}")
    if recipe.cam.target not in ("label", "prediction"):
        problems.append(f"cam.target must be 'label' or 'prediction', got {recipe.cam.target!r}")
    if not 0 < recipe.cam.theta < 1:
        problems.append(f"cam.theta must lie in (0, 1), got {recipe.cam.theta}")
    if recipe.cam.normalise not in ("max", "minmax"):
        problems.append(f"cam.normalise must be 'max' or 'minmax', got {recipe.cam.normalise!r}")
    if recipe.trainable not in TRAINABLE:
        problems.append(f"trainable must be one of {', '.join(TRAINABLE)}, got {recipe.trainable!r}")
    elif recipe.trainable != "all":
        problems += _cached_problems(recipe)
    if recipe.dense_init not in ("classifier", "pretrained"):
        problems.append(f"dense.init must be 'classifier' or 'pretrained', got {recipe.dense_init!r}")
    low, high = recipe.dense_scale
    if not 0 < low <= high:
        problems.append(f"dense.scale must be [low, high] with 0 < low <= high, got {recipe.dense_scale}")
    if problems:
        raise InputError(f"{path}: " + "; ".join(problems))
