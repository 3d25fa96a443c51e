"""One set of a benchmark YAML (``id.train``, ``ood.near.<name>``, ...) as a :class:`SetSpec`.

Each set type (image list, torchvision class, image folder, generated shapes, ``.npz`` arrays)
has its own keys; this is where they are checked and their paths made absolute, so that every
later error about a set can name the YAML line that defines it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from dfb_ood.harness.data.schema_fields import SchemaReader
from dfb_ood.harness.data.specs import MAX_SEED, MAX_SHAPES_PIXELS, SET_TYPES, SetSpec

_SET_KEYS = {
    "imglist": {"list", "images"},
    "torchvision": {"dataset", "split", "root", "download", "options"},
    "folder": {"path", "classes"},
    "shapes": {"set", "count", "seed", "size"},
    "arrays": {"file", "key", "sha256"},
}
_COMMON_SET_KEYS = {"type", "subset", "description"}


class SetParser(SchemaReader):
    """The set entries of a benchmark YAML; :meth:`set_spec` reads one.

    ``root`` and ``images`` (the benchmark's defaults for relative paths) and ``class_ids`` (the
    drawn classes of a class subset) are set by the top-level parser before any set is read.
    """

    root: Path
    images: Path
    class_ids: tuple[int, ...] | None = None

    def set_spec(self, name: str, role: str, value: Any, keys: tuple[str, ...]) -> SetSpec:
        """The set ``name`` (of ``role``) that ``value``, at ``keys`` of the YAML, defines."""
        source = self.where(*keys)
        if isinstance(value, str):  # the plain form: an OpenOOD image list
            value = {"type": "imglist", "list": value}
        elif not isinstance(value, dict):
            raise self.fail(keys, f"a set is a list-file path or a mapping with a type, got {value!r}")
        set_type = value.get("type")
        if set_type not in SET_TYPES:
            raise self.fail(
                (*keys, "type"), f"set type must be one of {', '.join(SET_TYPES)}, got {set_type!r}"
            )
        allowed = _SET_KEYS[set_type] | _COMMON_SET_KEYS
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(
                (*keys, unknown[0]),
                f"unknown key {unknown[0]!r} for a {set_type} set; allowed: {', '.join(sorted(allowed))}",
            )
        params: dict[str, Any] = {"subset": self.subset(value.get("subset"), (*keys, "subset"))}
        if self.class_ids is not None and role.startswith("id_"):
            if set_type != "imglist":
                raise self.fail(
                    (*keys, "type"),
                    f"id_classes keeps the drawn classes of image-list ID sets; {name} is a {set_type} set "
                    "(write its files into an OpenOOD list, see docs/benchmarks.md)",
                )
            params["class_ids"] = self.class_ids
        if set_type == "imglist":
            if "list" not in value:
                raise self.fail(keys, "an imglist set needs list: <path to the list file>")
            params["list"] = self.path_value(value["list"], (*keys, "list"), self.root)
            images = self.images
            if "images" in value:
                images = self.path_value(value["images"], (*keys, "images"), self.root)
            params["images"] = images
        elif set_type == "torchvision":
            if not isinstance(value.get("dataset"), str):
                raise self.fail(keys, "a torchvision set needs dataset: <class name>, e.g. CIFAR10")
            params["dataset"] = value["dataset"]
            params["split"] = str(value.get("split", "test"))
            params["root"] = self.root
            if "root" in value:
                params["root"] = self.path_value(value["root"], (*keys, "root"), self.root)
            params["download"] = value.get("download", False) is True
            options = value.get("options") or {}
            if not isinstance(options, dict):
                raise self.fail((*keys, "options"), "options must be a mapping of keyword arguments")
            params["options"] = dict(options)
        elif set_type == "folder":
            if "path" not in value:
                raise self.fail(keys, "a folder set needs path: <image folder>")
            params["path"] = self.path_value(value["path"], (*keys, "path"), self.root)
            classes = value.get("classes")
            if classes is not None and not (
                isinstance(classes, list) and all(isinstance(c, str) for c in classes)
            ):
                raise self.fail((*keys, "classes"), "classes must list subfolder names in label order")
            params["classes"] = list(classes) if classes is not None else None
        elif set_type == "arrays":
            if "file" not in value:
                raise self.fail(keys, "an arrays set needs file: <path to the .npz file>")
            params["file"] = self.path_value(value["file"], (*keys, "file"), self.root)
            array_key = value.get("key", name)
            if not (isinstance(array_key, str) and re.fullmatch(r"[A-Za-z0-9_]{1,64}", array_key)):
                raise self.fail((*keys, "key"), f"key must be letters, digits or '_', got {array_key!r}")
            params["key"] = array_key
            digest = value.get("sha256")
            if digest is not None and not (isinstance(digest, str) and re.fullmatch(r"[0-9a-f]{64}", digest)):
                raise self.fail((*keys, "sha256"), f"sha256 must be 64 lowercase hex digits, got {digest!r}")
            params["sha256"] = digest
        else:  # shapes
            params["set"] = str(value.get("set", name))
            count = value.get("count")
            params["count"] = None if count is None else self.integer(count, (*keys, "count"))
            params["seed"] = self.integer(value.get("seed", 0), (*keys, "seed"), minimum=0, maximum=MAX_SEED)
            params["size"] = self.side(value.get("size", self.raw["image_size"]), (*keys, "size"))
            if params["count"] is not None and params["count"] * params["size"] ** 2 * 3 > MAX_SHAPES_PIXELS:
                raise self.fail(
                    (*keys, "count"),
                    f"{params['count']} shapes of {params['size']}x{params['size']} would take more than "
                    f"{MAX_SHAPES_PIXELS >> 30} GiB; give a smaller count or size",
                )
        return SetSpec(name=name, type=set_type, params=params, source=source, role=role)

    def subset(self, value: Any, keys: tuple[str, ...]) -> tuple[int, int] | None:
        """A set's ``subset: [start, stop]``, or None."""
        if value is None:
            return None
        ok = isinstance(value, list) and len(value) == 2
        ok = ok and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value)
        if not ok or value[0] >= value[1]:
            raise self.fail(keys, f"subset must be [start, stop] with 0 <= start < stop, got {value!r}")
        return (value[0], value[1])
