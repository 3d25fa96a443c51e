"""The one YAML reader of the harness: bounded reads, line numbers, plain data.

Every YAML file a user or the package names (benchmarks, recipes, network and detector configs, the
download catalogue, reference results) is read here, so each gets the same limits and the same
errors: a regular file only (a FIFO would block for ever), a size bound, a bound on what aliases
expand to, and messages that name the file and the line. YAML loaders drop line numbers, and
errors about a value need them: :func:`read_yaml` keeps the 1-based line of every key and list
item, by key path, next to the constructed data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dfb_ood.errors import InputError, MissingInputError
from dfb_ood.harness.io import decode_text, read_regular

#: A YAML config (recipe, benchmark, network, detector) larger than this is refused unread: the
#: biggest shipped one is a few kB, and the file is read into memory whole.
MAX_YAML_BYTES = 4 << 20
#: The nodes a YAML document may stand for once its aliases are expanded (each ``*alias`` counts
#: the whole subtree it repeats). A 700-byte "billion laughs" file of nested aliases stands for
#: billions; code that walks the loaded data (the line index of a benchmark, the settings hash of
#: a recipe) would take all the memory and hours. The shipped configs stay below a few thousand.
MAX_YAML_NODES = 100_000


def _expanded_size(root: yaml.Node, path: Path) -> None:
    """Refuse a node graph that aliases expand beyond :data:`MAX_YAML_NODES`, or that holds itself.

    Sizes are memoised per node object (an alias is the same object as its anchor), so this costs
    one visit per distinct node, not per expanded one.
    """
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def size(node: yaml.Node) -> int:
        key = id(node)
        if key in sizes:
            return sizes[key]
        if key in active:
            raise InputError(
                f"{path}:{node.start_mark.line + 1}: an alias refers to the node that contains it (a "
                "recursive anchor); write the values out instead"
            )
        total = 1
        if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
            active.add(key)
            children = node.value
            if isinstance(node, yaml.MappingNode):
                children = [part for pair in node.value for part in pair]
            for child in children:
                total += size(child)
                if total > MAX_YAML_NODES:
                    raise InputError(
                        f"{path}:{child.start_mark.line + 1}: the YAML's anchors and aliases (&name, *name) "
                        f"expand to more than {MAX_YAML_NODES} values (a YAML bomb?); write the values out, "
                        "or use fewer aliases"
                    )
            active.discard(key)
        sizes[key] = total
        return total

    size(root)


def compose_yaml(
    path: str | Path, what: str = "a YAML config", visit: Callable[[yaml.Node], None] | None = None
) -> tuple[yaml.Node | None, Any]:
    """The node tree (with line numbers) and the data of one YAML file, read within bounds.

    The bounded read under :func:`read_yaml`, for a caller that needs the nodes; every file
    gets the same limits: a regular file only (a FIFO would block for ever), at most
    :data:`MAX_YAML_BYTES`, aliases expanding to at most :data:`MAX_YAML_NODES` values, and errors
    that name the file and the line. ``visit`` sees the node tree before it is constructed (the
    construction rewrites merge keys, ``<<: *name``, in place).
    """
    path = Path(path)
    try:
        # BOM, UTF-16 and CRLF as a Windows editor writes them
        text = decode_text(read_regular(path, what, limit=MAX_YAML_BYTES), path)
    except FileNotFoundError:
        raise MissingInputError(f"config file not found: {path}") from None
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            _expanded_size(root, path)
            if visit is not None:
                visit(root)
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise InputError(f"{path}: invalid YAML{where}: {getattr(error, 'problem', error)}") from None
    except RecursionError:
        raise InputError(f"{path}: the YAML is nested too deeply to read") from None
    finally:
        loader.dispose()
    return root, data


KeyPath = tuple[str, ...]


@dataclass(frozen=True)
class YamlDocument:
    """One YAML file read: its plain ``data`` and the line of every key, by key path.

    ``lines[("ood", "near", "svhn")]`` is the 1-based line of that key; list items are indexed by
    their position as text (``("id_classes", "0")``). ``data`` is None for an empty file.
    """

    path: Path
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def mapping(self) -> dict[str, Any]:
        """The top level as a mapping (``{}`` for an empty file); anything else is an error."""
        if self.data is None:
            return {}
        if not isinstance(self.data, dict):
            raise InputError(
                f"{self.path}: expected a mapping at the top level, got {type(self.data).__name__}"
            )
        return self.data

    def where(self, *keys: str) -> str:
        """``file:line`` of the deepest key of ``keys`` that the index knows (``file:1`` if none)."""
        for n in range(len(keys), 0, -1):
            line = self.lines.get(tuple(keys[:n]))
            if line is not None:
                return f"{self.path}:{line}"
        return f"{self.path}:1"


def read_yaml(path: str | Path, what: str = "a YAML config", *, unique_keys: bool = False) -> YamlDocument:
    """Read one YAML file within bounds (see :func:`compose_yaml`), with the line of every key.

    ``what`` names the file in errors about it (``"a benchmark YAML"``). ``unique_keys`` makes a
    key repeated in one mapping an error: YAML would silently keep only the last one (a second
    ``near:`` would lose the first group's sets). The text may carry a UTF-8 byte-order mark or
    CRLF line ends.
    """
    path = Path(path)
    lines: dict[KeyPath, int] = {}
    _, data = compose_yaml(path, what, visit=lambda root: _index_node(root, (), lines, path, unique_keys))
    return YamlDocument(path=path, data=data, lines=lines)


def _index_node(
    node: yaml.Node, prefix: KeyPath, index: dict[KeyPath, int], path: Path, unique_keys: bool
) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name, line = str(key.value), key.start_mark.line + 1
            if unique_keys and key.tag != "tag:yaml.org,2002:merge" and name in seen:
                dotted = ".".join((*prefix, name))
                raise InputError(
                    f"{path}:{line}: key {dotted!r} appears twice (first at line {seen[name]}); "
                    "YAML would keep only the last, so merge the two"
                )
            seen[name] = line
            index[(*prefix, name)] = line
            _index_node(value, (*prefix, name), index, path, unique_keys)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            index[(*prefix, str(i))] = item.start_mark.line + 1
            _index_node(item, (*prefix, str(i)), index, path, unique_keys)
