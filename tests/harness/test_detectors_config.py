"""The detector classes are the one source of their defaults; the YAMLs hold the search grids."""

from __future__ import annotations

import pytest

from dfb_ood.harness.config import config_names, configs_root, load_config, load_yaml
from dfb_ood.harness.detectors import build_detector, detector_defaults, search_grid
from dfb_ood.postprocessors import registry
from dfb_ood.postprocessors.base import Postprocessor
from dfb_ood.postprocessors.dfb import DFBWrapper


def test_configs_found_without_the_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (configs_root() / "postprocessors" / "msp.yaml").is_file()


def test_every_detector_has_a_config_and_vice_versa():
    names = set(config_names("postprocessors"))
    assert names == set(registry.BASES) | set(registry.STANDALONE) | {"dfb"}


def _typed(mapping: dict) -> list[tuple[str, object, type]]:
    """Items with their types, in order: 90 and 90.0 would print differently in a run's records."""
    return [(key, value, type(value)) for key, value in mapping.items()]


@pytest.mark.parametrize("name", sorted(set(registry.BASES) | set(registry.STANDALONE)))
def test_yaml_holds_no_copy_of_the_class_facts_and_searches_real_parameters(name):
    """The class is the one source of defaults and fusion kind; the YAML keeps the search grid."""
    config = load_config("postprocessors", name)
    cls = registry.detector_class(name)
    assert "defaults" not in config, f"{name}.yaml repeats defaults; {cls.__name__}'s constructor holds them"
    assert "fusion_kind" not in config, f"{name}.yaml repeats fusion_kind; {cls.__name__} declares it"
    for key in config.get("search") or {}:
        assert key in cls.default_hyperparameters(), (
            f"{name}.yaml searches {key!r}, which is no hyper-parameter of {cls.__name__}"
        )


def test_dfb_yaml_searches_only_wrapper_parameters():
    config = load_config("postprocessors", "dfb")
    assert "defaults" not in config
    assert set(config["search"]) <= set(DFBWrapper.default_hyperparameters())


@pytest.mark.parametrize("name", registry.available(include_aliases=True))
def test_configured_defaults_equal_the_registry_defaults(name):
    """What the pipeline builds with (detector_defaults) is what the constructors declare."""
    assert _typed(detector_defaults(name)) == _typed(registry.default_hyperparameters(name))


def test_default_hyperparameters_skip_wiring_and_arguments_without_default():
    class Toy(Postprocessor):
        wiring = ("input_std",)

        def __init__(self, base: object, k: int = 5, input_std: float = 1.0, *, scale: float = 2.0) -> None:
            pass

    assert Toy.default_hyperparameters() == {"k": 5, "scale": 2.0}
    assert registry.default_hyperparameters("odin") == {"temperature": 1000.0, "noise": 0.0014}
    assert registry.default_hyperparameters("msp_dfbz") == {
        "fusion_temperature": 2.5,
        "clamp_min": 1e-6,
        "bg_weight": 1.0,
    }


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
