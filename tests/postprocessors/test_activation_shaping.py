"""ASH-P/B/S, SCALE, DICE, temperature scaling and GradNorm against pytorch-ood 0.4, autograd and hand
computations, plus their DFB variants and parameter checks.

pytorch-ood scores grow with outlierness; ours grow with in-distribution-ness, so its outputs are
negated; its percentiles are fractions where ours are percent. Tolerances follow from the arithmetic:
where both sides compute in float64 from the same inputs, only the summation order differs, so they
agree to ~1e-15 relative and are checked at 1e-12; where pytorch-ood casts to float32 (DICE's mask),
its inputs are made float32-representable so that the cast is exact.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import pytorch_ood.detector as pod_detectors
import torch
from torch import nn

import dfb_ood.postprocessors.ash as ash_module
from dfb_ood.harness.detectors import build_detector
from dfb_ood.harness.metrics import auroc
from dfb_ood.postprocessors import registry
from dfb_ood.postprocessors.ash import ASHB, ASHP, ASHS, top_k_mask
from dfb_ood.postprocessors.base import Outputs
from dfb_ood.postprocessors.dfb import FusionDominanceWarning
from dfb_ood.postprocessors.dice import DICE
from dfb_ood.postprocessors.gradnorm import GradNorm
from dfb_ood.postprocessors.msp import MSP
from dfb_ood.postprocessors.scale import SCALE
from dfb_ood.postprocessors.tempscale import T_FALLBACK, DegenerateFitWarning, TemperatureScaling, nll
from tests.postprocessors.conftest import TinyNet, outputs_of

NEW = ["ash_p", "ash_b", "ash_s", "scale", "dice", "tempscale", "gradnorm"]
FLOAT64_RTOL = 1e-12  # same float64 operations in another order: ~1e-15 relative, with margin


def _pod(name: str) -> type:
    """A pytorch-ood detector class, or skip where the installed version lacks it."""
    cls = getattr(pod_detectors, name, None)
    if cls is None:
        pytest.skip(f"pytorch-ood {getattr(pod_detectors, '__version__', '')} has no {name}")
    return cls


def _t(array: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(array))


def _close(ours: np.ndarray, theirs: np.ndarray, rtol: float = FLOAT64_RTOL) -> float:
    """Assert agreement relative to the scores' magnitude; return the largest absolute difference."""
    scale = float(np.max(np.abs(theirs)))
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=rtol * scale)
    return float(np.max(np.abs(ours - theirs)))


def _outputs(features: np.ndarray, weight: np.ndarray, bias: np.ndarray, **kwargs: object) -> Outputs:
    return Outputs(logits=features @ weight.T + bias, features=features, weight=weight, bias=bias, **kwargs)


@pytest.fixture
def positive() -> dict[str, Outputs]:
    """Continuous non-negative features (no ties anywhere, so every top-k is unique), D = 64, C = 7.

    The OOD split has heavier-tailed features. Labels follow the largest logit with some noise.
    """
    rng = np.random.default_rng(7)
    d, c = 64, 7
    weight = rng.normal(size=(c, d)) / np.sqrt(d)
    bias = rng.normal(size=c) * 0.1
    sets = {}
    for name, n, shape in (("train", 300, 1.0), ("val", 200, 1.0), ("test", 150, 1.0), ("ood", 150, 0.3)):
        features = rng.gamma(shape, 1.0, size=(n, d))
        logits = features @ weight.T + bias
        labels = np.where(rng.random(n) < 0.8, logits.argmax(axis=1), rng.integers(0, c, n))
        sets[name] = _outputs(features, weight, bias, labels=labels if name != "ood" else None)
    return sets


def _linear_head(weight: np.ndarray, bias: np.ndarray) -> nn.Linear:
    head = nn.Linear(weight.shape[1], weight.shape[0]).double()
    with torch.no_grad():
        head.weight.copy_(_t(weight))
        head.bias.copy_(_t(bias))
    return head


# ----------------------------------------------------------------------------------- ASH and SCALE


@pytest.mark.parametrize("percentile", [65.0, 90.0])
@pytest.mark.parametrize("make, variant", [(ASHP, "ash-p"), (ASHB, "ash-b"), (ASHS, "ash-s")])
def test_ash_matches_pytorch_ood(positive, make, variant, percentile) -> None:
    """pytorch-ood's ASH on the pooled feature viewed as (N, D, 1, 1) (OpenOOD's placement), float64."""
    pod_ash = _pod("ASH")
    head = _linear_head(positive["train"].weight, positive["train"].bias)
    theirs_detector = pod_ash(
        backbone=lambda x: x, head=lambda x: head(x.flatten(1)), variant=variant, percentile=percentile / 100
    )
    ours = make(percentile=percentile)
    for split in ("test", "ood"):
        features = positive[split].features
        maps = _t(features).view(features.shape[0], features.shape[1], 1, 1)
        theirs = -theirs_detector.predict_feature_maps(maps).numpy()
        _close(ours.score(positive[split]), theirs)


@pytest.mark.parametrize("percentile", [65.0, 85.0])
def test_scale_matches_pytorch_ood(positive, percentile) -> None:
    pod_scale = _pod("SCALE")
    head = _linear_head(positive["train"].weight, positive["train"].bias)
    theirs_detector = pod_scale(
        backbone=lambda x: x, head=lambda x: head(x.flatten(1)), percentile=percentile / 100
    )
    for split in ("test", "ood"):
        features = positive[split].features
        maps = _t(features).view(features.shape[0], features.shape[1], 1, 1)
        theirs = -theirs_detector.predict_feature_maps(maps).numpy()
        _close(SCALE(percentile=percentile).score(positive[split]), theirs)


def test_ash_on_relu_features_matches_pytorch_ood(tiny_net: TinyNet, id_ood_data) -> None:
    """Real ReLU features (D = 16, percentile 90 keeps k = 2): the cut falls between distinct values."""
    outs = outputs_of(tiny_net, id_ood_data["ood_x"])
    top3 = -np.sort(-outs.features, axis=1)[:, :3]
    assert np.all(top3[:, 1] > top3[:, 2])  # no tie at the cut, so the kept set is unique
    head = tiny_net.fc.double()
    maps = _t(outs.features).view(len(outs), 16, 1, 1)
    for make, variant in ((ASHP, "ash-p"), (ASHB, "ash-b"), (ASHS, "ash-s")):
        theirs = _pod("ASH")(
            backbone=lambda x: x, head=lambda x: head(x.flatten(1)), variant=variant, percentile=0.9
        )
        _close(make().score(outs), -theirs.predict_feature_maps(maps).numpy())


def test_ash_and_scale_by_hand() -> None:
    """x = (3, 0, 1, 2), percentile 50: k = 4 - round(2) = 2 kept (3 and 2), s1 = 6, s2 = 5.

    With an identity head and zero bias the score is logsumexp of the shaped feature itself.
    """
    x = np.array([[3.0, 0.0, 1.0, 2.0]])
    out = _outputs(x, np.eye(4), np.zeros(4))

    def energy(v: list[float]) -> float:
        return float(np.log(np.sum(np.exp(v))))

    e = np.exp(6.0 / 5.0)
    assert ASHP(50).score(out)[0] == pytest.approx(energy([3, 0, 0, 2]), rel=1e-14)
    assert ASHB(50).score(out)[0] == pytest.approx(energy([3, 0, 0, 3]), rel=1e-14)
    assert ASHS(50).score(out)[0] == pytest.approx(energy([3 * e, 0, 0, 2 * e]), rel=1e-14)
    assert SCALE(50).score(out)[0] == pytest.approx(energy([3 * e, 0, e, 2 * e]), rel=1e-14)
    # percentile 0 keeps everything: ASH-P is the plain energy, SCALE multiplies by e
    assert ASHP(0).score(out)[0] == pytest.approx(energy([3, 0, 1, 2]), rel=1e-14)
    assert SCALE(0).score(out)[0] == pytest.approx(energy([3 * np.e, 0, np.e, 2 * np.e]), rel=1e-14)


def test_ties_at_the_cut_keep_lower_indices_and_zero_features_stay_finite() -> None:
    """(1, 0, 0, 0) at percentile 50 keeps k = 2: the 1 and the first 0; ASH-B puts 1/2 on both.
    An all-zero feature has s1 = s2 = 0: the factor is taken as 1 and the score is the bias' energy."""
    x = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    np.testing.assert_array_equal(top_k_mask(x, 2)[0], [True, True, False, False])
    np.testing.assert_array_equal(ASHB(50).shape(x)[0], [0.5, 0.5, 0.0, 0.0])
    bias = np.array([0.3, -0.2, 0.1, 0.0])
    out = _outputs(x, np.eye(4), bias)
    bias_energy = np.log(np.sum(np.exp(bias)))
    for detector in (ASHP(50), ASHB(50), ASHS(50), SCALE(50)):
        scores = detector.score(out)
        assert np.all(np.isfinite(scores))
        assert scores[1] == pytest.approx(bias_energy, rel=1e-14)


def test_top_k_mask_matches_a_full_sort(rng) -> None:
    x = rng.normal(size=(50, 33))
    for k in (1, 5, 32, 33):
        expected = np.zeros_like(x, dtype=bool)
        np.put_along_axis(expected, np.argsort(-x, axis=1, kind="stable")[:, :k], True, axis=1)
        np.testing.assert_array_equal(top_k_mask(x, k), expected)


def test_row_blocks_change_nothing(positive, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scoring goes through rows in blocks; blocks that do not divide N give the same scores (to the
    last bit or so: BLAS may pick another kernel for another matrix size)."""
    detectors = (ASHP(), ASHB(), ASHS(), SCALE())
    whole = [d.score(positive["test"]) for d in detectors]
    monkeypatch.setattr(ash_module, "BLOCK_ROWS", 7)
    for detector, expected in zip(detectors, whole):
        np.testing.assert_allclose(detector.score(positive["test"]), expected, rtol=1e-14)


def test_overflowing_shaping_raises() -> None:
    """Negative features can make s2 tiny and negative, s1 / s2 huge: a clear error, not a NaN score."""
    out = _outputs(np.array([[-1e-10, -1.0]]), np.eye(2), np.zeros(2))
    with pytest.raises(ValueError, match="non-finite"):
        ASHS(50).score(out)


# --------------------------------------------------------------------------------------------- DICE


def test_dice_matches_pytorch_ood(positive) -> None:
    """pytorch-ood casts the weight and the training features to float32 and averages in float32.

    The inputs are made float32-representable, so the casts are exact; the mean and the threshold
    still differ by float32 rounding (about 1e-7 relative), hence the threshold check at 1e-5 and
    an explicit check that the masks are the same, after which the scores agree to float64 rounding.
    """
    pod_dice = _pod("DICE")

    def f32(o: Outputs) -> Outputs:
        w, b = o.weight.astype(np.float32).astype(np.float64), o.bias.astype(np.float32).astype(np.float64)
        return _outputs(o.features.astype(np.float32).astype(np.float64), w, b, labels=o.labels)

    train = f32(positive["train"])
    ours = DICE(p=90).fit(train)
    theirs = pod_dice(None, w=_t(train.weight), b=_t(train.bias), p=0.9)
    theirs.fit_features(_t(train.features), _t(train.labels))
    assert ours.threshold_ == pytest.approx(theirs.threshold, rel=1e-5)
    np.testing.assert_array_equal(ours.mask_, theirs.masked_w.numpy() != 0)
    assert ours.sparsity_ == pytest.approx(0.9, abs=1.0 / ours.mask_.size)
    for split in ("test", "ood"):
        out = f32(positive[split])
        _close(ours.score(out), -theirs.predict_features(_t(out.features)).numpy())


def test_dice_by_hand() -> None:
    """m = (2, 1), W = [[1, 3], [-1, 1]]: contributions [[2, 3], [-2, 1]]; p = 50 gives the
    threshold 1.5 (midway between 1 and 2), so only W[0, 0] and W[0, 1] survive."""
    train = _outputs(np.array([[2.0, 0.0], [2.0, 2.0]]), np.array([[1.0, 3.0], [-1.0, 1.0]]), np.zeros(2))
    dice = DICE(p=50).fit(train)
    np.testing.assert_allclose(dice.mean_activation_, [2.0, 1.0])
    assert dice.threshold_ == pytest.approx(1.5)
    np.testing.assert_array_equal(dice.mask_, [[True, True], [False, False]])
    query = _outputs(np.array([[1.0, 1.0]]), train.weight, np.array([0.5, 0.0]))
    assert dice.score(query)[0] == pytest.approx(np.log(np.exp(4.5) + np.exp(0.0)), rel=1e-14)
    with pytest.raises(ValueError, match=r"fitted on a \(2, 2\) head"):
        dice.score(_outputs(np.ones((1, 2)), np.ones((3, 2)), np.zeros(3)))


# ------------------------------------------------------------------------------ temperature scaling


@pytest.fixture
def calibration() -> dict[str, Outputs]:
    """Informative but noisy logits (an over-confident classifier), so that the optimal T is > 1."""
    rng = np.random.default_rng(3)
    c = 6

    def make(n: int) -> Outputs:
        labels = rng.integers(0, c, n)
        logits = 4.0 * np.eye(c)[labels] + 2.5 * rng.normal(size=(n, c))
        return Outputs(logits=logits, labels=labels)

    return {"train": make(400), "val": make(300), "test": make(200)}


def test_tempscale_temperature_is_the_nll_minimiser(calibration) -> None:
    """Checked three ways: the autograd derivative of the NLL vanishes there, a float64 L-BFGS run to
    convergence (strong Wolfe line search) lands on the same T, and pytorch-ood's own fit (50 L-BFGS
    steps at lr 0.01) reaches an NLL no lower than ours."""
    val = calibration["val"]
    ours = TemperatureScaling().fit(calibration["train"], val)
    t_ours = ours.temperature_
    assert 1.0 < t_ours < 10.0
    logits, labels = _t(val.logits), _t(val.labels)

    t = torch.tensor(t_ours, dtype=torch.float64, requires_grad=True)
    loss = nn.functional.cross_entropy(logits / t, labels)
    (slope,) = torch.autograd.grad(loss, t)
    assert abs(slope.item()) < 1e-10

    t_lbfgs = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [t_lbfgs],
        lr=1.0,
        max_iter=500,
        tolerance_grad=1e-14,
        tolerance_change=1e-16,
        line_search_fn="strong_wolfe",
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        value = nn.functional.cross_entropy(logits / t_lbfgs, labels)
        value.backward()
        return value

    optimizer.step(closure)
    assert t_lbfgs.item() == pytest.approx(t_ours, rel=1e-7)

    theirs = _pod("TemperatureScaling")(None).fit_logits(logits.float(), labels)
    assert ours.nll_ <= nll(val.logits, val.labels, float(theirs.t.item())) + 1e-12
    assert ours.nll_ == pytest.approx(nll(val.logits, val.labels, t_ours))


def test_tempscale_scores_match_pytorch_ood_at_the_same_temperature(calibration) -> None:
    """pytorch-ood's score at our T (its parameter replaced by a float64 one) is -max softmax(z / T)."""
    ours = TemperatureScaling().fit(calibration["train"], calibration["val"])
    assert not ours.degenerate_
    theirs = _pod("TemperatureScaling")(None)
    theirs.t = nn.Parameter(torch.tensor(ours.temperature_, dtype=torch.float64))
    theirs._is_fitted = True
    test = calibration["test"]
    _close(ours.score(test), -theirs.predict_logits(_t(test.logits)).detach().numpy())


def _separable(rng: np.random.Generator, n: int, c: int = 10, ood: bool = False) -> Outputs:
    """A confident classifier's logits: the label's logit 8 to 30 above the others (OOD: 0 to 12 above
    a random class). Classified perfectly; at T = 0.01 every margin saturates the softmax."""
    labels = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c))
    logits[np.arange(n), labels] += rng.uniform(0.0, 12.0, n) if ood else rng.uniform(8.0, 30.0, n)
    return Outputs(logits=logits, labels=None if ood else labels)


def test_tempscale_on_perfectly_classified_val_is_msp_not_a_bound() -> None:
    """Issue 21: ID-val classified perfectly has no NLL minimiser (it falls as T -> 0). The fit used to
    stop at T_MIN = 0.01, where max softmax is 1.0 for almost every ID and OOD sample, and the AUROC
    of the ties read ~50. Now: T_FALLBACK (1) with a DegenerateFitWarning and ``degenerate_``, scores
    that are distinct but for float64 rounding, and exactly MSP's AUROC (MSP is unsaturated here,
    margins below 37)."""
    rng = np.random.default_rng(21)
    train, val, test = _separable(rng, 500), _separable(rng, 400), _separable(rng, 400)
    ood = _separable(rng, 400, ood=True)
    with pytest.warns(DegenerateFitWarning, match="degenerate fit on ID-val: every label has its row's"):
        fitted = TemperatureScaling().fit(train, val)
    assert fitted.degenerate_ and fitted.temperature_ == T_FALLBACK == 1.0
    assert fitted.nll_ == pytest.approx(nll(val.logits, val.labels, 1.0))
    id_scores, ood_scores = fitted.score(test), fitted.score(ood)
    everything = np.concatenate([id_scores, ood_scores])
    rows = np.unique(np.concatenate([test.logits, ood.logits]), axis=0)
    # margins below 37 keep 1 - p above float64's 2**-53: no score is exactly 1.0, and two rows' scores
    # meet only where their probabilities round alike (near 1, steps of 2**-53)
    assert len(rows) == 800 and not np.any(everything == 1.0)
    assert len(np.unique(everything)) >= 0.99 * len(rows)
    assert auroc(id_scores, ood_scores) == auroc(MSP().score(test), MSP().score(ood))
    # what the bound gave: scores tied at exactly 1.0 on both sides, an AUROC near one half
    bound_msp = [MSP().score(Outputs(logits=o.logits / 0.01)) for o in (test, ood)]
    assert np.mean(np.concatenate(bound_msp) == 1.0) > 0.75
    assert abs(auroc(*bound_msp) - 0.5) < 0.1 < auroc(id_scores, ood_scores) - 0.5


def test_tempscale_fit_source_labels_and_bounds(calibration) -> None:
    train = calibration["train"]
    with pytest.warns(UserWarning, match="fit on ID-train"):
        fitted = TemperatureScaling().fit(train)
    assert fitted.fit_source_ == "train" and not fitted.degenerate_
    with pytest.raises(ValueError, match="labels"):
        TemperatureScaling().fit(train, Outputs(logits=train.logits))
    with pytest.raises(ValueError, match="label 9 out of range for 6"):
        TemperatureScaling().fit(train, Outputs(logits=train.logits[:2], labels=np.array([0, 9])))
    with pytest.raises(ValueError, match="two logit columns"):
        TemperatureScaling().fit(train, Outputs(logits=np.ones((3, 1)), labels=np.zeros(3)))
    # perfectly separable logits (ties with the label's logit count as right): no minimiser, T = 1
    separable = Outputs(logits=10.0 * np.eye(3)[[0, 1, 2, 0]] + [[0, 0, 10], [0] * 3, [0] * 3, [0] * 3],
                        labels=np.array([0, 1, 2, 0]))  # fmt: skip
    with pytest.warns(DegenerateFitWarning, match="T -> 0; no temperature minimises it, so T = 1 is used"):
        assert TemperatureScaling().fit(train, separable).temperature_ == 1.0
    # labels below the row means on average: the NLL is smallest as T -> infinity, also degenerate
    contrary = Outputs(logits=10.0 * np.eye(3)[[0, 1, 2]], labels=np.array([1, 2, 0]))
    with pytest.warns(DegenerateFitWarning, match="no larger than their rows' means"):
        assert TemperatureScaling().fit(train, contrary).degenerate_
    # margins of 0.01 and one sample misclassified by 1e-9: a finite optimum (T ~ 6e-4) below T_MIN
    almost = Outputs(logits=np.vstack([0.01 * np.eye(3), [[0.0, 1e-9, 0.0]]]), labels=np.array([0, 1, 2, 0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DegenerateFitWarning)
        with pytest.warns(UserWarning, match="beyond 0.01"):
            bounded = TemperatureScaling().fit(train, almost)
    assert bounded.temperature_ == 0.01 and not bounded.degenerate_
    with pytest.raises(RuntimeError, match="fitted"):
        TemperatureScaling().score(train)


# ----------------------------------------------------------------------------------------- GradNorm


def _kl_weight_gradnorm(
    head: nn.Linear, features: torch.Tensor, temperature: float, targets: str
) -> np.ndarray:
    """Per sample, the actual L1 norm of d loss / d W by autograd; ``targets="kl"`` differentiates
    KL(u || softmax(z / T)) itself, ``"ones"`` the all-ones cross-entropy of the official code."""
    norms = []
    for x in features:
        log_p = torch.log_softmax(head(x[None]) / temperature, dim=1)[0]
        c = log_p.shape[0]
        if targets == "kl":
            u = torch.full_like(log_p, 1.0 / c)
            loss = torch.sum(u * (torch.log(u) - log_p))
        else:
            loss = -torch.sum(log_p)
        (grad,) = torch.autograd.grad(loss, head.weight)
        norms.append(grad.abs().sum().item())
    return np.array(norms)


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_gradnorm_closed_form_equals_autograd(positive, temperature) -> None:
    """The closed form C ||p - u||_1 ||x||_1 / T is the weight-gradient norm of the official code's
    all-ones cross-entropy; that of KL(u || p) itself is exactly 1 / C of it."""
    out = positive["test"]
    head = _linear_head(out.weight, out.bias)
    ours = GradNorm(temperature=temperature).score(out)
    _close(ours, _kl_weight_gradnorm(head, _t(out.features), temperature, "ones"))
    c = out.weight.shape[0]
    _close(ours / c, _kl_weight_gradnorm(head, _t(out.features), temperature, "kl"))


def _openood_gradnorm_by_numpy(features: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """OpenOOD v1.5's ``GradNormPostprocessor.gradnorm`` written out with numpy, one sample at a time:
    loss(W) = mean over the batch of one of sum_c -1 * log_softmax(W x + b)_c, its gradient in W by
    central differences (no closed form), and the sum of the gradient's absolute entries."""

    def loss(w: np.ndarray, x: np.ndarray) -> float:
        z = w @ x + bias
        log_p = z - (np.max(z) + np.log(np.sum(np.exp(z - np.max(z)))))
        return float(np.mean(np.sum(-np.ones((1, len(z))) * log_p[None, :], axis=-1)))

    h = 1e-5
    norms = []
    for x in features:
        grad = np.zeros_like(weight)
        for index in np.ndindex(weight.shape):
            step = np.zeros_like(weight)
            step[index] = h
            grad[index] = (loss(weight + step, x) - loss(weight - step, x)) / (2 * h)
        norms.append(np.abs(grad).sum())
    return np.array(norms)


def test_gradnorm_equals_openoods_formula_by_numpy() -> None:
    """Random head (C = 5, D = 6) and features of both signs. Central differences at h = 1e-5 carry a
    truncation error ~h^2 * |third derivative| and a rounding error ~eps * |loss| / h, about 1e-10
    on entries of order 1, hence rtol 1e-7."""
    rng = np.random.default_rng(17)
    weight, bias = rng.normal(size=(5, 6)), rng.normal(size=5)
    features = 2.0 * rng.normal(size=(12, 6))
    out = _outputs(features, weight, bias)
    np.testing.assert_allclose(
        GradNorm().score(out), _openood_gradnorm_by_numpy(features, weight, bias), rtol=1e-7
    )


@pytest.mark.parametrize("temperature", [1.0, 2.5])
def test_gradnorm_matches_pytorch_ood(positive, temperature) -> None:
    """pytorch-ood's GradNorm on the head alone (the input is the pooled feature), weight only. It
    averages its loss over the C classes where OpenOOD and the official code sum, so ours is C times
    its (negated) score."""
    head = _linear_head(positive["train"].weight, positive["train"].bias)
    theirs = _pod("GradNorm")(head, param_filter=lambda name: name == "weight", temperature=temperature)
    c = positive["train"].weight.shape[0]
    for split in ("test", "ood"):
        out = positive[split]
        _close(GradNorm(temperature=temperature).score(out), -c * theirs.predict(_t(out.features)).numpy())


def test_gradnorm_by_hand() -> None:
    """Two classes, logits (0, ln 3): p = (1/4, 3/4), ||C p - 1||_1 = |-1/2| + |1/2| = 1; x = (1, -2):
    ||x||_1 = 3."""
    out = Outputs(logits=np.array([[0.0, np.log(3.0)]]), features=np.array([[1.0, -2.0]]))
    assert GradNorm().score(out)[0] == pytest.approx(3.0, rel=1e-14)


# --------------------------------------------------------------------------------------- DFB variants


def _dfb_sets(positive: dict[str, Outputs]) -> tuple[dict[str, Outputs], dict[str, Outputs], int]:
    """The same samples as a DFB net's outputs (a strong extra background head row) and as K-class ones."""
    rng = np.random.default_rng(11)
    base = positive["train"]
    k, d = base.weight.shape
    weight = np.vstack([base.weight, 3.0 * rng.normal(size=(1, d))])
    bias = np.append(base.bias, 2.0)
    with_bg, plain = {}, {}
    for name, out in positive.items():
        with_bg[name] = _outputs(out.features, weight, bias, labels=out.labels, background=True)
        plain[name] = _outputs(out.features, base.weight, base.bias, labels=out.labels)
    return with_bg, plain, k


@pytest.mark.filterwarnings("ignore::postprocessors.dfb.FusionDominanceWarning")
@pytest.mark.parametrize("base_name", NEW)
def test_dfb_variants_build_and_fuse_the_base_on_the_k_classes(positive, base_name) -> None:
    """``<base>_dfb`` = base on the first K columns + S_b / 2.5 (logit type) or log(S_b) / 2.5
    (softmax type); ``<base>_dfbz`` = sum of both terms standardised on ID-val. The base fitted on the
    K-class outputs alone gives the same foreground, so it never saw the background column (which,
    shown to the base as a class, changes its scores)."""
    with_bg, plain, k = _dfb_sets(positive)
    alone = build_detector(base_name).fit(plain["train"], plain["val"])
    bg = {name: out.logits[:, k] for name, out in with_bg.items()}
    for split in ("test", "ood"):
        fg = alone.score(plain[split])

        paper = build_detector(f"{base_name}_dfb").fit(with_bg["train"], with_bg["val"])
        assert paper.name == f"{base_name}_dfb" and paper.fusion_kind == alone.fusion_kind
        if alone.fusion_kind == "softmax":
            expected = fg + np.log(np.maximum(bg[split], 1e-6)) / 2.5
        else:
            expected = fg + bg[split] / 2.5
        _close(paper.score(with_bg[split]), expected)

        z = build_detector(f"{base_name}_dfbz").fit(with_bg["train"], with_bg["val"])
        fg_val, bg_val = alone.score(plain["val"]), bg["val"]
        expected_z = (fg - fg_val.mean()) / fg_val.std() + (bg[split] - bg_val.mean()) / bg_val.std()
        _close(z.score(with_bg[split]), expected_z)

    leaky = build_detector(base_name).fit(
        *(_outputs(o.features, o.weight, o.bias, labels=o.labels) for o in (with_bg["train"], with_bg["val"]))
    )
    test_leaky = with_bg["test"]
    leaky_scores = leaky.score(_outputs(test_leaky.features, test_leaky.weight, test_leaky.bias))
    assert not np.allclose(leaky_scores, alone.score(plain["test"]), rtol=1e-3)


def test_dfb_bases_see_k_rows(positive) -> None:
    with_bg, _, k = _dfb_sets(positive)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FusionDominanceWarning)
        dice = build_detector("dice_dfb").fit(with_bg["train"], with_bg["val"])
    assert dice.base.mask_.shape == (k, 64)
    with pytest.raises(ValueError, match="background column"):
        ASHB().score(with_bg["test"])


# ----------------------------------------------------------------------- registry, contract, checks


def test_registered_with_configs_and_contract() -> None:
    expected = {
        "ash_p": (ASHP, "logit", True, True, False),
        "ash_b": (ASHB, "logit", True, True, False),
        "ash_s": (ASHS, "logit", True, True, False),
        "scale": (SCALE, "logit", True, True, False),
        "dice": (DICE, "logit", True, True, True),
        "tempscale": (TemperatureScaling, "softmax", False, False, True),
        "gradnorm": (GradNorm, "logit", True, False, False),
    }
    names = registry.available()
    for name, (cls, kind, features, head, fit) in expected.items():
        assert registry.BASES[name] is cls and cls.name == name
        assert (cls.fusion_kind, cls.requires_features, cls.requires_head, cls.requires_fit) == (
            kind,
            features,
            head,
            fit,
        )
        assert {name, f"{name}_dfb", f"{name}_dfbz"} <= set(names)
    assert registry.canonical_name("ash") == "ash_b"
    assert registry.canonical_name("ash_dfbz") == "ash_b_dfbz"
    assert registry.canonical_name("temperature_scaling") == "tempscale"
    assert build_detector("ash_b").percentile == 90.0
    assert build_detector("scale").percentile == 85.0
    assert build_detector("dice_dfbz").base.p == 90.0


@pytest.mark.parametrize(
    "make, kwargs, shown",
    [
        (ASHP, {"percentile": 100}, "100"),
        (ASHB, {"percentile": -5}, "-5"),
        (ASHS, {"percentile": 150.0}, "150.0"),
        (ASHB, {"percentile": 0.9 * 1000}, "900.0"),
        (SCALE, {"percentile": True}, "True"),
        (SCALE, {"percentile": "85"}, "'85'"),
        (SCALE, {"percentile": float("nan")}, "nan"),
        (DICE, {"p": 100}, "100"),
        (DICE, {"p": -0.5}, "-0.5"),
        (GradNorm, {"temperature": 0}, "0"),
        (GradNorm, {"temperature": -1.0}, "-1.0"),
        (GradNorm, {"temperature": float("inf")}, "inf"),
    ],
)
def test_bad_parameters_raise_naming_the_value(make, kwargs, shown) -> None:
    with pytest.raises(ValueError, match=rf"got {shown}"):
        make(**kwargs)


def test_bad_parameters_through_the_registry_and_at_scoring(positive) -> None:
    with pytest.raises(ValueError, match="got 120"):
        build_detector("ash_b_dfb", percentile=120)
    narrow = _outputs(np.ones((2, 16)), np.ones((3, 16)), np.zeros(3))
    with pytest.raises(ValueError, match="percentile=99 keeps no activation of the D=16 features"):
        ASHP(99).score(narrow)
    with pytest.raises(RuntimeError, match="fitted"):
        DICE().score(positive["test"])
