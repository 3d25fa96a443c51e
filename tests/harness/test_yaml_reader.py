"""The one YAML reader: plain data, the line of every key, repeated keys refused only when asked."""

from __future__ import annotations

import pytest

from dfb_ood.harness.config import load_yaml
from dfb_ood.harness.yaml_reader import read_yaml


def test_every_key_and_item_has_its_line(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\nb:\n  c: [1, 2]\n  d:\n    - e\n    - f\n", encoding="utf-8")
    document = read_yaml(path)
    assert document.data == {"a": 1, "b": {"c": [1, 2], "d": ["e", "f"]}}
    assert document.lines[("a",)] == 1 and document.lines[("b", "c")] == 3
    assert document.lines[("b", "d", "1")] == 6
    assert document.where("b", "d", "0") == f"{path}:5"
    assert document.where("b", "missing") == f"{path}:2"  # the deepest key the index knows
    assert document.where("nothing") == f"{path}:1"


def test_repeated_keys_are_refused_only_when_asked(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("a: 1\nb: 2\na: 3\n", encoding="utf-8")
    assert read_yaml(path).mapping() == {"a": 3, "b": 2}  # what YAML itself keeps
    with pytest.raises(ValueError, match=r"x.yaml:3: key 'a' appears twice \(first at line 1\)"):
        read_yaml(path, unique_keys=True)


def test_merge_keys_are_not_repeats(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text("base: &b {k: 1}\nc:\n  <<: *b\n  <<: *b\n  j: 2\n", encoding="utf-8")
    assert read_yaml(path, unique_keys=True).data["c"] == {"k": 1, "j": 2}


def test_an_empty_file_is_an_empty_mapping_and_a_list_is_refused(tmp_path):
    empty, listed = tmp_path / "empty.yaml", tmp_path / "list.yaml"
    empty.write_text("", encoding="utf-8")
    listed.write_text("- 1\n", encoding="utf-8")
    assert read_yaml(empty).data is None and read_yaml(empty).mapping() == {} == load_yaml(empty)
    with pytest.raises(ValueError, match="list.yaml: expected a mapping at the top level, got list"):
        load_yaml(listed)
