"""The shipped YAML defaults and the detector constructors must say the same thing."""

from __future__ import annotations

import inspect

import pytest
from dfb_ood.harness.config import config_names, configs_root, load_config, load_yaml
from dfb_ood.harness.detectors import build_detector, detector_defaults, search_grid
from dfb_ood.postprocessors import registry
from dfb_ood.postprocessors.dfb import DFBWrapper


def test_configs_found_without_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (configs_root() / "postprocessors" / "msp.yaml").is_file()


def test_every_detector_has_a_config_and_vice_versa():
    names = set(config_names("postprocessors"))
    assert names == set(registry.BASES) | set(registry.STANDALONE) | {"dfb"}


@pytest.mark.parametrize("name", sorted(set(registry.BASES) | set(registry.STANDALONE)))
def test_yaml_defaults_equal_constructor_defaults(name):
    config = load_config("postprocessors", name)
    cls = registry.detector_class(name)
    signature = inspect.signature(cls.__init__)
    for key, value in (config.get("defaults") or {}).items():
        assert key in signature.parameters, f"{name}.yaml names {key!r}, which {cls.__name__} does not take"
        assert signature.parameters[key].default == value, f"{name}: yaml {key}={value!r} vs code"
    assert config["fusion_kind"] == cls.fusion_kind
    for key in config.get("search") or {}:
        assert key in signature.parameters, (
            f"{name}.yaml searches {key!r}, which {cls.__name__} does not take"
        )


def test_dfb_yaml_defaults_equal_wrapper_defaults():
    signature = inspect.signature(DFBWrapper.__init__)
    for key, value in load_config("postprocessors", "dfb")["defaults"].items():
        assert signature.parameters[key].default == value


def test_build_detector_applies_defaults_and_overrides():
    odin = build_detector("odin_dfb", fusion_temperature=3.0, temperature=2.0)
    assert isinstance(odin, DFBWrapper)
    assert odin.fusion_temperature == 3.0  # the wrapper's T of Eq. 7
    assert odin.base.temperature == 2.0 and odin.base.noise == 0.0014  # the base's own T_odin
    assert detector_defaults("ebo") == {"temperature": 1.0}
    assert "bg_weight" in search_grid("vim_dfbz") and "fusion_temperature" in search_grid("vim_dfb")


def test_every_registered_name_builds():
    for name in registry.available(include_aliases=True):
        assert build_detector(name) is not None


def test_unknown_names_and_bad_yaml_are_reported(tmp_path):
    with pytest.raises(ValueError, match="unknown detector 'softmaxx'"):
        build_detector("softmaxx")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndefaults: [1, 2\n")
    with pytest.raises(ValueError, match=r"bad.yaml: invalid YAML at line \d"):
        load_yaml(bad)
