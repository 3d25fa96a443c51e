"""DFB: fuse any foreground detector with the DFB net's background logit.

The paper (Eq. 7) adds ``S_b / T`` to logit-type foreground scores and ``log(S_b) / T`` to
softmax-type ones, with one fixed T (2.5). That fixed T ignores each detector's own scale: ODIN at
T_odin = 1000 spreads about 1e-4, so its fused score is the background score alone. The ``zscore``
fusion standardises both terms on ID-val outputs first, which makes it invariant to either score's
units. Both are offered; when one term is numerically negligible the wrapper warns instead of
hiding it, so a leaderboard never silently reports the background score under a detector's name.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.postprocessors.base import Outputs, Postprocessor

Fusion = Literal["paper", "zscore"]
Foreground = Literal["dfb", "classifier"]
FUSIONS: tuple[str, ...] = ("paper", "zscore")
FOREGROUNDS: tuple[str, ...] = ("dfb", "classifier")
DOMINANCE_RATIO = 0.01


class FusionDominanceWarning(UserWarning):
    """One fused term's spread is under 1% of the other's: the fusion is effectively one score."""


class DFBWrapper(Postprocessor):
    """``<base>_dfb`` / ``<base>_dfbz``: a base detector on the first K logits plus the background logit.

    Parameters
    ----------
    base:
        Any detector; it only ever sees the K class columns (and the K head rows).
    fusion:
        ``"paper"``: Eq. 7, ``S_f + S_b / T`` (logit-type base) or ``S_f + log(max(S_b, clamp_min)) / T``
        (softmax-type base). ``"zscore"``: ``(S_f - mu_f) / sd_f + bg_weight * (S_b - mu_b) / sd_b``
        with means and standard deviations over ID-val outputs (ID-train when no val is given).
    foreground:
        ``"dfb"``: the base scores the DFB net's first K logits (the paper: one network at
        deployment); ``"classifier"``: the base scores the K-class classifier's outputs and the
        background logit arrives in ``Outputs.bg_logit``. The wrapper checks that the outputs it is
        handed match this choice.
    fusion_temperature:
        T of Eq. 7 (``paper`` fusion only).
    clamp_min:
        The background logit can be <= 0, where the log of Eq. 7 is undefined; it is clamped to this
        value first. How many samples were clamped is kept in ``last_clamped_`` after each call.
    bg_weight:
        Weight of the standardised background term (``zscore`` fusion only).
    """

    requires_fit = True
    wiring = ("fusion", "foreground", "name")  # set by the registry from the _dfb / _dfbz suffix

    def __init__(
        self,
        base: Postprocessor,
        fusion: Fusion = "paper",
        foreground: Foreground = "dfb",
        fusion_temperature: float = 2.5,
        clamp_min: float = 1e-6,
        bg_weight: float = 1.0,
        name: str | None = None,
    ) -> None:
        if not isinstance(base, Postprocessor):
            raise TypeError(f"DFB base must be a Postprocessor, got {type(base).__name__}")
        if fusion not in FUSIONS:
            raise InputError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
        if foreground not in FOREGROUNDS:
            raise InputError(f"foreground must be one of {FOREGROUNDS}, got {foreground!r}")
        if not fusion_temperature > 0:
            raise InputError(f"fusion_temperature must be > 0, got {fusion_temperature}")
        if not clamp_min > 0:
            raise InputError(f"clamp_min must be > 0 (it is the floor before a log), got {clamp_min}")
        self.base = base
        self.fusion = fusion
        self.foreground = foreground
        self.fusion_temperature = float(fusion_temperature)
        self.clamp_min = float(clamp_min)
        self.bg_weight = float(bg_weight)
        self.name = name or f"{base.name}_{'dfb' if fusion == 'paper' else 'dfbz'}"  # type: ignore[misc]

    # The wrapper is whatever its base is, as far as callers need to know.
    @property
    def fusion_kind(self) -> str:  # type: ignore[override]
        return self.base.fusion_kind

    @property
    def requires_logits(self) -> bool:  # type: ignore[override]
        return self.base.requires_logits  # of the foreground: the background logit is always read

    @property
    def requires_features(self) -> bool:  # type: ignore[override]
        return self.base.requires_features

    @property
    def requires_head(self) -> bool:  # type: ignore[override]
        return self.base.requires_head

    @property
    def needs_network(self) -> bool:
        return self.base.needs_network

    def infer(self, network: object, images: object, num_classes: int | None = None) -> object:
        """Network-side step of a base that needs one (ODIN): forwarded with the K class columns."""
        infer = getattr(self.base, "infer", None)
        if infer is None:
            raise TypeError(f"{type(self.base).__name__} scores cached outputs and has no infer step")
        return infer(network, images, num_classes=num_classes)

    def _split(self, outputs: Outputs, role: str) -> tuple[Outputs, np.ndarray]:
        if self.foreground == "dfb" and not outputs.background:
            raise InputError(
                f"{self.name} (foreground='dfb') expects the DFB net's outputs with the background as the "
                f"last column for {role}; got outputs without one"
                + (
                    " (they carry bg_logit: use foreground='classifier')"
                    if outputs.bg_logit is not None
                    else ""
                )
            )
        if self.foreground == "classifier" and outputs.bg_logit is None:
            raise InputError(
                f"{self.name} (foreground='classifier') expects the classifier's outputs with the DFB net's "
                f"background logit in bg_logit for {role}"
            )
        return outputs.split_background()

    def fit(self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None) -> DFBWrapper:
        fg_train, bg_train = self._split(train, "train")
        fg_val, bg_val = self._split(val, "val") if val is not None else (None, None)
        fg_ood = self._split(ood_val, "ood_val")[0] if ood_val is not None else None
        self.base.fit(fg_train, fg_val, fg_ood)
        self.fitted_ = True
        if fg_val is None:
            fg_ref, bg_ref, self.stats_source_ = fg_train, bg_train, "train"
            if self.fusion == "zscore":
                warnings.warn(
                    f"{self.name}: no ID-val outputs given; z-score statistics come from ID-train outputs",
                    stacklevel=2,
                )
        else:
            fg_ref, bg_ref, self.stats_source_ = fg_val, bg_val, "val"
        fg_scores = np.asarray(self.base.score(fg_ref), dtype=np.float64)
        bg_scores = np.asarray(bg_ref, dtype=np.float64)
        if self.fusion == "zscore":
            self.fg_mean_, self.fg_std_ = _mean_std(fg_scores, f"{self.name} foreground score")
            self.bg_mean_, self.bg_std_ = _mean_std(bg_scores, f"{self.name} background logit")
        fg_term, bg_term, _ = self._terms(fg_scores, bg_scores)
        self._check_dominance(float(np.std(fg_term)), float(np.std(bg_term)))
        return self

    def _terms(self, fg_scores: np.ndarray, bg: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
        if self.fusion == "zscore":
            fg_term = (fg_scores - self.fg_mean_) / self.fg_std_
            return fg_term, self.bg_weight * (bg - self.bg_mean_) / self.bg_std_, 0
        if self.fusion_kind == "softmax":
            clamped = int(np.count_nonzero(bg < self.clamp_min))
            return fg_scores, np.log(np.maximum(bg, self.clamp_min)) / self.fusion_temperature, clamped
        return fg_scores, bg / self.fusion_temperature, 0

    def _check_dominance(self, fg_spread: float, bg_spread: float) -> None:
        self.term_spread_ = {"foreground": fg_spread, "background": bg_spread}
        self.dominant_term_: str | None = None
        larger = max(fg_spread, bg_spread)
        if larger > 0 and min(fg_spread, bg_spread) < DOMINANCE_RATIO * larger:
            self.dominant_term_ = "foreground" if fg_spread > bg_spread else "background"
            weak = "background" if self.dominant_term_ == "foreground" else "foreground"
            warnings.warn(
                f"{self.name}: the {weak} term's spread ({min(fg_spread, bg_spread):.3g}) is under "
                f"{DOMINANCE_RATIO:.0%} of the {self.dominant_term_} term's ({larger:.3g}) "
                f"on ID-{self.stats_source_} outputs, so the fused score is effectively the "
                f"{self.dominant_term_} score alone"
                + (" (consider the zscore fusion, *_dfbz)" if self.fusion == "paper" else ""),
                FusionDominanceWarning,
                stacklevel=3,
            )

    def fusion_terms(self, outputs: Outputs) -> tuple[np.ndarray, np.ndarray, int]:
        """(foreground term, background term, number of clamped samples); their sum is the score."""
        if not getattr(self, "fitted_", False):
            raise RuntimeError(f"{self.name} must be fitted on ID training outputs before scoring")
        fg, bg = self._split(outputs, "scoring")
        fg_scores = np.asarray(self.base.score(fg), dtype=np.float64)
        return self._terms(fg_scores, np.asarray(bg, dtype=np.float64))

    def score(self, outputs: Outputs) -> np.ndarray:
        fg_term, bg_term, clamped = self.fusion_terms(outputs)
        self.last_clamped_ = clamped
        return fg_term + bg_term

    def params(self) -> dict[str, object]:
        own = {
            "fusion": self.fusion,
            "foreground": self.foreground,
            "fusion_temperature": self.fusion_temperature,
            "clamp_min": self.clamp_min,
            "bg_weight": self.bg_weight,
        }
        own.update({f"base.{key}": value for key, value in self.base.params().items()})
        return own


def _mean_std(values: np.ndarray, what: str) -> tuple[float, float]:
    mean, std = float(np.mean(values)), float(np.std(values))
    if not np.isfinite(mean) or not np.isfinite(std):
        raise InputError(f"{what} has non-finite values on the reference outputs")
    if std == 0.0:
        warnings.warn(f"{what} is constant on the reference outputs; its z-score uses std 1", stacklevel=3)
        std = 1.0
    return mean, std
