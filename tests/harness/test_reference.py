"""Published reference numbers: the YAML equals METHOD.md, comparisons match and flag what differs."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from rich.console import Console

from dfb_ood.harness.config import configs_root
from dfb_ood.harness.reference import (
    Reference,
    available_references,
    compare,
    comparison_table,
    describe_reference_scope,
    load_reference,
    reference_from_file,
)
from dfb_ood.postprocessors import registry

REPO = Path(__file__).resolve().parents[2]
METHOD_MD = REPO.parent / "shared" / "docs" / "METHOD.md"
REFERENCE_DIR = configs_root() / "reference"
NUM = r"(\d+(?:\.\d+)?)"  # a printed number, without a sentence's full stop


# --------------------------------------------------------------------------------------------------
# METHOD.md section 6, parsed independently of the YAML
# --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def method_numbers() -> dict:
    """Every number of METHOD.md section 6, keyed like the YAML files (percent, as printed)."""
    if not METHOD_MD.is_file():
        pytest.skip(
            f"METHOD.md not found at {METHOD_MD} (the shared docs are not checked out beside the repo)"
        )
    text = METHOD_MD.read_text(encoding="utf-8")
    match = re.search(r"^## 6\..*?(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, "METHOD.md has no section 6"
    section = match.group(0)
    numbers: dict = {"tables": {}, "bg": {}, "accuracy": {}, "openood": {}}
    for label in ("Table 1", "Table 2"):
        block = section[section.index(label) :]
        # The first markdown table after the label: header, separator, then rows until a gap.
        table_lines = []
        for line in block.splitlines()[1:]:
            if line.startswith("|"):
                table_lines.append(line)
            elif table_lines:
                break
        assert table_lines
        header = [c.strip() for c in table_lines[0].strip("|").split("|")]
        rows = {}
        for line in table_lines[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = {
                column: [float(v) for v in cell.split("/")] for column, cell in zip(header[1:], cells[1:])
            }
        numbers["tables"][label] = rows
    flat = " ".join(section.split())
    table3 = flat[flat.index("Table 3") : flat.index("Table 4")]
    for bench, body, avg in re.findall(rf"ID (CIFAR-10|CIFAR-100): ([^()]*?) \(avg {NUM}\)", table3):
        cells = {name: float(v) for name, v in re.findall(rf"([A-Za-z0-9]+) {NUM}", body)}
        numbers["bg"][bench] = {**cells, "Average": float(avg)}
    vanilla = re.search(rf"vanilla {NUM}% \(CIFAR-10\), {NUM}% \(CIFAR-100\)", flat)
    dfb = re.search(rf"DFB \([^)]*\) {NUM}%, {NUM}%", flat)
    assert vanilla and dfb, "Table 4 not found in METHOD.md"
    numbers["accuracy"] = {
        "vanilla": {"CIFAR-10": float(vanilla.group(1)), "CIFAR-100": float(vanilla.group(2))},
        "DFB": {"CIFAR-10": float(dfb.group(1)), "CIFAR-100": float(dfb.group(2))},
    }
    board = flat[flat.index("OpenOOD v1.5 leaderboard") :]
    for bench, body in re.findall(r"(CIFAR-10|CIFAR-100): (.*?)(?= CIFAR-100:|$)", board):
        numbers["openood"][bench] = {
            name: [float(near), float(far)] for name, near, far in re.findall(rf"(\w+) {NUM}/{NUM}", body)
        }
    return numbers


def _raw(name: str) -> dict:
    return yaml.safe_load((REFERENCE_DIR / f"{name}.yaml").read_text(encoding="utf-8"))


def _tables(raw: dict) -> dict:
    return {table["id"]: table for table in raw["tables"]}


def test_paper_tables_1_2_equal_method_md(method_numbers):
    tables = _tables(_raw("dfb-paper"))
    for label, table_id in (("Table 1", "table1"), ("Table 2", "table2")):
        theirs, ours = method_numbers["tables"][label], tables[table_id]
        assert len(theirs) == 8
        assert ours["metrics"] == ["fpr95", "auroc", "aupr_in"]
        assert set(ours["rows"]) == set(theirs), label
        for method, cells in theirs.items():
            assert set(ours["rows"][method]) == set(cells), (label, method)
            for column, values in cells.items():
                assert ours["rows"][method][column] == values, (label, method, column)


def test_paper_tables_3_4_equal_method_md(method_numbers):
    raw = _raw("dfb-paper")
    tables = _tables(raw)
    assert tables["table3_cifar10"]["rows"]["BG"] == method_numbers["bg"]["CIFAR-10"]
    assert tables["table3_cifar100"]["rows"]["BG"] == method_numbers["bg"]["CIFAR-100"]
    assert raw["id_accuracy"]["rows"] == method_numbers["accuracy"]


def test_openood_leaderboard_equals_method_md(method_numbers):
    tables = _tables(_raw("openood-v1.5"))
    for bench, table_id in (("CIFAR-10", "leaderboard_cifar10"), ("CIFAR-100", "leaderboard_cifar100")):
        theirs = method_numbers["openood"][bench]
        assert len(theirs) == 13
        rows = tables[table_id]["rows"]
        assert {name: [cells["near"], cells["far"]] for name, cells in rows.items()} == theirs, bench


def test_loaded_values_are_fractions_of_the_printed_percent(method_numbers):
    reference = load_reference("dfb-paper")
    columns = {"CIFAR100": "cifar100", "SVHN": "svhn", "Places365": "places365", "Textures": "texture"}
    msp = method_numbers["tables"]["Table 1"]["MSP"]
    for column, dataset in columns.items():
        (entry,) = [
            e
            for e in reference.entries
            if e.benchmark == "cifar10_dfb" and e.detector == "msp" and e.dataset == dataset
        ]
        fpr, auroc, aupr = msp[column]
        assert entry.metrics == pytest.approx(
            {"fpr95": fpr / 100, "auroc": auroc / 100, "aupr_in": aupr / 100}
        )
    for entry in reference.entries:
        assert all(0.0 <= v <= 1.0 for v in entry.metrics.values())


def test_paper_average_is_the_plain_mean_of_its_four_sets(method_numbers):
    # Why all_mean is compared with Average: both are a plain mean over the same four sets (to rounding).
    for rows in method_numbers["tables"].values():
        for method, cells in rows.items():
            per_set = [values for column, values in cells.items() if column != "Average"]
            for index in range(3):
                mean = sum(v[index] for v in per_set) / len(per_set)
                assert abs(mean - cells["Average"][index]) <= 0.0101, (method, index)
    for cells in method_numbers["bg"].values():
        per_set = [v for k, v in cells.items() if k != "Average"]
        assert abs(sum(per_set) / 4 - cells["Average"]) <= 0.0101


# --------------------------------------------------------------------------------------------------
# The shipped files: metadata and name mappings
# --------------------------------------------------------------------------------------------------


def test_available_and_metadata():
    assert {"dfb-paper", "openood-v1.5"} <= set(available_references())
    paper, openood = load_reference("dfb-paper"), load_reference("openood-v1.5")
    assert (paper.network_config, paper.image_size, paper.fpr_convention, paper.seeds) == (
        "bit_r50x1",
        128,
        "paper",
        None,
    )
    assert (openood.network_config, openood.image_size, openood.fpr_convention, openood.seeds) == (
        "resnet18_32x32",
        32,
        "openood",
        3,
    )
    assert "ACM MM 2024" in paper.source and "OpenOOD v1.5" in openood.source
    assert paper.aupr_note and openood.aupr_note
    assert paper.benchmarks == ["cifar10_dfb", "cifar100_dfb"]
    assert openood.benchmarks == ["cifar10", "cifar100"]


def test_method_name_mappings():
    paper, openood = load_reference("dfb-paper"), load_reference("openood-v1.5")
    assert paper.methods == {
        "MSP": "msp",
        "MSP-DFB": "msp_dfb",
        "ODIN": "odin",
        "ODIN-DFB": "odin_dfb",
        "Energy": "energy",
        "Energy-DFB": "energy_dfb",
        "ViM": "vim",
        "ViM-DFB": "vim_dfb",
        "BG": "bg",
    }
    assert openood.methods == {
        "MSP": "msp",
        "ODIN": "odin",
        "EBO": "energy",
        "ViM": "vim",
        "MLS": "mls",
        "KLM": "klm",
        "ReAct": "react",
        "KNN": "knn",
        "MDS": "mds",
        "ASH": "ash_b",
        "SHE": "she",
        "GEN": "gen",
        "RMDS": "rmds",
    }
    assert openood.unmatched_methods == []
    for reference in (paper, openood):
        for detector in reference.detectors:
            assert registry.canonical_name(detector) == detector


def test_dataset_mappings():
    paper, openood = load_reference("dfb-paper"), load_reference("openood-v1.5")
    table1 = {e.their_dataset: e.dataset for e in paper.entries if e.table == "table1"}
    assert table1 == {
        "CIFAR100": "cifar100",
        "SVHN": "svhn",
        "Places365": "places365",
        "Textures": "texture",
        "Average": "average",
    }
    table2 = {e.their_dataset: e.dataset for e in paper.entries if e.table == "table2"}
    assert table2["CIFAR10"] == "cifar10" and table2["Textures"] == "texture"
    average = next(e for e in paper.entries if e.dataset == "average")
    assert average.our_dataset == "all_mean"
    assert {e.dataset for e in openood.entries} == {"near_mean", "far_mean"}
    assert {e.metrics.keys() == {"auroc"} for e in openood.entries} == {True}
    accuracy = [e for e in paper.entries if e.dataset == "id_test"]
    assert {(e.benchmark, e.network, round(e.metrics["id_accuracy"], 6)) for e in accuracy} == {
        ("cifar10_dfb", "classifier", 0.9725),
        ("cifar100_dfb", "classifier", 0.8594),
        ("cifar10_dfb", "dfb", 0.9713),
        ("cifar100_dfb", "dfb", 0.8617),
    }


def test_describe_scope():
    text = describe_reference_scope(load_reference("dfb-paper"))
    assert text.startswith("dfb-paper covers cifar10_dfb, cifar100_dfb for msp, msp_dfb, odin")
    assert "bg" in text and "all_mean" in text
    text = describe_reference_scope(load_reference("openood-v1.5"))
    assert "cifar10, cifar100" in text and "have no detector" not in text and "near_mean" in text


def test_methods_without_a_detector_are_kept_but_never_matched(tmp_path):
    """A published method we lack (mapped to null) keeps its numbers and is named as unmatched."""
    source = configs_root() / "reference" / "openood-v1.5.yaml"
    text = source.read_text(encoding="utf-8").replace("  SHE: she\n", "  SHE: null\n")
    path = tmp_path / "openood-v1.5.yaml"  # a reference is named after its file
    path.write_text(text, encoding="utf-8")
    reference = reference_from_file(path)
    assert reference.unmatched_methods == ["SHE"]
    assert any(e.their_name == "SHE" and e.detector is None for e in reference.entries)
    assert "SHE have no detector" in describe_reference_scope(reference)


# --------------------------------------------------------------------------------------------------
# compare
# --------------------------------------------------------------------------------------------------

CIFAR10_DFB_SETS = {"cifar100": "near", "svhn": "far", "places365": "far", "texture": "far"}
CIFAR10_SETS = {
    "cifar100": "near",
    "tin": "near",
    "mnist": "far",
    "svhn": "far",
    "texture": "far",
    "places365": "far",
}


def _rows(benchmark, network, detector, sets, *, convention="paper", seed=0, value=0.5, skip=()):
    net = "dfb" if detector.endswith("_dfb") or detector == "bg" else "classifier"
    rows = []
    for dataset, group in sets.items():
        if dataset not in skip:
            rows.append((dataset, group))
    rows += [("near_mean", "near_mean"), ("far_mean", "far_mean"), ("all_mean", "all_mean")]
    return [
        {
            "benchmark": benchmark,
            "network": network,
            "seed": seed,
            "detector": detector,
            "detector_network": net,
            "dataset": dataset,
            "group": group,
            "auroc": value,
            "aupr_in": value,
            "aupr_out": value,
            "fpr95": 1 - value,
            "fpr_convention": convention,
            "id_accuracy": 0.9,
        }
        for dataset, group in rows
    ]


MATCHING_OPENOOD = {"network": "resnet18_32x32", "eval_size": 32, "fpr_convention": "openood", "seeds": 3}


def _find(rows, detector, dataset, metric):
    found = [
        r for r in rows if r["detector"] == detector and r["dataset"] == dataset and r["metric"] == metric
    ]
    assert len(found) == 1, (detector, dataset, metric, found)
    return found[0]


def test_compare_matches_paper_entries_and_differences():
    paper = load_reference("dfb-paper")
    rows = _rows("cifar10_dfb", "bit_r50x1", "msp", CIFAR10_DFB_SETS, value=0.9)
    rows += _rows("cifar10_dfb", "bit_r50x1", "mls", CIFAR10_DFB_SETS)  # not in the paper
    out = compare(rows, paper, {"network": "bit_r50x1", "eval_size": 128})
    # 4 sets + Average, 3 metrics each, for msp; ID accuracy of the classifier; nothing for mls or near/far.
    assert len(out) == 5 * 3 + 1
    assert {r["detector"] for r in out} == {"msp", "classifier (K)"}
    assert not any(r["dataset"] in ("near_mean", "far_mean") for r in out)
    row = _find(out, "msp", "cifar100", "fpr95")
    assert row["theirs"] == pytest.approx(0.3344)
    assert row["ours"] == pytest.approx(0.1)
    assert row["difference"] == pytest.approx(0.1 - 0.3344)
    assert (row["their_name"], row["their_dataset"], row["table"]) == ("MSP", "CIFAR100", "table1")
    average = _find(out, "msp", "all_mean", "auroc")
    assert average["their_dataset"] == "Average" and average["theirs"] == pytest.approx(0.9383)
    accuracy = _find(out, "classifier (K)", "id_test", "id_accuracy")
    assert accuracy["theirs"] == pytest.approx(0.9725) and accuracy["difference"] == pytest.approx(
        0.9 - 0.9725
    )
    aupr = _find(out, "msp", "texture", "aupr_in")
    assert aupr["theirs"] == pytest.approx(0.9838)


def test_compare_flags_fpr_convention_only_on_fpr95():
    paper = load_reference("dfb-paper")
    rows = _rows("cifar10_dfb", "bit_r50x1", "msp_dfb", CIFAR10_DFB_SETS, convention="openood")
    out = compare(rows, paper, {"eval_size": 128})
    fpr = _find(out, "msp_dfb", "svhn", "fpr95")
    assert any(c.startswith("FPR@95 convention differs") for c in fpr["caveats"])
    assert fpr["fpr_convention"] == "openood" and fpr["their_fpr_convention"] == "paper"
    assert fpr["theirs"] == pytest.approx(0.0255)  # still shown, flagged
    auroc = _find(out, "msp_dfb", "svhn", "auroc")
    assert not any("FPR@95" in c for c in auroc["caveats"])
    same = compare(_rows("cifar10_dfb", "bit_r50x1", "msp_dfb", CIFAR10_DFB_SETS), paper, {"eval_size": 128})
    assert not any("FPR@95" in c for r in same for c in r["caveats"])


def test_compare_paper_caveats_that_always_hold():
    # Everything of ours matches the paper's setting, yet the paper states no seed count and not its
    # AUPR's positive class: those stay flagged; nothing else.
    paper = load_reference("dfb-paper")
    out = compare(_rows("cifar10_dfb", "bit_r50x1", "vim_dfb", CIFAR10_DFB_SETS), paper, {"eval_size": 128})
    auroc = _find(out, "vim_dfb", "cifar100", "auroc")
    assert auroc["caveats"] == ["number of seeds: ours 1, theirs not stated"]
    aupr = _find(out, "vim_dfb", "cifar100", "aupr_in")
    assert len(aupr["caveats"]) == 2 and aupr["caveats"][0].startswith("AUPR definition may differ")
    odin = compare(_rows("cifar10_dfb", "bit_r50x1", "odin", CIFAR10_DFB_SETS), paper, {"eval_size": 128})
    assert any("T = 2" in c for c in _find(odin, "odin", "svhn", "auroc")["caveats"])


def test_compare_openood_no_caveats_when_everything_matches():
    openood = load_reference("openood-v1.5")
    rows = []
    for seed in (0, 1, 2):
        rows += _rows(
            "cifar10",
            "resnet18_32x32",
            "knn",
            CIFAR10_SETS,
            convention="openood",
            seed=seed,
            value=0.9 + seed / 100,
        )
    out = compare(rows, openood, {"eval_size": 32})
    assert len(out) == 2  # near_mean and far_mean AUROC
    near = _find(out, "knn", "near_mean", "auroc")
    assert near["seeds"] == 3
    assert near["ours"] == pytest.approx(0.91)  # mean over the three seeds
    assert near["theirs"] == pytest.approx(0.9064)
    assert near["difference"] == pytest.approx(0.91 - 0.9064)
    assert near["caveats"] == []
    assert _find(out, "knn", "far_mean", "auroc")["theirs"] == pytest.approx(0.9296)


def test_compare_openood_caveats_when_setting_differs():
    openood = load_reference("openood-v1.5")
    rows = _rows("cifar100", "bit_r50x1", "energy", {**CIFAR10_SETS, "cifar10": "near"}, skip=("cifar100",))
    out = compare(rows, openood, {"eval_size": 128, "seeds": 1})
    far = _find(out, "energy", "far_mean", "auroc")
    assert far["their_name"] == "EBO" and far["theirs"] == pytest.approx(0.7977)
    text = " | ".join(far["caveats"])
    assert "network differs: ours bit_r50x1" in text and "resnet18_32x32" in text
    assert "image size differs: ours 128 px, theirs 32 px" in text
    assert "number of seeds differs: ours 1, theirs 3" in text
    assert not any("protocol" in c for c in far["caveats"])
    # Without run_info, the image size cannot be checked: said so rather than assumed equal.
    unknown = compare(rows, openood)
    assert any(
        "image size not checked" in c for c in _find(unknown, "energy", "near_mean", "auroc")["caveats"]
    )


def test_compare_flags_a_mean_over_other_sets():
    openood = load_reference("openood-v1.5")
    rows = _rows("cifar10", "resnet18_32x32", "msp", CIFAR10_SETS, convention="openood", skip=("mnist",))
    out = compare(rows, openood, MATCHING_OPENOOD)
    far = _find(out, "msp", "far_mean", "auroc")
    assert any(c.startswith("benchmark protocol differs: our far_mean") for c in far["caveats"])
    assert _find(out, "msp", "near_mean", "auroc")["caveats"] == []


def test_compare_no_match_is_empty():
    assert compare(_rows("shapes", "rv2_tiny", "msp", {"noise": "far"}), load_reference("dfb-paper")) == []
    # Right benchmark, detector OpenOOD has but we compare on the paper: nothing either.
    assert compare(_rows("cifar10", "resnet18_32x32", "msp", CIFAR10_SETS), load_reference("dfb-paper")) == []
    assert compare([], load_reference("openood-v1.5")) == []


def test_comparison_table_footnotes_each_caveat_once():
    paper = load_reference("dfb-paper")
    rows = _rows("cifar10_dfb", "rv2_tiny", "msp", CIFAR10_DFB_SETS, convention="openood")
    out = compare(rows, paper)
    table = comparison_table(out, "ours vs DFB paper", paper)
    console = Console(record=True, width=300)
    console.print(table)
    text = console.export_text()
    assert "33.44" in text and "ours vs DFB paper" in text
    caveats = list(dict.fromkeys(c for r in out for c in r["caveats"]))
    assert len(caveats) >= 4
    caption = str(table.caption)
    for index, caveat in enumerate(caveats, start=1):
        assert caption.count(caveat) == 1
        assert f"[{index}] {caveat}" in caption
    assert "Average" in caption and paper.source in caption
    assert table.row_count == len(out)
    empty = comparison_table([], "nothing")
    assert "No row of ours matches" in str(empty.caption)


# --------------------------------------------------------------------------------------------------
# Validation of bad files
# --------------------------------------------------------------------------------------------------


def _write_variant(tmp_path: Path, name: str, change) -> Path:
    data = _raw(name)
    change(data)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_shipped_file_copy_loads(tmp_path):
    path = tmp_path / "dfb-paper.yaml"
    shutil.copy(REFERENCE_DIR / "dfb-paper.yaml", path)
    assert isinstance(reference_from_file(path), Reference)


@pytest.mark.parametrize(
    ("name", "change", "key"),
    [
        ("dfb-paper", lambda d: d.pop("network"), "network"),
        ("dfb-paper", lambda d: d.pop("fpr_convention"), "fpr_convention"),
        ("dfb-paper", lambda d: d.update(fpr_convention="hendrycks"), "fpr_convention"),
        ("dfb-paper", lambda d: d["aupr"].pop("definition"), "aupr.definition"),
        ("dfb-paper", lambda d: d.update(seeds=0), "seeds"),
        ("dfb-paper", lambda d: d.update(network_config="resnet9000"), "network_config"),
        (
            "dfb-paper",
            lambda d: d["tables"][0]["rows"]["MSP"].update(CIFAR100=[101.0, 89.01, 84.10]),
            "tables[0].rows.MSP.CIFAR100.fpr95",
        ),
        (
            "dfb-paper",
            lambda d: d["tables"][1]["rows"]["ViM"].update(SVHN=[10.23, -1.0, 95.74]),
            "tables[1].rows.ViM.SVHN.auroc",
        ),
        (
            "dfb-paper",
            lambda d: d["tables"][0]["rows"]["MSP"].update(SVHN=[17.40, 95.72]),
            "tables[0].rows.MSP.SVHN",
        ),
        ("dfb-paper", lambda d: d["tables"][0]["rows"]["MSP"].pop("Textures"), "tables[0].rows.MSP.Textures"),
        ("dfb-paper", lambda d: d["tables"][0].pop("benchmark"), "tables[0].benchmark"),
        (
            "dfb-paper",
            lambda d: d["tables"][0]["columns"].update(Textures="textures"),
            "tables[0].columns.Textures",
        ),
        (
            "dfb-paper",
            lambda d: d["tables"][0].update(metrics=["fpr95", "auroc", "aupr"]),
            "tables[0].metrics",
        ),
        ("dfb-paper", lambda d: d["methods"].update(ViM="vim_plus"), "methods.ViM"),
        ("dfb-paper", lambda d: d["methods"].pop("BG"), "tables[2].rows.BG"),
        (
            "dfb-paper",
            lambda d: d["id_accuracy"]["rows"]["DFB"].update({"CIFAR-10": 197.13}),
            "id_accuracy.rows.DFB.CIFAR-10",
        ),
        ("dfb-paper", lambda d: d.update(name="paper"), "name"),
        (
            "openood-v1.5",
            lambda d: d["tables"][0]["rows"]["KNN"].update(near=True),
            "tables[0].rows.KNN.near",
        ),
        (
            "openood-v1.5",
            lambda d: d["tables"][1]["rows"]["ASH"].update(far="80.58"),
            "tables[1].rows.ASH.far",
        ),
    ],
)
def test_bad_yaml_names_file_and_key(tmp_path, name, change, key):
    path = _write_variant(tmp_path, name, change)
    with pytest.raises(ValueError) as error:
        reference_from_file(path)
    message = str(error.value)
    assert str(path) in message
    # The key itself, or a value under it (a cell's metric), is named.
    assert f": {key}:" in message or f": {key}." in message, message


def test_invalid_yaml_syntax_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("name: broken\ntables: [\n", encoding="utf-8")
    with pytest.raises(ValueError, match="broken.yaml"):
        reference_from_file(path)


def test_unknown_reference_lists_known_ones():
    with pytest.raises(ValueError, match="dfb-paper"):
        load_reference("no-such-paper")
