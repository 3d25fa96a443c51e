"""`harness data check` / `download` and check_benchmark: counts, missing, undecodable, hints."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dfb_ood.harness.cli_data import data_app
from dfb_ood.harness.data import check_benchmark, load_benchmark
from tests.harness.test_data_benchmark import (
    FMNIST_YAML,
    make_openood_root,
    needs_fmnist,
    write_png,
    write_yaml,
)

runner = CliRunner()
HEAD = "num_classes: 1\nimage_size: 8\nnormalization: {mean: 0.5, std: 0.5}\n"

FMNIST_COUNTS = {
    ("id_train", "train"): 10000,
    ("id_val", "val"): 1000,
    ("id_test", "test"): 2000,
    ("ood_val", "ood_val"): 500,
    ("near", "mnist"): 2000,
    ("near", "glyphs"): 2000,
    ("far", "textures"): 2000,
    ("far", "photos"): 2000,
}


def table_rows(output: str) -> dict[tuple[str, str], list[str]]:
    """The body rows of a rich table, keyed by (role, set)."""
    rows = {}
    for line in output.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if len(cells) == 7 and cells[0] and cells[0] != "role":
            rows[(cells[0], cells[1])] = cells
    return rows


@needs_fmnist
def test_cli_check_lists_every_fmnist_set_with_its_count():
    result = runner.invoke(data_app, ["check", str(FMNIST_YAML)])
    assert result.exit_code == 0, result.output
    rows = table_rows(result.output)
    assert {key: int(cells[3]) for key, cells in rows.items()} == FMNIST_COUNTS
    assert all(cells[4] == "0" and cells[5] == "0/64" and cells[6] == "ok" for cells in rows.values())
    assert "All 8 sets are in place" in result.output


@needs_fmnist
def test_check_benchmark_on_fmnist():
    reports = check_benchmark(load_benchmark(FMNIST_YAML), sample=8)
    assert {(r.role, r.name): r.count for r in reports} == FMNIST_COUNTS
    assert all(r.ok and r.checked == 8 and r.missing == 0 for r in reports)


@pytest.fixture
def damaged(tmp_path):
    """A tiny OpenOOD root with one missing file, one undecodable image and one bad line."""
    root = tmp_path / "root"
    yaml_path = make_openood_root(root)
    (root / "images_classic/tiny/test/c1/0000.png").unlink()
    (root / "images_classic/near/0002.png").write_bytes(b"\x89PNG truncated")
    with (root / "benchmark_imglist/tiny/val_tiny.txt").open("a") as handle:
        handle.write("tiny/val/c0/0000.png 7\n")
    return yaml_path, root


def test_check_reports_missing_undecodable_and_bad_lines(damaged):
    yaml_path, root = damaged
    reports = {r.name: r for r in check_benchmark(load_benchmark(yaml_path, data_root=root))}
    assert reports["train"].ok and reports["train"].count == 6
    test = reports["test"]
    assert test.status == "missing" and test.missing == 1 and test.count == 6
    assert test.missing_examples == [
        f"{root}/benchmark_imglist/tiny/test_tiny.txt:3: {root}/images_classic/tiny/test/c1/0000.png"
    ]
    near = reports["nearset"]
    assert near.status == "bad" and near.undecodable == 1 and near.checked == 4
    assert "test_near.txt:3: cannot decode image" in near.undecodable_examples[0]
    val = reports["val"]
    assert val.status == "bad" and val.bad_lines == 1
    assert "val_tiny.txt:7: label 7 outside 0..2" in val.bad_line_examples[0]
    assert test.hint.startswith(f"check {root}/benchmark_imglist/tiny/test_tiny.txt")


def test_cli_check_exits_1_and_explains(damaged):
    yaml_path, root = damaged
    result = runner.invoke(data_app, ["check", str(yaml_path), "--data-root", str(root)])
    assert result.exit_code == 3  # missing input (harness.errors)
    rows = table_rows(result.output)
    assert rows[("id_test", "test")][4:] == ["1", "0/5", "missing"]  # the 5 present images decoded
    assert rows[("near", "nearset")][4:] == ["0", "1/4", "bad"]
    assert "3 of 6 sets are not usable" in result.output
    assert "test_tiny.txt:3" in result.output and "hint: check" in result.output


def test_sample_versus_full_decoding(tmp_path):
    for i in range(10):
        write_png(tmp_path / f"{i}.png", i)
    (tmp_path / "5.png").write_bytes(b"junk")
    (tmp_path / "l.txt").write_text("".join(f"{i}.png 0\n" for i in range(10)))
    write_png(tmp_path / "ood.png", 3)
    (tmp_path / "o.txt").write_text("ood.png 0\n")  # not l.txt: an OOD set naming ID images is a problem
    path = write_yaml(
        tmp_path / "b.yaml", HEAD + "id: {train: l.txt, val: l.txt, test: l.txt}\nood: {far: {x: o.txt}}\n"
    )
    bench = load_benchmark(path)
    sampled = check_benchmark(bench, sample=2)[0]  # decodes images 0 and 9 only
    assert sampled.ok and sampled.checked == 2
    full = check_benchmark(bench, full=True)[0]
    assert full.undecodable == 1 and full.checked == 10
    assert runner.invoke(data_app, ["check", str(path), "--sample", "2"]).exit_code == 0
    assert runner.invoke(data_app, ["check", str(path), "--full"]).exit_code == 3  # missing input


def test_cli_check_missing_data_root_is_one_message(tmp_path):
    result = runner.invoke(data_app, ["check", "cifar10", "--data-root", str(tmp_path / "none")])
    assert result.exit_code == 3  # missing input (harness.errors)
    assert result.output.count("does not exist") == 1
    assert "harness data download cifar10" in result.output and "--data-root" in result.output


def test_cli_check_uses_harness_data_env(tmp_path, monkeypatch):
    yaml_path = make_openood_root(tmp_path / "root")
    monkeypatch.setenv("HARNESS_DATA", str(tmp_path / "root"))
    result = runner.invoke(data_app, ["check", str(yaml_path)])
    assert result.exit_code == 0, result.output


def test_check_torchvision_set_missing_gives_the_class_to_download(tmp_path):
    cifar = "{type: torchvision, dataset: CIFAR10, split: train}"
    text = HEAD + f"id: {{train: {cifar}, val: l.txt, test: l.txt}}\nood: {{far: {{x: l.txt}}}}\n"
    path = write_yaml(tmp_path / "tv.yaml", text)
    train = check_benchmark(load_benchmark(path))[0]
    assert train.status == "error" and train.count is None and "not found" in train.error
    assert train.hint.startswith(f"torchvision.datasets.CIFAR10(root={str(tmp_path)!r}, download=True)")


def test_check_shapes_needs_no_data():
    pytest.importorskip("dfb_ood.harness.data.shapes")
    reports = check_benchmark(load_benchmark("shapes"))
    assert all(r.ok for r in reports) and reports[0].count == 3000


def test_cli_check_unknown_benchmark():
    result = runner.invoke(data_app, ["check", "cifar11"])
    assert result.exit_code == 2 and "unknown benchmark 'cifar11'" in result.output


# -- download (the downloader itself is another module; a stand-in with its API) -------------------


@dataclass
class Status:
    name: str
    state: str
    path: Path


@pytest.fixture
def fake_download(monkeypatch):
    calls = []
    module = types.ModuleType("dfb_ood.harness.data.download")

    class DownloadError(RuntimeError):
        def __init__(self, message, statuses=None):
            super().__init__(message)
            self.statuses = statuses or []

    def download_benchmark(benchmark, data_root, *, force=False, console=None):
        calls.append((benchmark, Path(data_root), force))
        done = [Status("benchmark_imglist", "present", Path(data_root) / "benchmark_imglist")]
        if benchmark == "broken":
            raise DownloadError("broken: 1 of 2 archives failed: cifar10: quota exceeded", done)
        return [*done, Status("cifar10", "downloaded", Path(data_root) / "images_classic/cifar10")]

    module.DownloadError = DownloadError
    module.download_benchmark = download_benchmark
    monkeypatch.setitem(sys.modules, "dfb_ood.harness.data.download", module)
    return calls


def test_cli_download_prints_a_table(fake_download, tmp_path):
    result = runner.invoke(data_app, ["download", "cifar10", "--data-root", str(tmp_path), "--force"])
    assert result.exit_code == 0, result.output
    assert fake_download == [("cifar10", tmp_path, True)]
    assert "benchmark_imglist" in result.output and "downloaded" in result.output


def test_cli_download_failure_exits_with_the_system_code(fake_download, tmp_path):
    result = runner.invoke(data_app, ["download", "broken", "--data-root", str(tmp_path)])
    assert result.exit_code == 5  # system (harness.errors)
    assert "present" in result.output and "quota exceeded" in result.output


# -- text in brackets is printed as is (rich would read it as markup), errors go to stderr --------


def test_cli_download_keeps_brackets_in_the_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gdown", None)  # the real downloader, without its optional extra
    result = runner.invoke(data_app, ["download", "cifar10", "--data-root", str(tmp_path)])
    assert result.exit_code == 5  # system (harness.errors)
    assert "pip install 'dfb-ood[download]'" in result.stderr
    assert "download failed:" in result.stderr and "download failed" not in result.stdout


def test_cli_check_keeps_brackets_in_paths_names_and_errors(tmp_path):
    folder = tmp_path / "data [v2]"
    folder.mkdir()
    write_png(folder / "a.png")
    (folder / "l.txt").write_text("a.png 0\n[b].png 0\n")
    text = HEAD + "id: {train: l.txt, val: l.txt, test: l.txt}\nood: {far: {'x[1]': l.txt}}\n"
    # a set name is one plain file name (harness.names): brackets are refused, and kept in the error
    named = runner.invoke(data_app, ["check", str(write_yaml(folder / "named.yaml", text))])
    assert named.exit_code == 2 and "'x[1]'" in named.stderr and "'['" in named.stderr
    text = text.replace("x[1]", "x")
    path = write_yaml(folder / "b.yaml", text)
    result = runner.invoke(data_app, ["check", str(path)])
    assert result.exit_code == 3  # missing input (harness.errors)
    assert str(path) in result.stdout
    assert f"{folder / '[b].png'}" in result.stderr  # the missing file: an error, on stderr
    assert "4 of 4 sets are not usable" in result.stderr and "not usable" not in result.stdout
    bad = write_yaml(folder / "bad [1].yaml", text.replace("num_classes: 1", "num_classes: [one]"))
    result = runner.invoke(data_app, ["check", str(bad)])
    assert result.exit_code == 2 and result.stdout == ""
    assert f"{bad}:1: num_classes must be an integer >= 1, got ['one']" in result.stderr
