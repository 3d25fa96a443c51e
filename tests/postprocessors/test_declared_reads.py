"""Every base detector reads exactly the Outputs fields it declares.

``requires_logits`` / ``requires_features`` / ``requires_head`` drive `harness list`'s grouping and
the README's table, so they are checked against behaviour: a field a detector does not declare can
be dropped (features, head) or replaced by noise (logits, which are always present) without
changing a single score, and a field it declares changes the scores when it changes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from dfb_ood.postprocessors.base import Outputs
from dfb_ood.postprocessors.registry import BASES, create

K, D, N = 4, 16, 240
#: Settings that fit the small training set below (the defaults assume thousands of samples).
SMALL = {
    "knn": {"k": 5},
    "nnguide": {"k": 5, "bank_fraction": 1.0},
    "vim": {"dim": 8},
    "residual": {"dim": 8},
}


def _outputs(
    rng: np.random.Generator, n: int, centres: np.ndarray, weight: np.ndarray, bias: np.ndarray
) -> Outputs:
    labels = np.arange(n) % K
    features = np.abs(centres[labels] + 0.5 * rng.normal(size=(n, D)))
    return Outputs(
        logits=features @ weight.T + bias, features=features, labels=labels, weight=weight, bias=bias
    )


@pytest.fixture(scope="module")
def sets() -> dict[str, Outputs]:
    rng = np.random.default_rng(3)
    centres = np.abs(rng.normal(size=(K, D))) * 2.0  # non-negative pooled features, as after a ReLU
    weight, bias = centres - centres.mean(axis=0) + 0.3 * rng.normal(size=(K, D)), rng.normal(size=K)
    return {
        name: _outputs(rng, n, centres, weight, bias) for name, n in (("train", N), ("val", 80), ("test", 60))
    }


def _fit_and_score(name: str, sets: dict[str, Outputs], change) -> np.ndarray:  # noqa: ANN001
    """Fit on the changed train/val sets (``change``: Outputs -> Outputs), score the changed test set."""
    changed = {key: change(value) for key, value in sets.items()}
    detector = create(name, **SMALL.get(name, {}))
    detector.fit(changed["train"], changed["val"], changed["val"])
    return detector.score(changed["test"])


def _noisy_logits(outputs: Outputs) -> Outputs:
    rng = np.random.default_rng(len(outputs))
    return replace(outputs, logits=outputs.logits + rng.normal(scale=3.0, size=outputs.logits.shape))


def _no_features(outputs: Outputs) -> Outputs:
    return replace(outputs, features=None)


def _no_head(outputs: Outputs) -> Outputs:
    return replace(outputs, weight=None, bias=None)


def _other_features(outputs: Outputs) -> Outputs:
    rng = np.random.default_rng(len(outputs) + 1)
    assert outputs.features is not None
    return replace(outputs, features=outputs.features * rng.uniform(0.2, 3.0, size=outputs.features.shape))


def _other_head(outputs: Outputs) -> Outputs:
    assert outputs.weight is not None and outputs.bias is not None
    rng = np.random.default_rng(5)
    return replace(outputs, weight=outputs.weight + rng.normal(size=outputs.weight.shape), bias=-outputs.bias)


@pytest.mark.parametrize("name", list(BASES))
def test_undeclared_fields_are_not_read(name: str, sets: dict[str, Outputs]) -> None:
    cls = BASES[name]
    reference = _fit_and_score(name, sets, lambda o: o)
    if not cls.requires_logits:
        np.testing.assert_allclose(_fit_and_score(name, sets, _noisy_logits), reference, rtol=1e-12, atol=0)
    if not cls.requires_features:
        np.testing.assert_allclose(_fit_and_score(name, sets, _no_features), reference, rtol=1e-12, atol=0)
    if not cls.requires_head:
        np.testing.assert_allclose(_fit_and_score(name, sets, _no_head), reference, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", list(BASES))
def test_declared_fields_are_read(name: str, sets: dict[str, Outputs]) -> None:
    cls = BASES[name]
    reference = _fit_and_score(name, sets, lambda o: o)
    changes = {"logits": _noisy_logits, "features": _other_features, "head": _other_head}
    declared = {"logits": cls.requires_logits, "features": cls.requires_features, "head": cls.requires_head}
    for field, change in changes.items():
        if declared[field]:
            assert not np.allclose(_fit_and_score(name, sets, change), reference), (
                f"{name} ignores its {field}"
            )
