"""MSP, Energy, MaxLogit, GEN and KL-Matching: hand-computed values and agreement with pytorch-ood.

pytorch-ood's scores grow with outlierness; ours grow with in-distribution-ness. For MSP, Energy,
MaxLogit and KL-Matching ours == -theirs. For GEN ours == -min(M, C) * theirs, because pytorch-ood
averages the top-M terms where OpenOOD and the paper sum them (a positive factor, same ranking), and
pytorch-ood clamps p to [1e-7, 1 - 1e-7]; the comparison checks that no probability hits the clamp.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.stats
import torch
from pytorch_ood.detector import GEN as TorchGEN
from pytorch_ood.detector import EnergyBased, MaxSoftmax
from pytorch_ood.detector import KLMatching as TorchKLMatching
from pytorch_ood.detector import MaxLogit as TorchMaxLogit

from dfb_ood.postprocessors._numerics import log_softmax, logsumexp, softmax
from dfb_ood.postprocessors.base import Outputs
from dfb_ood.postprocessors.energy import Energy
from dfb_ood.postprocessors.gen import GEN
from dfb_ood.postprocessors.klm import KLMatching
from dfb_ood.postprocessors.mls import MaxLogit
from dfb_ood.postprocessors.msp import MSP
from tests.postprocessors.conftest import TinyNet, outputs_of

# 2 x 3 logits whose softmax is easy by hand: row 0 is uniform, row 1 is (1, 2, 5) / 8
HAND_LOGITS = np.array([[0.0, 0.0, 0.0], [0.0, math.log(2.0), math.log(5.0)]])


def _theirs(values: torch.Tensor) -> np.ndarray:
    return values.detach().double().numpy()


@pytest.fixture
def outputs(tiny_net, id_ood_data) -> Outputs:
    """ID test and OOD samples through the random TinyNet (float64 logits)."""
    x = torch.cat([id_ood_data["test_x"], id_ood_data["ood_x"]])
    return outputs_of(tiny_net, x)


@pytest.fixture
def train_outputs(tiny_net, id_ood_data) -> Outputs:
    return outputs_of(tiny_net, id_ood_data["train_x"], id_ood_data["train_y"])


# --- shared numerics -------------------------------------------------------------------------------


def test_numerics_are_stable_and_float64():
    logits = np.array([[1000.0, 0.0, -1000.0], [1.0, 2.0, 3.0]], dtype=np.float32)
    p = softmax(logits)
    assert p.dtype == np.float64 and np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=0, atol=1e-15)
    np.testing.assert_allclose(logsumexp(logits)[0], 1000.0)
    assert np.all(np.isfinite(log_softmax(logits)))
    ref = torch.logsumexp(torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64) / 3.0, dim=1) * 3.0
    np.testing.assert_allclose(logsumexp(logits[1:], temperature=3.0), ref.numpy(), rtol=1e-12)
    with pytest.raises(ValueError):
        softmax(logits, temperature=0.0)


# --- hand-computed values ----------------------------------------------------------------------------


def test_hand_values():
    out = Outputs(logits=HAND_LOGITS)
    np.testing.assert_allclose(MSP().score(out), [1 / 3, 5 / 8], rtol=1e-12)
    np.testing.assert_allclose(Energy().score(out), [math.log(3), math.log(8)], rtol=1e-12)
    np.testing.assert_allclose(
        Energy(temperature=2.0).score(out),
        [2 * math.log(3), 2 * math.log(1 + math.sqrt(2) + math.sqrt(5))],
        rtol=1e-12,
    )
    np.testing.assert_allclose(MaxLogit().score(out), [0.0, math.log(5)], rtol=1e-12, atol=1e-15)
    gen_all = [
        -3 * (2 / 9) ** 0.1,
        -((7 / 64) ** 0.1 + (12 / 64) ** 0.1 + (15 / 64) ** 0.1),
    ]
    np.testing.assert_allclose(GEN().score(out), gen_all, rtol=1e-12)  # M = 100 > C: all classes
    gen_top2 = [-2 * (2 / 9) ** 0.1, -((12 / 64) ** 0.1 + (15 / 64) ** 0.1)]
    np.testing.assert_allclose(GEN(M=2).score(out), gen_top2, rtol=1e-12)
    gen_g1 = [-3 * (2 / 9), -(7 + 12 + 15) / 64]
    np.testing.assert_allclose(GEN(gamma=1.0).score(out), gen_g1, rtol=1e-12)


def test_scores_are_float64_vectors(outputs, train_outputs):
    for det in (MSP(), Energy(), MaxLogit(), GEN(), KLMatching().fit(train_outputs)):
        s = det.score(outputs)
        assert s.dtype == np.float64 and s.shape == (len(outputs),)
        assert np.all(np.isfinite(s))


def test_names_and_fusion_kinds():
    expected = {
        MSP: ("msp", "softmax"),
        Energy: ("energy", "logit"),
        MaxLogit: ("mls", "logit"),
        GEN: ("gen", "softmax"),
        KLMatching: ("klm", "logit"),
    }
    for cls, (name, kind) in expected.items():
        assert (cls.name, cls.fusion_kind) == (name, kind)
    assert KLMatching.requires_fit and not MSP.requires_fit
    assert GEN().params() == {"gamma": 0.1, "M": 100}
    assert Energy().params() == {"temperature": 1.0}


@pytest.mark.parametrize("det", [MSP(), Energy(), MaxLogit(), GEN(), KLMatching()])
def test_background_outputs_are_refused(det):
    out = Outputs(logits=np.zeros((2, 4)), background=True)
    with pytest.raises(ValueError, match="background"):
        det.score(out)
    with pytest.raises(ValueError, match="background"):
        det.fit(out)


def test_bad_hyper_parameters():
    with pytest.raises(ValueError):
        Energy(temperature=0.0)
    with pytest.raises(ValueError):
        GEN(gamma=0.0)
    with pytest.raises(ValueError):
        GEN(M=0)


# --- agreement with pytorch-ood ---------------------------------------------------------------------


def test_msp_matches_pytorch_ood(outputs):
    theirs = _theirs(MaxSoftmax.score(torch.from_numpy(outputs.logits)))
    np.testing.assert_allclose(MSP().score(outputs), -theirs, rtol=1e-12)


@pytest.mark.parametrize("t", [1.0, 2.0, 0.5])
def test_energy_matches_pytorch_ood(outputs, t):
    theirs = _theirs(EnergyBased.score(torch.from_numpy(outputs.logits), t=t))
    np.testing.assert_allclose(Energy(temperature=t).score(outputs), -theirs, rtol=1e-12)


def test_maxlogit_matches_pytorch_ood(outputs):
    theirs = _theirs(TorchMaxLogit.score(torch.from_numpy(outputs.logits)))
    np.testing.assert_array_equal(MaxLogit().score(outputs), -theirs)


@pytest.mark.parametrize(
    ("num_classes", "gamma", "m"), [(5, 0.1, 100), (5, 0.5, 3), (20, 0.1, 7), (20, 2.0, 20)]
)
def test_gen_matches_pytorch_ood_up_to_mean_vs_sum(id_ood_data, num_classes, gamma, m):
    net = TinyNet(num_classes=num_classes, seed=3)
    out = outputs_of(net, torch.cat([id_ood_data["test_x"], id_ood_data["ood_x"]]))
    p = softmax(out.logits)
    assert p.min() > 1e-7 and p.max() < 1 - 1e-7, "pytorch-ood's clamp would change these values"
    theirs = _theirs(TorchGEN.score(torch.from_numpy(out.logits), gamma=gamma, M=m))
    ours = GEN(gamma=gamma, M=m).score(out)
    np.testing.assert_allclose(ours, -min(m, num_classes) * theirs, rtol=1e-10)


def test_gen_confident_rows_stay_finite():
    out = Outputs(logits=np.array([[1000.0, 0.0, -1000.0], [40.0, 0.0, 0.0]]))
    s = GEN().score(out)
    assert np.all(np.isfinite(s))
    # p1 = 1 - 2e-18 still contributes (2e-18)^0.1 * ... instead of rounding 1 - p1 to 0
    assert s[1] < s[0] <= 0.0


def test_klm_matches_pytorch_ood(outputs, train_outputs):
    ours = KLMatching().fit(train_outputs).score(outputs)
    ref = TorchKLMatching(None).fit_logits(torch.from_numpy(train_outputs.logits))
    theirs = _theirs(ref.predict_logits(torch.from_numpy(outputs.logits)))
    np.testing.assert_allclose(ours, -theirs, rtol=1e-9, atol=1e-12)


def _openood_klm(train_logits: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """OpenOOD's definition written out directly: nearest template by scipy's KL, one-hot fallback."""
    p_train, pred = softmax(train_logits), train_logits.argmax(axis=1)
    c = train_logits.shape[1]
    templates = np.array(
        [p_train[pred == k].mean(axis=0) if np.any(pred == k) else np.eye(c)[k] for k in range(c)]
    )
    p = softmax(logits)
    with np.errstate(divide="ignore"):
        kl = np.array([[scipy.stats.entropy(row, t) for t in templates] for row in p])
    return -kl.min(axis=1)


def test_klm_matches_openood_definition(outputs, train_outputs):
    ours = KLMatching().fit(train_outputs).score(outputs)
    ref = _openood_klm(train_outputs.logits, outputs.logits)
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-12)


def test_klm_uses_nearest_template_not_predicted_class():
    """-KL to the nearest template, as OpenOOD; not necessarily the template of argmax(x)."""
    train = Outputs(logits=np.array([[4.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 9.0]]))
    det = KLMatching().fit(train)
    x = Outputs(logits=np.array([[1.0, 0.9, 0.0]]))  # predicted class 0, yet nearer class 1's flat template
    log_p = log_softmax(x.logits)[0]
    kls = [np.sum(np.exp(log_p) * (log_p - lt)) for lt in det.log_templates_]
    assert int(np.argmin(kls)) == 1 and kls[0] > kls[1]
    np.testing.assert_allclose(det.score(x), [-kls[1]], rtol=1e-12)


# --- KL-Matching fitting ----------------------------------------------------------------------------


def test_klm_requires_fit(outputs):
    with pytest.raises(RuntimeError, match="fitted"):
        KLMatching().score(outputs)


def test_klm_unpredicted_class_gives_no_nan(outputs, train_outputs):
    logits = train_outputs.logits.copy()
    logits[:, 4] -= 100.0  # class 4 is never predicted on train
    train = Outputs(logits=logits)
    det = KLMatching().fit(train)
    assert list(det.template_classes_) == [0, 1, 2, 3] and list(det.unpredicted_classes_) == [4]
    s = det.score(outputs)
    assert np.all(np.isfinite(s))
    ref = TorchKLMatching(None).fit_logits(torch.from_numpy(logits))
    theirs = _theirs(ref.predict_logits(torch.from_numpy(outputs.logits)))
    np.testing.assert_allclose(s, -theirs, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(s, _openood_klm(logits, outputs.logits), rtol=1e-9, atol=1e-12)
    # a sample that is certain of the unpredicted class scores low, not NaN and not perfect
    extreme = Outputs(logits=np.array([[0.0, 0.0, 0.0, 0.0, 2000.0]]))
    assert np.isfinite(det.score(extreme)[0]) and det.score(extreme)[0] < s.min()


def test_klm_underflowing_softmax_stays_finite():
    train = Outputs(logits=np.array([[1000.0, 0.0, -1000.0], [900.0, 0.0, 0.0], [0.0, 800.0, 0.0]]))
    det = KLMatching().fit(train)
    assert np.all(np.isfinite(det.log_templates_))
    s = det.score(Outputs(logits=np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 1000.0], [1.0, 2.0, 3.0]])))
    assert np.all(np.isfinite(s))
    assert s[0] == pytest.approx(0.0, abs=1e-12)  # a training sample matches its own one-member template


def test_klm_rejects_other_class_count(train_outputs):
    det = KLMatching().fit(train_outputs)
    with pytest.raises(ValueError, match="fitted on 5 classes"):
        det.score(Outputs(logits=np.zeros((2, 3))))


def test_klm_params_exclude_learned_state(train_outputs):
    det = KLMatching().fit(train_outputs)
    assert det.params() == {}
    assert det.fitted_ and det.templates_.shape == (5, 5)
    np.testing.assert_allclose(det.templates_.sum(axis=1), 1.0, rtol=1e-12)
