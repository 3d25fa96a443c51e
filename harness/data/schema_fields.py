"""Reading one value of a benchmark YAML, with the file and line of its key in every error.

The helpers every part of the benchmark schema shares (:mod:`harness.data.schema` for the top
level, :mod:`harness.data.set_schema` for one set): where a key is, the error that names it,
placeholders and paths, bounded integers. The file is read by the one YAML reader
(:func:`harness.yaml_reader.read_yaml`), which keeps the line of every key.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from dfb_ood.errors import InputError
from dfb_ood.harness.data.specs import MAX_IMAGE_SIDE
from dfb_ood.harness.yaml_reader import read_yaml

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class SchemaReader:
    """One benchmark YAML read: its mapping, its line index, and the checks of single values."""

    def __init__(self, path: Path, data_root: Path) -> None:
        self.path = path
        self.data_root = data_root
        self.document = read_yaml(path, "a benchmark YAML", unique_keys=True)
        self.raw = self.document.mapping()
        self.lines = self.document.lines
        self.uses_data_root = False

    def where(self, *keys: str) -> str:
        """``file:line`` of the deepest key of ``keys`` that the index knows."""
        return self.document.where(*keys)

    def fail(self, keys: tuple[str, ...], message: str) -> InputError:
        """The error to raise: ``message`` after the ``file:line`` of ``keys``."""
        return InputError(f"{self.where(*keys)}: {message}")

    def expand(self, value: Any, keys: tuple[str, ...]) -> str:
        """A path string with ``{data_root}``, ``{here}`` and ``~`` filled in."""
        if not isinstance(value, str) or not value:
            raise self.fail(keys, f"expected a path string, got {value!r}")

        def substitute(match: re.Match[str]) -> str:
            if match.group(1) == "data_root":
                self.uses_data_root = True
                return str(self.data_root)
            if match.group(1) == "here":
                return str(self.path.parent)
            raise self.fail(keys, f"unknown placeholder {{{match.group(1)}}}; known: {{data_root}}, {{here}}")

        return os.path.expanduser(_PLACEHOLDER.sub(substitute, value))

    def path_value(self, value: Any, keys: tuple[str, ...], base: Path) -> Path:
        """An absolute path: :meth:`expand`, then relative to ``base``."""
        expanded = Path(self.expand(value, keys))
        return Path(os.path.abspath(expanded if expanded.is_absolute() else base / expanded))

    def integer(self, value: Any, keys: tuple[str, ...], minimum: int = 1, maximum: int | None = None) -> int:
        """A whole number (not a bool) in ``minimum..maximum``."""
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(keys, f"{keys[-1]} must be an integer >= {minimum}, got {value!r}")
        if maximum is not None and value > maximum:
            raise self.fail(
                keys,
                f"{keys[-1]} must be at most {maximum}, got {value}: is it a typo? (a larger value "
                "would be allocated before anything else is read)",
            )
        return value

    def side(self, value: Any, keys: tuple[str, ...], minimum: int = 1) -> int:
        """An image side in pixels (sizes, crops, resizes, pads), at most :data:`MAX_IMAGE_SIDE`."""
        return self.integer(value, keys, minimum, maximum=MAX_IMAGE_SIDE)
