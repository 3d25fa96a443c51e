"""The contract every detector follows: cached network outputs in, one score per sample out.

Detectors work on arrays, never on data loaders, so that a leaderboard of many detectors costs
one forward pass per image. Convention everywhere in this project: a higher score means "more
in-distribution".
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, ClassVar, Literal

import numpy as np

from dfb_ood.errors import InputError

FusionKind = Literal["softmax", "logit"]


def _as_float_matrix(name: str, value: object, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    if not np.issubdtype(array.dtype, np.floating):
        array = array.astype(np.float64)
    if array.ndim != ndim:
        raise InputError(f"Outputs.{name} must have {ndim} dimension(s), got shape {array.shape}")
    if not np.all(np.isfinite(array)):
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        raise InputError(f"Outputs.{name} holds {bad} NaN or infinite value(s); check the network's outputs")
    return array


@dataclass(frozen=True)
class Outputs:
    """What one network produced for one dataset, in dataset order.

    ``logits`` is (N, C). ``features`` (N, D) is the pooled, pre-head feature; ``weight`` (C, D) and
    ``bias`` (C,) are the head, so that ``features @ weight.T + bias == logits`` for linear heads.
    ``labels`` (N,) holds class indices (-1 for OOD samples) when known.

    A DFB network's outputs carry ``background=True``: their last logit column (and the last head
    row) is the ID-background class K. When a DFB detector takes its foreground score from the
    plain K-class classifier instead, the pipeline passes the classifier's outputs with the DFB
    net's background logit for the same samples in ``bg_logit`` (N,).
    """

    logits: np.ndarray
    features: np.ndarray | None = None
    labels: np.ndarray | None = None
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    background: bool = False
    bg_logit: np.ndarray | None = None

    def __post_init__(self) -> None:
        logits = _as_float_matrix("logits", self.logits, 2)
        if logits.shape[0] == 0:
            raise InputError("Outputs.logits is empty: the dataset produced no samples")
        n, c = logits.shape
        object.__setattr__(self, "logits", logits)
        if self.features is not None:
            features = _as_float_matrix("features", self.features, 2)
            if features.shape[0] != n:
                raise InputError(f"Outputs.features has {features.shape[0]} rows but logits has {n}")
            object.__setattr__(self, "features", features)
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if labels.shape != (n,):
                raise InputError(f"Outputs.labels must have shape ({n},), got {labels.shape}")
            object.__setattr__(self, "labels", labels.astype(np.int64))
        if (self.weight is None) != (self.bias is None):
            raise InputError("Outputs.weight and Outputs.bias must be given together")
        if self.weight is not None:
            weight = _as_float_matrix("weight", self.weight, 2)
            bias = _as_float_matrix("bias", self.bias, 1)
            if weight.shape[0] != c or bias.shape != (c,):
                raise InputError(
                    f"head shapes weight {weight.shape} / bias {bias.shape} do not match {c} logit columns"
                )
            if self.features is not None and weight.shape[1] != self.features.shape[1]:
                raise InputError(
                    f"head weight has {weight.shape[1]} inputs but features have {self.features.shape[1]}"
                )
            object.__setattr__(self, "weight", weight)
            object.__setattr__(self, "bias", bias)
        if self.bg_logit is not None:
            if self.background:
                raise InputError("Outputs carry a background column and a separate bg_logit; give one")
            bg_logit = _as_float_matrix("bg_logit", self.bg_logit, 1)
            if bg_logit.shape != (n,):
                raise InputError(f"Outputs.bg_logit must have shape ({n},), got {bg_logit.shape}")
            object.__setattr__(self, "bg_logit", bg_logit)
        if self.background and c < 2:
            raise InputError("Outputs with a background column need at least one class column besides it")

    def __len__(self) -> int:
        return int(self.logits.shape[0])

    @property
    def num_classes(self) -> int:
        """K, the number of ID classes (the background column does not count)."""
        return int(self.logits.shape[1]) - int(self.background)

    @property
    def has_background(self) -> bool:
        """Whether a background logit is available, as a column or as ``bg_logit``."""
        return self.background or self.bg_logit is not None

    def split_background(self) -> tuple[Outputs, np.ndarray]:
        """Return (foreground outputs over the K classes only, background logit (N,)).

        The foreground part never contains the background column or its head row, so a base
        detector fed with it cannot see the background logit.
        """
        if self.bg_logit is not None:
            return replace(self, bg_logit=None), self.bg_logit
        if not self.background:
            raise InputError(
                "these outputs have no background logit: DFB detectors need the DFB network's outputs "
                "(background=True) or a classifier's outputs with bg_logit set"
            )
        k = self.num_classes
        foreground = Outputs(
            logits=self.logits[:, :k],
            features=self.features,
            labels=self.labels,
            weight=None if self.weight is None else self.weight[:k],
            bias=None if self.bias is None else self.bias[:k],
        )
        return foreground, self.logits[:, k]


class Postprocessor:
    """Base class of all detectors (scikit-learn style: ``fit`` returns self, learned state ends in ``_``).

    Class attributes declare what a detector is, so callers never guess:
    ``fusion_kind`` says how DFB fuses it with the background score (Eq. 7: ``softmax`` scores get
    ``log(S_b) / T``, ``logit`` scores get ``S_b / T``); ``requires_logits`` / ``requires_features``
    / ``requires_head`` say which Outputs fields it reads (``logits`` are always present; a detector
    that recomputes them from the features and the head, or reads the features alone, says False);
    ``needs_network`` says the pipeline must produce its inputs with :meth:`infer` instead of a
    plain forward pass.

    The constructor is the one source of a detector's default hyper-parameters: every keyword
    argument with a default is one (:meth:`default_hyperparameters`), except those ``wiring``
    names, which the pipeline or the registry sets (ODIN's ``input_std``, the DFB wrapper's base).
    """

    name: ClassVar[str] = ""
    fusion_kind: ClassVar[FusionKind] = "logit"
    requires_logits: ClassVar[bool] = True
    requires_features: ClassVar[bool] = False
    requires_head: ClassVar[bool] = False
    requires_fit: ClassVar[bool] = False
    #: Constructor arguments that are not hyper-parameters: set by the pipeline or the registry.
    wiring: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def default_hyperparameters(cls) -> dict[str, Any]:
        """The constructor's defaults of its hyper-parameters, in signature order (never ``wiring``)."""
        parameters = inspect.signature(cls.__init__).parameters.values()
        return {
            p.name: p.default
            for p in parameters
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
            and p.default is not p.empty
            and p.name not in cls.wiring
        }

    @property
    def needs_network(self) -> bool:
        """Whether scoring needs a forward pass of its own (ODIN with a non-zero perturbation)."""
        return False

    def fit(
        self, train: Outputs, val: Outputs | None = None, ood_val: Outputs | None = None
    ) -> Postprocessor:
        """Learn whatever the detector needs from ID training outputs. The default learns nothing."""
        self._check(train)
        self.fitted_ = True
        return self

    def score(self, outputs: Outputs) -> np.ndarray:
        """Scores (N,), higher = more in-distribution."""
        self._check(outputs)
        if self.requires_fit and not getattr(self, "fitted_", False):
            raise RuntimeError(f"{type(self).__name__} must be fitted on ID training outputs before scoring")
        return self._score(outputs)

    def _score(self, outputs: Outputs) -> np.ndarray:
        raise NotImplementedError

    def _check(self, outputs: Outputs) -> None:
        if outputs.background:
            raise InputError(
                f"{type(self).__name__} got outputs with a background column; use its DFB variant "
                f"('{self.name}_dfb') or split the background off first"
            )
        if self.requires_features and outputs.features is None:
            raise InputError(f"{type(self).__name__} needs pooled features in Outputs.features")
        if self.requires_head and outputs.weight is None:
            raise InputError(f"{type(self).__name__} needs the head's weight and bias in Outputs")

    def params(self) -> dict[str, object]:
        """Constructor hyper-parameters and their current values, for run records and tables."""
        return {k: v for k, v in vars(self).items() if not k.endswith("_") and not k.startswith("_")}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class NetworkPassDetector(Postprocessor):
    """A detector that needs its own pass through the network (ODIN's perturbed input, RankFeat's
    edited feature map): ``infer(network, images)`` gives the logits it scores, and this class adds
    scoring whole loaders with them."""

    def infer(self, network: object, images: object) -> object:  # overridden: torch in, logits out
        """The logits of this detector's own pass over ``images`` (a torch batch)."""
        raise NotImplementedError

    def score_batches(self, network: object, batches: Iterable[object]) -> np.ndarray:
        """:meth:`infer` then :meth:`score` over batches (``(images, labels, ...)`` tuples use the images).

        Meant for the plain K-class classifier; DFB networks go through the pipeline, which splits
        the background off before scoring.
        """
        parts = []
        for batch in batches:
            images = batch[0] if isinstance(batch, (tuple, list)) else batch
            parts.append(self.infer(network, images).double().cpu().numpy())  # type: ignore[attr-defined]
        if not parts:
            raise InputError("score_batches got no batches")
        return self.score(Outputs(logits=np.concatenate(parts, axis=0)))
