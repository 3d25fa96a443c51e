"""Energy score (EBO, Liu et al. 2020): the negative free energy of the logits."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from dfb_ood.errors import InputError
from dfb_ood.postprocessors._numerics import logsumexp
from dfb_ood.postprocessors.base import FusionKind, Outputs, Postprocessor


class Energy(Postprocessor):
    """Score = ``T * logsumexp(logits / T)`` (the negative energy), T = 1 as in OpenOOD.

    Unbounded and on the logits' scale, hence ``fusion_kind = "logit"``. Note for registry users:
    the DFB wrapper also owns a ``temperature`` argument, so ``create("energy_dfb", temperature=...)``
    sets the fusion temperature, not this one.
    """

    name: ClassVar[str] = "energy"
    fusion_kind: ClassVar[FusionKind] = "logit"

    def __init__(self, temperature: float = 1.0) -> None:
        if not temperature > 0:
            raise InputError(f"Energy temperature must be positive, got {temperature}")
        self.temperature = float(temperature)

    def _score(self, outputs: Outputs) -> np.ndarray:
        return logsumexp(outputs.logits, self.temperature)
