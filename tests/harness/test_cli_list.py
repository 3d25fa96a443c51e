"""`harness list detectors`: the bases grouped by what they declare they read, grids marked from the YAMLs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from rich.text import Text
from typer.testing import CliRunner

from dfb_ood.harness.cli import app
from dfb_ood.harness.cli_list import _detector_table
from dfb_ood.harness.detectors import READS, build_detector, detector_catalog, detector_info
from dfb_ood.postprocessors import registry

ROOT = Path(__file__).resolve().parents[2]
runner = CliRunner()


def _yaml_grid(name: str) -> list[str]:
    config = yaml.safe_load((ROOT / "configs" / "postprocessors" / f"{name}.yaml").read_text())
    return list(config.get("search") or {})


def _table_rows() -> list[dict[str, str]]:
    """The rendered table's rows, each row's group ("reads") filled in from its section's first row."""
    table = _detector_table()
    headers = [str(column.header) for column in table.columns]
    cells = [[Text.from_markup(str(cell)).plain for cell in column.cells] for column in table.columns]
    rows, group = [], ""
    for values in zip(*cells):
        row = dict(zip(headers, values))
        group = row["reads"] or group
        rows.append({**row, "reads": group})
    return rows


def test_every_base_is_in_the_group_of_what_it_declares() -> None:
    groups = detector_catalog()
    placed = {info.name: reads for reads, infos in groups.items() for info in infos}
    assert sorted(placed) == sorted(registry.BASES), "each base exactly once"
    for name, reads in placed.items():
        cls = registry.BASES[name]
        declared = (cls.requires_logits, cls.requires_features, cls.requires_head)
        expected = [what for what, flag in zip(READS, declared) if flag]
        if build_detector(name).needs_network:  # with its configured defaults
            expected.append("network pass")
        assert reads == " + ".join(expected), name
    # the ones the issue names
    assert placed["gradnorm"] == "logits + features"  # GradNorm declares features, not the head
    assert placed["fdbd"] == "logits + features + head"
    assert placed["odin"] == "logits + network pass"  # the configured noise 0.0014 perturbs inputs
    assert placed["mds"] == placed["knn"] == placed["rmds"] == "features"
    assert placed["react"] == placed["ash_b"] == placed["residual"] == "features + head"
    assert placed["msp"] == placed["energy"] == "logits"
    assert placed["rankfeat"] == "logits + network pass"  # the rank-1 removal acts on the feature map
    assert [info.name for reads, infos in groups.items() if "network pass" in reads for info in infos] == [
        "odin",
        "rankfeat",
    ]


def test_groups_keep_registry_order_and_come_in_a_fixed_order() -> None:
    groups = detector_catalog()
    assert list(groups) == [
        "logits",
        "logits + features",
        "logits + features + head",
        "features",
        "features + head",
        "logits + network pass",
    ]
    order = list(registry.BASES)
    for infos in groups.values():
        positions = [order.index(info.name) for info in infos]
        assert positions == sorted(positions)


def test_odin_without_noise_reads_cached_logits() -> None:
    """The group follows the declaration: ODIN at noise 0 (the DFB release's setting) needs no pass."""
    assert registry.create("odin", noise=0.0).needs_network is False
    assert detector_info("odin").reads == ("logits", "network pass")


@pytest.mark.parametrize("name", list(registry.BASES))
def test_the_grid_column_is_the_yaml_search(name: str) -> None:
    row = next(row for row in _table_rows() if row["detector"] == name)
    grid = _yaml_grid(name)
    assert row["grid (--search)"] == (", ".join(grid) if grid else "-")
    info = detector_info(name)
    assert row["reads"] == info.reads_text and row["fusion"] == registry.BASES[name].fusion_kind
    assert row["fits"] == ("yes" if registry.BASES[name].requires_fit else "no")


def test_grid_bearing_detectors_are_marked() -> None:
    rows = {row["detector"]: row for row in _table_rows()}
    with_grid = {name for name in registry.BASES if _yaml_grid(name)}
    assert {"odin", "vim", "knn", "react", "gen", "nnguide", "relation", "fdbd", "residual"} <= with_grid
    assert {"msp", "energy", "mds", "gradnorm", "she", "rmds", "tempscale"}.isdisjoint(with_grid)
    assert {name for name, row in rows.items() if row["grid (--search)"] != "-"} == with_grid


def test_list_detectors_prints_groups_variants_bg_and_aliases() -> None:
    result = runner.invoke(app, ["list", "detectors"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    for group in detector_catalog():
        assert group in output
    rows = _table_rows()
    assert rows[-1]["detector"] == "bg" and rows[-1]["reads"] == "background logit"
    assert [row["detector"] for row in rows] == [
        *[i.name for g in detector_catalog().values() for i in g],
        "bg",
    ]
    assert "Each base also as <base>_dfb (Eq. 7 fusion, T 2.5; grid adds fusion_temperature)" in output
    assert "<base>_dfbz (z-score fusion on ID-val; grid adds bg_weight)" in output
    assert "bg (the DFB net's background logit alone): no variants" in output
    assert "ebo -> energy" in output and "ash -> ash_b" in output
    # DFB variants are named compactly, not one per row
    assert "msp_dfb" not in output and "vim_dfbz" not in output
    # the plain `harness list` shows the same table first
    everything = runner.invoke(app, ["list"], env={"COLUMNS": "200"})
    assert everything.exit_code == 0 and "logits + network pass" in everything.output
