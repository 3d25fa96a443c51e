"""Find and read the YAML files under ``configs/``, shipped inside the installed package.

Configs are looked up through ``importlib.resources`` so the installed ``harness`` finds them
wherever it runs from, never relative to the current directory. Reading goes through the one YAML
reader, :mod:`harness.yaml_reader` (its names are re-exported here).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from dfb_ood.errors import InputError
from dfb_ood.harness.yaml_reader import MAX_YAML_BYTES, MAX_YAML_NODES, compose_yaml, read_yaml
from dfb_ood.suggest import suggestion

__all__ = [
    "MAX_YAML_BYTES",
    "MAX_YAML_NODES",
    "compose_yaml",
    "config_names",
    "configs_root",
    "load_config",
    "load_yaml",
    "read_yaml",
]


def configs_root() -> Path:
    """The folder that holds the shipped ``configs/`` tree."""
    return Path(str(resources.files("dfb_ood.configs")))


def config_names(kind: str) -> list[str]:
    """Names (file stems) of the shipped configs of one kind, e.g. ``postprocessors``."""
    folder = configs_root() / kind
    if not folder.is_dir():
        kinds = sorted(p.name for p in configs_root().iterdir() if p.is_dir())
        raise InputError(f"no config folder {kind!r}; known kinds: {kinds}")
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Parse one YAML mapping, with errors that name the file and the line (:func:`read_yaml`)."""
    return read_yaml(path).mapping()


def load_config(kind: str, name: str) -> dict[str, Any]:
    """A shipped config by kind and name, e.g. ``load_config("postprocessors", "odin")``."""
    path = configs_root() / kind / f"{name}.yaml"
    if not path.is_file():
        raise InputError(f"no {kind} config named {name!r}; {suggestion(name, config_names(kind))}")
    return load_yaml(path)
