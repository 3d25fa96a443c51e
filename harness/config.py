"""Find and read the YAML files under ``configs/``, shipped inside the installed package.

Configs are looked up through ``importlib.resources`` so the installed ``harness`` finds them
wherever it runs from, never relative to the current directory.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from harness.io import decode_text


def configs_root() -> Path:
    """The folder that holds the shipped ``configs/`` tree."""
    return Path(str(resources.files("configs")))


def config_names(kind: str) -> list[str]:
    """Names (file stems) of the shipped configs of one kind, e.g. ``postprocessors``."""
    folder = configs_root() / kind
    if not folder.is_dir():
        kinds = sorted(p.name for p in configs_root().iterdir() if p.is_dir())
        raise ValueError(f"no config folder {kind!r}; known kinds: {kinds}")
    return sorted(p.stem for p in folder.glob("*.yaml"))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Parse one YAML mapping, with errors that name the file and the line."""
    path = Path(path)
    try:
        text = decode_text(path.read_bytes(), path)  # BOM, UTF-16 and CRLF as a Windows editor writes them
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ValueError(f"{path}: invalid YAML{where}: {getattr(error, 'problem', error)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def load_config(kind: str, name: str) -> dict[str, Any]:
    """A shipped config by kind and name, e.g. ``load_config("postprocessors", "odin")``."""
    path = configs_root() / kind / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"no {kind} config named {name!r}; known: {', '.join(config_names(kind))}")
    return load_yaml(path)
