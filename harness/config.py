"""Find and read the YAML files under ``configs/``, shipped inside the installed package.

Configs are looked up through ``importlib.resources`` so the installed ``harness`` finds them
wherever it runs from, never relative to the current directory.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from dfb_ood.harness.io import decode_text, read_regular


def configs_root() -> Path:
    """The folder that holds the shipped ``configs/`` tree."""
    return Path(str(resources.files("dfb_ood.configs")))


def config_names(kind: str) -> list[str]:
    """Names (file stems) of the shipped configs of one kind, e.g. ``postprocessors``."""
    folder = configs_root() / kind
    if not folder.is_dir():
        kinds = sorted(p.name for p in configs_root().iterdir() if p.is_dir())
        raise ValueError(f"no config folder {kind!r}; known kinds: {kinds}")
    return sorted(p.stem for p in folder.glob("*.yaml"))


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
            raise ValueError(
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
                    raise ValueError(
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

    The one YAML reader of the harness (recipes, benchmarks, networks, detectors), so every file
    a user names gets the same limits: a regular file only (a FIFO would block for ever), at most
    :data:`MAX_YAML_BYTES`, aliases expanding to at most :data:`MAX_YAML_NODES` values, and errors
    that name the file and the line. ``visit`` sees the node tree before it is constructed (the
    construction rewrites merge keys, ``<<: *name``, in place).
    """
    path = Path(path)
    try:
        # BOM, UTF-16 and CRLF as a Windows editor writes them
        text = decode_text(read_regular(path, what, limit=MAX_YAML_BYTES), path)
    except FileNotFoundError:
        raise FileNotFoundError(f"config file not found: {path}") from None
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
        raise ValueError(f"{path}: invalid YAML{where}: {getattr(error, 'problem', error)}") from None
    except RecursionError:
        raise ValueError(f"{path}: the YAML is nested too deeply to read") from None
    finally:
        loader.dispose()
    return root, data


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Parse one YAML mapping, with errors that name the file and the line."""
    path = Path(path)
    _, data = compose_yaml(path)
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
