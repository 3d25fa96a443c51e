"""A detector name is parsed once into a spec whose fields every stage reads."""

from __future__ import annotations

import pytest

from dfb_ood.harness.detector_spec import CLASSIFIER, DFB, DetectorSpec, network_of


def test_plain_detectors_read_the_classifier_and_variants_the_dfb_net():
    msp, fused, bg = DetectorSpec.of("msp"), DetectorSpec.of("vim_dfbz"), DetectorSpec.of("bg")
    assert (msp.base, msp.variant, msp.network, msp.label) == ("msp", None, CLASSIFIER, CLASSIFIER)
    assert (fused.base, fused.variant, fused.network, fused.label) == ("vim", "_dfbz", DFB, DFB)
    assert bg.network == DFB and bg.networks == (DFB,) and not bg.overrides
    assert [network_of(n) for n in ("msp", "msp_dfb", "bg")] == [CLASSIFIER, DFB, DFB]


def test_a_classifier_foreground_applies_to_dfb_variants_alone():
    fused = DetectorSpec.of("energy_dfb", foreground=CLASSIFIER)
    assert fused.from_classifier and fused.network == CLASSIFIER and fused.networks == (CLASSIFIER, DFB)
    assert fused.label == "classifier+dfb" and fused.overrides == {"foreground": CLASSIFIER}
    plain = DetectorSpec.of("energy", foreground=CLASSIFIER)
    assert not plain.from_classifier and plain.foreground == DFB and plain.overrides == {}


def test_aliases_resolve_and_unknown_names_are_refused():
    assert DetectorSpec.of("ebo_dfb").base == "energy"
    with pytest.raises(ValueError):
        DetectorSpec.of("no_such_detector")
