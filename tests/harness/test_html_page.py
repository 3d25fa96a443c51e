"""The static leaderboard page without a browser: its data, escaping, figures and folder rules.

The browser behaviour (sorting, toggles, filters, no network) is in test_html_page_browser.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from pathlib import Path

import pytest

from dfb_ood.harness.html_page import (
    INDEX,
    MANIFEST,
    PageFolderError,
    check_page_folder,
    detector_variant,
    read_page_data,
    write_leaderboard_page,
)
from dfb_ood.harness.leaderboard import AUPR_TEXT, CONVENTION_TEXT, aggregate, load_run_rows, write_csv
from dfb_ood.harness.reference import compare, load_reference

#: (near AUROC, near FPR, far AUROC, far FPR) per detector; seed s adds s * 0.01 to every value.
DETECTORS: dict[str, tuple[float, float, float, float]] = {
    "msp": (0.80, 0.50, 0.90, 0.30),
    "energy": (0.85, 0.40, 0.93, 0.20),
    "knn": (0.85, 0.35, 0.95, 0.10),
    "msp_dfb": (0.88, 0.30, 0.96, 0.10),
    "energy_dfb": (0.90, 0.25, 0.96, 0.08),
    "energy_dfbz": (0.86, 0.38, 0.97, 0.06),
    "knn_dfbz": (0.92, 0.20, 0.94, 0.12),
    "bg": (0.75, 0.60, 0.98, 0.05),
}
# A 1x1 PNG (tiny, valid): what a run's report/ would hold.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cf00000301010018dd8db00000000049454e44ae426082"
)


def make_run(
    root: Path,
    seed: int,
    detectors: dict[str, tuple[float, float, float, float]] | None = None,
    benchmark: str = "tiny",
    report: bool = True,
    name: str | None = None,
) -> Path:
    """A run directory holding only a results.csv (and report/ figures): all the page reads."""
    run_dir = root / (name or f"seed{seed}")
    shift = 0.01 * seed
    rows: list[dict[str, object]] = []
    for detector, (near_auroc, near_fpr, far_auroc, far_fpr) in (detectors or DETECTORS).items():
        _, variant = detector_variant(detector)
        role = "classifier" if variant == "base" else "dfb"
        accuracy = 0.9 + shift / 10 if role == "classifier" else 0.89
        for dataset, group, auroc, fpr in (
            ("glyphs", "near", near_auroc, near_fpr),
            ("near_mean", "near_mean", near_auroc, near_fpr),
            ("photos", "far", far_auroc, far_fpr),
            ("far_mean", "far_mean", far_auroc, far_fpr),
            ("all_mean", "all_mean", (near_auroc + far_auroc) / 2, (near_fpr + far_fpr) / 2),
        ):
            rows.append({"benchmark": benchmark, "network": "net", "seed": seed, "detector": detector,
                         "detector_network": role, "dataset": dataset, "group": group,
                         "auroc": min(auroc + shift, 1.0), "aupr_in": auroc - 0.01, "aupr_out": auroc - 0.02,
                         "fpr95": max(fpr - shift, 0.0), "fpr_convention": "paper",
                         "aupr_in_trapezoid": auroc - 0.015, "aupr_out_trapezoid": auroc - 0.025,
                         "fpr95_paper": max(fpr - shift, 0.0), "fpr95_openood": min(fpr + 0.05, 1.0),
                         "id_accuracy": accuracy, "hyperparameters": ""})  # fmt: skip
    run_dir.mkdir(parents=True)
    write_csv(run_dir / "results.csv", rows)
    if report:
        (run_dir / "report").mkdir()
        (run_dir / "report" / "auroc_bars.png").write_bytes(PNG)
        (run_dir / "report" / "roc_msp.png").write_bytes(PNG)
        (run_dir / "report" / "report.md").write_text(
            "# report\n\n### Near/far AUROC\n\n![auroc_bars](auroc_bars.png)\n\n*Bars of `msp` & co.*\n"
        )
    return run_dir


@pytest.fixture
def runs(tmp_path: Path) -> list[Path]:
    """Two seeds; the second has no report/."""
    return [make_run(tmp_path / "runs", 0), make_run(tmp_path / "runs", 1, report=False)]


def _page_text(out: Path) -> str:
    return (out / INDEX).read_text(encoding="utf-8")


def test_embedded_numbers_equal_the_aggregated_csv_rows(tmp_path: Path, runs: list[Path]) -> None:
    page = write_leaderboard_page(runs, tmp_path / "page")
    assert page == tmp_path / "page" / INDEX
    data = read_page_data(page)
    merged = aggregate([row for run in runs for row in load_run_rows(run)])
    (block,) = data["blocks"]
    by_detector = {row["detector"]: row for row in block["rows"]}
    assert list(by_detector) == list(DETECTORS)  # first-seen order
    checked = 0
    for row in merged:
        if row["dataset"] not in ("near_mean", "far_mean"):
            continue
        group = str(row["dataset"]).removesuffix("_mean")
        cells = by_detector[row["detector"]]["cells"]
        for metric in ("auroc", "fpr95", "aupr_in", "aupr_out"):
            cell = cells[f"{group}_{metric}"]
            assert cell["mean"] == row[metric] and cell["std"] == row[f"{metric}_std"]
            assert cell["seeds"] == 2 and cell["shown"] == float(f"{100 * row[metric]:.2f}")
            checked += 1
        assert cells["id_accuracy"]["mean"] == row["id_accuracy"]
        assert cells["id_accuracy"]["std"] == row["id_accuracy_std"]
    assert checked == len(DETECTORS) * 2 * 4
    # The table cells show the same numbers (percent, two decimals, ± the std).
    text = _page_text(tmp_path / "page")
    knn = next(r for r in merged if r["detector"] == "knn" and r["dataset"] == "far_mean")
    assert f'{100 * knn["auroc"]:.2f}<span class="std">±{100 * knn["auroc_std"]:.2f}</span>' in text


def test_definitions_follow_the_options_and_are_stated(tmp_path: Path, runs: list[Path]) -> None:
    page = write_leaderboard_page(runs, tmp_path / "page", fpr_convention="openood", aupr="trapezoid")
    (block,) = read_page_data(page)["blocks"]
    merged = aggregate([row for run in runs for row in load_run_rows(run)])
    energy = next(r for r in merged if r["detector"] == "energy" and r["dataset"] == "near_mean")
    cells = next(r for r in block["rows"] if r["detector"] == "energy")["cells"]
    assert cells["near_aupr_in"]["mean"] == pytest.approx(energy["aupr_in_trapezoid"], abs=1e-15)
    assert cells["near_fpr95"]["mean"] == pytest.approx(energy["fpr95_openood"], abs=1e-15)
    text = _page_text(tmp_path / "page")
    assert AUPR_TEXT["trapezoid"] in text and CONVENTION_TEXT["openood"] in text
    assert AUPR_TEXT["ap"] not in text


def test_best_cells_compare_shown_values_and_tie(tmp_path: Path, runs: list[Path]) -> None:
    data = read_page_data(write_leaderboard_page(runs, tmp_path / "page"))
    rows = data["blocks"][0]["rows"]
    for column, spec in data["columns"].items():
        if spec["kind"] != "metric":
            continue
        shown = [r["cells"][column]["shown"] for r in rows]
        best = max(shown) if spec["higher"] else min(shown)
        assert [r["cells"][column]["best"] for r in rows] == [value == best for value in shown]
    # near AUROC: knn_dfbz alone; ID accuracy: every classifier row ties.
    assert [r["detector"] for r in rows if r["cells"]["near_auroc"]["best"]] == ["knn_dfbz"]
    assert [r["detector"] for r in rows if r["cells"]["id_accuracy"]["best"]] == ["msp", "energy", "knn"]


def test_families_variants_and_conventions_are_on_the_page(tmp_path: Path, runs: list[Path]) -> None:
    page = write_leaderboard_page(runs, tmp_path / "page")
    rows = {r["detector"]: r for r in read_page_data(page)["blocks"][0]["rows"]}
    assert (rows["energy_dfbz"]["base"], rows["energy_dfbz"]["variant"]) == ("energy", "_dfbz")
    assert (rows["bg"]["base"], rows["bg"]["variant"]) == ("bg", "bg")
    assert rows["knn"]["group"] == rows["knn_dfbz"]["group"] == "features"
    assert rows["msp"]["net"] == "K" and rows["msp_dfb"]["net"] == "K+1"
    text = _page_text(tmp_path / "page")
    assert CONVENTION_TEXT["paper"] in text
    assert AUPR_TEXT["ap"] in text
    assert '<option value="base:energy">energy</option>' in text
    assert '<option value="group:features">features</option>' in text


def test_detector_variant() -> None:
    assert detector_variant("vim") == ("vim", "base")
    assert detector_variant("vim_dfb") == ("vim", "_dfb")
    assert detector_variant("vim_dfbz") == ("vim", "_dfbz")
    assert detector_variant("bg") == ("bg", "bg")
    assert detector_variant("mystery_dfbz") == ("mystery", "_dfbz")  # not registered: split by suffix
    assert detector_variant("_dfb") == ("_dfb", "base")


def test_text_is_escaped_and_data_cannot_close_the_script(tmp_path: Path) -> None:
    evil = '</script><script>alert("x")</script><img src=x onerror=alert(1)>&amp;'
    run = make_run(tmp_path / "runs", 0, {evil: (0.8, 0.5, 0.9, 0.3), "msp": (0.7, 0.6, 0.8, 0.4)},
                   name="odd <b>&'\" dir")  # fmt: skip
    out = tmp_path / "page"
    write_leaderboard_page([run], out)
    text = _page_text(out)
    assert "<img src=x" not in text and 'alert("x")' not in text
    assert "&lt;/script&gt;&lt;script&gt;alert(&quot;x&quot;)" in text  # shown as text
    assert "odd <b>" not in text and "odd &lt;b&gt;&amp;&#x27;&quot; dir" in text
    # Exactly the page's two script elements (the data and the code), whatever the names hold.
    assert len(re.findall(r"<script", text, flags=re.IGNORECASE)) == 2
    assert len(re.findall(r"</script", text, flags=re.IGNORECASE)) == 2
    names = [row["detector"] for row in read_page_data(out)["blocks"][0]["rows"]]
    assert names == [evil, "msp"]  # the JSON decodes back to the exact name


def test_csp_allows_only_the_pages_own_script_and_style(tmp_path: Path, runs: list[Path]) -> None:
    text = _page_text(write_leaderboard_page(runs, tmp_path / "page").parent)
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]*)"', text)[1]  # type: ignore[index]
    assert "default-src 'none'" in csp and "http" not in csp and "unsafe" not in csp
    script = re.search(r"<script>(.*?)</script>", text, re.S)[1]  # type: ignore[index]
    style = re.search(r"<style>(.*?)</style>", text, re.S)[1]  # type: ignore[index]
    for body in (script, style):
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert "http://" not in text.replace("http-equiv", "") and "https://" not in text


def test_figures_are_copied_and_linked_relatively(tmp_path: Path, runs: list[Path]) -> None:
    out = tmp_path / "page"
    write_leaderboard_page(runs, out)
    copied = sorted(p.relative_to(out).as_posix() for p in (out / "figures").rglob("*.png"))
    assert copied == ["figures/01-tiny-net-seed0/auroc_bars.png", "figures/01-tiny-net-seed0/roc_msp.png"]
    assert (out / copied[0]).read_bytes() == PNG
    text = _page_text(out)
    assert 'src="figures/01-tiny-net-seed0/auroc_bars.png"' in text
    assert str(tmp_path) + "/runs/seed0/report" not in text  # links are relative, never to the run
    assert "Bars of <code>msp</code> &amp; co." in text  # report.md's caption, escaped
    assert "no report/ in this run" in text  # the second seed
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["files"]) == sorted([INDEX, *copied])


def test_refuses_a_folder_with_foreign_files(tmp_path: Path, runs: list[Path]) -> None:
    out = tmp_path / "page"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(
        PageFolderError, match=r"holds files the leaderboard page did not write \(notes.txt\)"
    ):
        write_leaderboard_page(runs, out)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written, nothing removed
    assert (out / "notes.txt").read_text() == "mine"
    # A foreign folder, or a foreign file inside our figures/, refuses as well.
    (out / "notes.txt").unlink()
    write_leaderboard_page(runs, out)
    (out / "figures" / "01-tiny-net-seed0" / "mine.png").write_bytes(b"x")
    (out / "drafts").mkdir()
    with pytest.raises(PageFolderError, match=r"drafts/, figures/01-tiny-net-seed0/mine.png"):
        check_page_folder(out)


def test_refuses_a_file_and_a_run_directory(tmp_path: Path, runs: list[Path]) -> None:
    target = tmp_path / "page.html"
    target.write_text("x")
    with pytest.raises(PageFolderError, match="is a file; --html takes a folder"):
        write_leaderboard_page(runs, target)
    with pytest.raises(PageFolderError, match="results.csv"):
        write_leaderboard_page(runs, runs[0])
    with pytest.raises(PageFolderError, match="report.md"):
        write_leaderboard_page(runs, runs[0] / "report")


def test_rewrite_replaces_only_its_own_files(tmp_path: Path, runs: list[Path]) -> None:
    out = tmp_path / "page"
    write_leaderboard_page(runs, out)
    # An interrupted earlier write may leave a temporary file: ours, removed on the next write.
    leftover = out / "figures" / "01-tiny-net-seed0" / ".roc_msp.png.abc123_x.tmp"
    leftover.write_bytes(b"partial")
    # Without the first run's report, its figures (and their folder) go; the rest stays ours.
    write_leaderboard_page(runs[1:], out)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [MANIFEST, INDEX]
    assert json.loads((out / MANIFEST).read_text())["files"] == [INDEX]


@pytest.mark.parametrize(
    "manifest",
    [
        '{"writer": "harness leaderboard --html", "files": ["../outside.txt"]}',
        '{"writer": "harness leaderboard --html", "files": ["/etc/passwd"]}',
        '{"writer": "someone else", "files": []}',
        "not json",
    ],
)
def test_refuses_a_manifest_it_did_not_write(tmp_path: Path, runs: list[Path], manifest: str) -> None:
    out = tmp_path / "page"
    out.mkdir()
    (out / MANIFEST).write_text(manifest)
    (tmp_path / "outside.txt").write_text("keep")
    with pytest.raises(PageFolderError, match="Choose another folder"):
        write_leaderboard_page(runs, out)
    assert (tmp_path / "outside.txt").read_text() == "keep"


def test_bad_arguments_fail_before_writing(tmp_path: Path, runs: list[Path]) -> None:
    out = tmp_path / "page"
    with pytest.raises(ValueError, match="no run directories"):
        write_leaderboard_page([], out)
    with pytest.raises(ValueError, match="--sort-by must be one of"):
        write_leaderboard_page(runs, out, sort_by="speed")
    with pytest.raises(ValueError, match="nope"):
        write_leaderboard_page(runs, out, reference="nope")
    with pytest.raises(FileNotFoundError, match="no results file"):
        write_leaderboard_page([tmp_path / "missing"], out)
    assert not out.exists()


def test_sort_by_sets_the_initial_order(tmp_path: Path, runs: list[Path]) -> None:
    data = read_page_data(write_leaderboard_page(runs, tmp_path / "page", sort_by="far_fpr95"))
    assert data["sort"] == {"column": "far_fpr95"}


def test_several_benchmarks_make_one_table_each(tmp_path: Path) -> None:
    first = make_run(tmp_path / "runs", 0, benchmark="alpha", name="a")
    second = make_run(tmp_path / "runs", 0, {"msp": (0.6, 0.7, 0.7, 0.6)}, benchmark="beta", name="b")
    out = tmp_path / "page"
    data = read_page_data(write_leaderboard_page([first, second], out))
    assert [(b["benchmark"], len(b["rows"])) for b in data["blocks"]] == [("alpha", 8), ("beta", 1)]
    assert [p.name for p in sorted((out / "figures").iterdir())] == [
        "01-alpha-net-seed0",
        "02-beta-net-seed0",
    ]
    assert _page_text(out).count('<table class="leaderboard"') == 2


def test_reference_comparison_on_the_page(tmp_path: Path) -> None:
    values = {"msp": (0.89, 0.33, 0.95, 0.17), "vim_dfb": (0.97, 0.13, 0.99, 0.01)}
    run = make_run(tmp_path / "runs", 0, values, benchmark="cifar10_dfb")
    # The reference matches per-set rows by our dataset names: rename the near set to cifar100.
    csv_text = (run / "results.csv").read_text().replace(",glyphs,", ",cifar100,")
    (run / "results.csv").write_text(csv_text)
    out = tmp_path / "page"
    data = read_page_data(write_leaderboard_page([run], out, reference="dfb-paper"))
    rows = load_run_rows(run)
    expected = compare(rows, load_reference("dfb-paper"), run_info={
        "network": None, "eval_size": None, "fpr_convention": "paper", "seeds": 1})  # fmt: skip
    assert expected and data["comparison"]["rows"] == json.loads(json.dumps(expected))
    text = _page_text(out)
    assert "Ours vs dfb-paper" in text and "MSP" in text
    msp_auroc = next(r for r in expected if r["detector"] == "msp" and r["metric"] == "auroc")
    assert f"{100 * msp_auroc['ours']:.2f}" in text and f"{100 * msp_auroc['difference']:+.2f}" in text
    assert "network differs: ours net, theirs BiT-M-R50x1" in text  # caveats under the table


def test_reference_without_a_match_says_what_it_covers(tmp_path: Path, runs: list[Path]) -> None:
    text = _page_text(write_leaderboard_page(runs, tmp_path / "page", reference="dfb-paper").parent)
    assert "No row of these runs matches the reference. dfb-paper covers" in text


def test_leaderboard_html_option_writes_the_page_and_refuses_a_foreign_folder(
    tmp_path: Path, runs: list[Path]
) -> None:
    from typer.testing import CliRunner

    from dfb_ood.harness.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["leaderboard", *map(str, runs), "--html", str(tmp_path / "page")])
    assert result.exit_code == 0, result.output
    data = read_page_data(tmp_path / "page")
    assert [r["detector"] for r in data["blocks"][0]["rows"]] == list(DETECTORS)
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    refused = runner.invoke(
        app, ["leaderboard", *map(str, runs), "--html", str(foreign), "--csv", str(tmp_path / "x.csv")]
    )
    assert refused.exit_code == 2 and "notes.txt" in refused.stderr
    assert not (tmp_path / "x.csv").exists() and (foreign / "notes.txt").read_text() == "mine\n"
