"""Reading one value of a benchmark YAML, with the file and line of its key in every error.

The helpers every part of the benchmark schema shares (:mod:`harness.data.schema` for the top
level, :mod:`harness.data.set_schema` for one set): where a key is, the error that names it,
placeholders and paths, bounded integers. YAML loaders drop line numbers; the index that keeps
them is read by :func:`read_benchmark_yaml`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml
from dfb_ood.harness.config import compose_yaml
from dfb_ood.harness.data.specs import MAX_IMAGE_SIDE

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


def read_benchmark_yaml(path: Path) -> tuple[dict[str, Any], dict[tuple[str, ...], int]]:
    """The YAML mapping of a benchmark file and the 1-based line of every key, by key path.

    YAML loaders drop line numbers, and errors need them. A key repeated in one mapping is an
    error here: YAML would silently keep only the last one (a second ``near:`` would lose the
    first group's sets). The text may carry a UTF-8 byte-order mark or CRLF line ends.
    """
    index: dict[tuple[str, ...], int] = {}
    _, data = compose_yaml(path, "a benchmark YAML", visit=lambda root: _index_node(root, (), index, path))
    if data is None:
        return {}, index
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data, index


def _index_node(
    node: yaml.Node, prefix: tuple[str, ...], index: dict[tuple[str, ...], int], path: Path
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name, line = str(key.value), key.start_mark.line + 1
            if key.tag != "tag:yaml.org,2002:merge" and name in seen:
                dotted = ".".join((*prefix, name))
                raise ValueError(
                    f"{path}:{line}: key {dotted!r} appears twice (first at line {seen[name]}); "
                    "YAML would keep only the last, so merge the two"
                )
            seen[name] = line
            index[(*prefix, name)] = line
            _index_node(value, (*prefix, name), index, path)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index[(*prefix, str(i))] = item.start_mark.line + 1
            _index_node(item, (*prefix, str(i)), index, path)


class SchemaReader:
    """One benchmark YAML read: its mapping, its line index, and the checks of single values."""

    def __init__(self, path: Path, data_root: Path) -> None:
        self.path = path
        self.data_root = data_root
        self.raw, self.lines = read_benchmark_yaml(path)
        self.uses_data_root = False

    def where(self, *keys: str) -> str:
        """``file:line`` of the deepest key of ``keys`` that the index knows."""
        for n in range(len(keys), 0, -1):
            line = self.lines.get(tuple(keys[:n]))
            if line is not None:
                return f"{self.path}:{line}"
        return f"{self.path}:1"

    def fail(self, keys: tuple[str, ...], message: str) -> ValueError:
        """The error to raise: ``message`` after the ``file:line`` of ``keys``."""
        return ValueError(f"{self.where(*keys)}: {message}")

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
