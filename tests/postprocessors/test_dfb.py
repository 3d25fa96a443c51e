"""DFB fusion: hand-computed values, isolation of the background logit, invariances, warnings."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from dfb_ood.postprocessors.base import Outputs, Postprocessor
from dfb_ood.postprocessors.bg import BackgroundScore
from dfb_ood.postprocessors.dfb import DFBWrapper, FusionDominanceWarning
from dfb_ood.postprocessors.registry import create


class SpyBase(Postprocessor):
    """Scores ``a * logits[:, 0] + c`` and records the width of every logits matrix it is shown."""

    name = "spy"

    def __init__(self, kind: str = "logit", a: float = 1.0, c: float = 0.0) -> None:
        self.kind = kind
        self.a = a
        self.c = c
        self.seen_widths: list[int] = []
        self.seen_head_rows: list[int] = []

    @property
    def fusion_kind(self) -> str:  # type: ignore[override]
        return self.kind

    def fit(self, train, val=None, ood_val=None):
        self._record(train)
        return super().fit(train, val, ood_val)

    def _record(self, outputs: Outputs) -> None:
        self.seen_widths.append(outputs.logits.shape[1])
        if outputs.weight is not None:
            self.seen_head_rows.append(outputs.weight.shape[0])

    def _score(self, outputs: Outputs) -> np.ndarray:
        self._record(outputs)
        return self.a * outputs.logits[:, 0] + self.c


def dfb_outputs(logits: list[list[float]]) -> Outputs:
    arr = np.asarray(logits, dtype=np.float64)
    weight = np.arange(arr.shape[1] * 2, dtype=np.float64).reshape(arr.shape[1], 2)
    return Outputs(
        logits=arr,
        features=np.ones((arr.shape[0], 2)),
        weight=weight,
        bias=np.zeros(arr.shape[1]),
        background=True,
    )


LOGITS = [[2.0, 1.0, 0.5], [0.0, 1.0, 3.0], [1.0, 1.0, -1.0]]  # K = 2, background = last column


def test_paper_fusion_logit_type_hand_values():
    out = dfb_outputs(LOGITS)
    wrapper = DFBWrapper(SpyBase("logit"), fusion="paper", fusion_temperature=2.5).fit(out)
    # S_f = first logit; S = S_f + S_b / 2.5
    np.testing.assert_allclose(wrapper.score(out), [2.0 + 0.5 / 2.5, 0.0 + 3.0 / 2.5, 1.0 - 1.0 / 2.5])


def test_paper_fusion_softmax_type_clamps_and_counts():
    out = dfb_outputs(LOGITS)
    wrapper = DFBWrapper(SpyBase("softmax"), fusion="paper", fusion_temperature=2.0, clamp_min=1e-3).fit(out)
    scores = wrapper.score(out)
    # S = S_f + log(max(S_b, eps)) / T; the third background logit (-1) is clamped to 1e-3.
    expected = [2.0 + np.log(0.5) / 2.0, 0.0 + np.log(3.0) / 2.0, 1.0 + np.log(1e-3) / 2.0]
    np.testing.assert_allclose(scores, expected)
    assert wrapper.last_clamped_ == 1


def test_zscore_fusion_hand_values():
    train = dfb_outputs(LOGITS)
    val = dfb_outputs([[1.0, 0.0, 1.0], [3.0, 0.0, 3.0]])  # fg scores 1, 3 -> mean 2, std 1; bg same
    wrapper = DFBWrapper(SpyBase(), fusion="zscore", bg_weight=0.5).fit(train, val)
    test = dfb_outputs([[4.0, 0.0, 0.0]])
    # (4 - 2) / 1 + 0.5 * (0 - 2) / 1 = 1
    np.testing.assert_allclose(wrapper.score(test), [1.0])
    assert wrapper.stats_source_ == "val"


def test_zscore_without_val_warns_and_uses_train():
    out = dfb_outputs(LOGITS)
    with pytest.warns(UserWarning, match="statistics come from ID-train"):
        wrapper = DFBWrapper(SpyBase(), fusion="zscore").fit(out)
    assert wrapper.stats_source_ == "train"


def test_base_never_sees_background_column():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 6))
    weight = rng.normal(size=(6, 4))
    out = Outputs(
        logits=logits, features=rng.normal(size=(20, 4)), weight=weight, bias=np.zeros(6), background=True
    )
    spy = SpyBase()
    wrapper = DFBWrapper(spy, fusion="zscore").fit(out, out, out)
    wrapper.score(out)
    assert spy.seen_widths and set(spy.seen_widths) == {5}
    assert set(spy.seen_head_rows) == {5}


@pytest.mark.parametrize("name", ["msp", "energy", "vim", "mls", "knn", "mds", "react", "gen", "klm", "odin"])
def test_registered_variants_ignore_background_logit_in_foreground(name):
    """Changing only the background column must move only the background term."""
    rng = np.random.default_rng(1)
    n, k, d = 60, 4, 8
    features = np.abs(rng.normal(size=(n, d)))
    weight = rng.normal(size=(k + 1, d))
    bias = rng.normal(size=k + 1)
    labels = np.arange(n) % k
    out = Outputs(
        logits=features @ weight.T + bias,
        features=features,
        labels=labels,
        weight=weight,
        bias=bias,
        background=True,
    )
    shifted_logits = out.logits.copy()
    shifted_logits[:, k] += rng.normal(size=n) * 5
    shifted_weight = weight.copy()
    shifted_weight[k] *= 3.0
    shifted = Outputs(
        logits=shifted_logits,
        features=features,
        labels=labels,
        weight=shifted_weight,
        bias=bias,
        background=True,
    )
    kwargs = {"k": 5} if name == "knn" else {"dim": 4} if name == "vim" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = create(f"{name}_dfbz", **kwargs).fit(out, out)
        b = create(f"{name}_dfbz", **kwargs).fit(shifted, out)
    fg_a, _, _ = a.fusion_terms(out)
    fg_b, _, _ = b.fusion_terms(shifted)
    np.testing.assert_allclose(fg_a, fg_b, rtol=1e-10, atol=1e-10)


def test_bg_detector_equals_last_logit():
    out = dfb_outputs(LOGITS)
    np.testing.assert_array_equal(BackgroundScore().fit(out).score(out), [0.5, 3.0, -1.0])
    via_field = Outputs(logits=np.zeros((3, 2)), bg_logit=np.array([0.5, 3.0, -1.0]))
    np.testing.assert_array_equal(BackgroundScore().score(via_field), [0.5, 3.0, -1.0])
    with pytest.raises(ValueError, match="no background logit"):
        BackgroundScore().score(Outputs(logits=np.zeros((3, 2))))


@pytest.mark.parametrize("which", ["foreground", "background"])
def test_zscore_invariant_to_affine_rescaling(which):
    rng = np.random.default_rng(2)
    train = dfb_outputs(rng.normal(size=(50, 3)).tolist())
    val = dfb_outputs(rng.normal(size=(40, 3)).tolist())
    test = dfb_outputs(rng.normal(size=(30, 3)).tolist())
    reference = DFBWrapper(SpyBase(), fusion="zscore").fit(train, val).score(test)
    if which == "foreground":
        rescaled = DFBWrapper(SpyBase(a=1e-4, c=7.0), fusion="zscore").fit(train, val).score(test)
    else:

        def affine_bg(o: Outputs) -> Outputs:
            logits = o.logits.copy()
            logits[:, -1] = 250.0 * logits[:, -1] - 3.0
            return dfb_outputs(logits.tolist())

        rescaled = (
            DFBWrapper(SpyBase(), fusion="zscore")
            .fit(affine_bg(train), affine_bg(val))
            .score(affine_bg(test))
        )
    np.testing.assert_allclose(rescaled, reference, rtol=1e-9, atol=1e-9)


def test_paper_fusion_is_not_scale_invariant():
    """The contrast that motivates zscore: rescaling the foreground changes Eq. 7's ranking weight."""
    rng = np.random.default_rng(3)
    train = dfb_outputs(rng.normal(size=(50, 3)).tolist())
    a = DFBWrapper(SpyBase(), fusion="paper").fit(train).score(train)
    with pytest.warns(FusionDominanceWarning):
        b = DFBWrapper(SpyBase(a=1e-4), fusion="paper").fit(train).score(train)
    assert not np.allclose(np.argsort(a), np.argsort(b))


def test_dominance_warning_fires_for_odin_like_scales():
    rng = np.random.default_rng(4)
    k = 10
    logits = rng.normal(size=(200, k + 1)) * 3
    logits[:, k] = np.abs(logits[:, k]) + 0.5
    out = Outputs(logits=logits, background=True)
    with pytest.warns(FusionDominanceWarning, match="effectively the background score"):
        wrapper = create("odin_dfb", noise=0.0).fit(out, out)
    assert wrapper.dominant_term_ == "background"
    with warnings.catch_warnings():
        warnings.simplefilter("error", FusionDominanceWarning)
        zscore = create("odin_dfbz", noise=0.0).fit(out, out)
    assert zscore.dominant_term_ is None


def test_foreground_source_is_checked():
    out = dfb_outputs(LOGITS)
    classifier_out = Outputs(logits=np.asarray(LOGITS)[:, :2], bg_logit=np.asarray(LOGITS)[:, 2])
    with pytest.raises(ValueError, match="foreground='classifier'"):
        DFBWrapper(SpyBase(), foreground="classifier").fit(out)
    with pytest.raises(ValueError, match="use foreground='classifier'"):
        DFBWrapper(SpyBase(), foreground="dfb").fit(classifier_out)
    a = DFBWrapper(SpyBase(), foreground="classifier").fit(classifier_out).score(classifier_out)
    b = DFBWrapper(SpyBase(), foreground="dfb").fit(out).score(out)
    np.testing.assert_allclose(a, b)


def test_scoring_before_fit_and_bad_parameters():
    with pytest.raises(RuntimeError, match="fitted"):
        DFBWrapper(SpyBase()).score(dfb_outputs(LOGITS))
    with pytest.raises(ValueError, match="fusion"):
        DFBWrapper(SpyBase(), fusion="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="clamp_min"):
        DFBWrapper(SpyBase(), clamp_min=0.0)
    with pytest.raises(ValueError, match="fusion_temperature"):
        DFBWrapper(SpyBase(), fusion_temperature=0.0)
