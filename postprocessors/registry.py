"""One registry from detector names to constructors, DFB variants included.

Every base detector ``<base>`` also exists as ``<base>_dfb`` (Eq. 7 fusion, foreground from the DFB
net, the paper's setting) and ``<base>_dfbz`` (z-score fusion, foreground from the DFB net). A single
table avoids OpenOOD's fault of two registries that drift apart.

The same reasoning puts a detector's facts in its class: ``fusion_kind`` is a class attribute and
its default hyper-parameters are its constructor's defaults (:func:`default_hyperparameters`),
since a caller of :func:`create` gets those whatever a YAML file says, and this package reads no
files. ``configs/postprocessors/<name>.yaml`` owns only what no class knows: the ``search`` grid
and the prose on where the defaults come from; its ``defaults`` are a copy that a test holds equal.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

from dfb_ood.errors import InputError
from dfb_ood.postprocessors.ash import ASHB, ASHP, ASHS
from dfb_ood.postprocessors.base import Postprocessor
from dfb_ood.postprocessors.bg import BackgroundScore
from dfb_ood.postprocessors.dfb import DFBWrapper
from dfb_ood.postprocessors.dice import DICE
from dfb_ood.postprocessors.energy import Energy
from dfb_ood.postprocessors.fdbd import FDBD
from dfb_ood.postprocessors.gen import GEN
from dfb_ood.postprocessors.gradnorm import GradNorm
from dfb_ood.postprocessors.klm import KLMatching
from dfb_ood.postprocessors.knn import KNN
from dfb_ood.postprocessors.mds import Mahalanobis
from dfb_ood.postprocessors.mls import MaxLogit
from dfb_ood.postprocessors.msp import MSP
from dfb_ood.postprocessors.nnguide import NNGuide
from dfb_ood.postprocessors.odin import ODIN
from dfb_ood.postprocessors.rankfeat import RankFeat
from dfb_ood.postprocessors.react import ReAct
from dfb_ood.postprocessors.relation import Relation
from dfb_ood.postprocessors.residual import Residual
from dfb_ood.postprocessors.rmds import RelativeMahalanobis
from dfb_ood.postprocessors.scale import SCALE
from dfb_ood.postprocessors.she import SHE
from dfb_ood.postprocessors.tempscale import TemperatureScaling
from dfb_ood.postprocessors.vim import ViM
from dfb_ood.suggest import unknown_name

BASES: dict[str, type[Postprocessor]] = {
    "msp": MSP,
    "odin": ODIN,
    "energy": Energy,
    "vim": ViM,
    "mls": MaxLogit,
    "klm": KLMatching,
    "react": ReAct,
    "mds": Mahalanobis,
    "knn": KNN,
    "gen": GEN,
    "ash_p": ASHP,
    "ash_b": ASHB,
    "ash_s": ASHS,
    "scale": SCALE,
    "dice": DICE,
    "tempscale": TemperatureScaling,
    "gradnorm": GradNorm,
    "rmds": RelativeMahalanobis,
    "she": SHE,
    "fdbd": FDBD,
    "residual": Residual,
    "nnguide": NNGuide,
    "relation": Relation,
    "rankfeat": RankFeat,
}
ALIASES: dict[str, str] = {
    "ebo": "energy",
    "maxlogit": "mls",
    "mahalanobis": "mds",
    "ash": "ash_b",  # OpenOOD v1.5's ASH is ASH-B
    "temperature_scaling": "tempscale",
}
DFB_SUFFIXES: dict[str, dict[str, str]] = {
    "_dfb": {"fusion": "paper", "foreground": "dfb"},
    "_dfbz": {"fusion": "zscore", "foreground": "dfb"},
}
STANDALONE: dict[str, type[Postprocessor]] = {"bg": BackgroundScore}

_WRAPPER_PARAMS = frozenset(inspect.signature(DFBWrapper.__init__).parameters) - {"self", "base"}


def canonical_name(name: str) -> str:
    """Resolve aliases (``ebo`` -> ``energy``, ``ebo_dfb`` -> ``energy_dfb``) and check the name exists."""
    key = name.strip().lower()
    for suffix in DFB_SUFFIXES:
        if key.endswith(suffix):
            base = key[: -len(suffix)]
            return ALIASES.get(base, base) + suffix if ALIASES.get(base, base) in BASES else _unknown(name)
    key = ALIASES.get(key, key)
    if key in BASES or key in STANDALONE:
        return key
    return _unknown(name)


def _unknown(name: str) -> str:
    known = available(include_aliases=True)
    raise InputError(unknown_name("detector", name, known, "harness list detectors"))


def split_variant(name: str) -> tuple[str, str | None]:
    """``'vim_dfbz'`` -> ``('vim', '_dfbz')``; ``'msp'`` -> ``('msp', None)``."""
    key = canonical_name(name)
    for suffix in DFB_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)], suffix
    return key, None


def available(include_aliases: bool = False) -> list[str]:
    """Every registered detector name, bases first, then their DFB variants."""
    names = list(BASES) + list(STANDALONE)
    names += [base + suffix for suffix in DFB_SUFFIXES for base in BASES]
    if include_aliases:
        names += list(ALIASES)
    return names


def detector_class(name: str) -> type[Postprocessor]:
    """The class behind a name (DFBWrapper for every DFB variant)."""
    base, suffix = split_variant(name)
    if suffix is not None:
        return DFBWrapper
    return BASES.get(base) or STANDALONE[base]


def default_hyperparameters(name: str) -> dict[str, object]:
    """A detector's default hyper-parameters, read from its constructor (their one source).

    The base's, followed for a DFB variant by the wrapper's (``fusion_temperature``, ``clamp_min``,
    ``bg_weight``): the keyword arguments :func:`create` gets when none is overridden.
    """
    base, suffix = split_variant(name)
    defaults = (BASES.get(base) or STANDALONE[base]).default_hyperparameters()
    if suffix is not None:
        defaults.update(DFBWrapper.default_hyperparameters())
    return defaults


def create(name: str, **kwargs: object) -> Postprocessor:
    """Build a detector by name.

    For DFB variants, keyword arguments that belong to the wrapper (``fusion_temperature``, ``fusion``,
    ``foreground``, ``clamp_min``, ``bg_weight``) configure the fusion; all others go to the base.
    """
    base, suffix = split_variant(name)
    if suffix is None:
        factory: Callable[..., Postprocessor] = BASES.get(base) or STANDALONE[base]
        return factory(**kwargs)
    wrapper_kwargs = dict(DFB_SUFFIXES[suffix])
    base_kwargs: dict[str, object] = {}
    for key, value in kwargs.items():
        (wrapper_kwargs if key in _WRAPPER_PARAMS else base_kwargs)[key] = value
    return DFBWrapper(BASES[base](**base_kwargs), name=base + suffix, **wrapper_kwargs)
