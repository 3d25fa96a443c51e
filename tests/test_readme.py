"""The README tells the truth: its numbers are those of the committed results files `make docs` wrote.

`make docs` (docs/make_docs.py) runs the default bench, copies its ``results.csv`` to
``docs/results/shapes_default.csv`` with a JSON of timing, machine, commit and captured output
beside it, and rewrites the README between ``<!-- make-docs:... -->`` markers. These tests never
run a bench: they compare the committed README with the committed results, so a number edited by
hand (in the README or in the CSV) fails them, and so does a claim in words that a new run broke.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import json
import re
from pathlib import Path

import pytest
from rich.text import Text

from harness.leaderboard import aggregate, leaderboard_table, read_csv

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
RESULTS = ROOT / "docs" / "results"


def _make_docs():  # noqa: ANN202 - the module
    spec = importlib.util.spec_from_file_location("make_docs", ROOT / "docs" / "make_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def readme() -> str:
    return README.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def make_docs():  # noqa: ANN201 - the module
    return _make_docs()


def _block(readme: str, name: str) -> str:
    match = re.search(
        rf"<!-- make-docs:{name}:start -->\n(.*?)\n<!-- make-docs:{name}:end -->", readme, flags=re.S
    )
    assert match, f"README.md has no make-docs:{name} block"
    return match.group(1)


def _csv_rows(name: str) -> list[dict[str, object]]:
    return aggregate(read_csv(RESULTS / f"{name}_default.csv"))


def _says(readme: str, phrase: str) -> bool:
    """Whether the README says ``phrase``, wherever its lines happen to break."""
    return " ".join(phrase.split()) in " ".join(readme.split())


def _metric(rows: list[dict[str, object]], detector: str, dataset: str, metric: str = "auroc") -> float:
    found = [r for r in rows if r["detector"] == detector and r["dataset"] == dataset]
    assert len(found) == 1, f"{detector} / {dataset}: {len(found)} rows"
    return 100 * float(found[0][metric])  # type: ignore[arg-type]


def _leaderboard(readme: str) -> tuple[str, list[str], dict[str, list[str]]]:
    """The README's leaderboard: its title, its column names and its cells by detector, in order."""
    code = re.search(r"```\n(.*?)\n```", _block(readme, "bench-output"), flags=re.S)
    assert code, "the bench-output block has no code fence"
    lines = code.group(1).split("\n")
    header = next(line for line in lines if line.startswith("┃"))
    columns = [cell.strip() for cell in header.strip("┃").split("┃")]
    rows: dict[str, list[str]] = {}
    for line in lines:
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            assert cells[0] not in rows, f"detector {cells[0]} twice in the README's leaderboard"
            rows[cells[0]] = cells[1:]
    return lines[0].strip(), columns, rows


# ------------------------------------------------------------------ numbers equal the committed files
def test_leaderboard_equals_committed_results(readme: str) -> None:
    """Every cell of the README's leaderboard is what harness.leaderboard makes of the committed CSV."""
    title, columns, rows = _leaderboard(readme)
    table = leaderboard_table(_csv_rows("shapes"))
    assert columns == [str(column.header) for column in table.columns]
    cells = [[Text.from_markup(str(cell)).plain for cell in column.cells] for column in table.columns]
    expected = {row[0]: list(row[1:]) for row in zip(*cells)}
    assert list(rows) == list(expected), "the README's detectors differ from the committed CSV's"
    for detector, values in expected.items():
        assert rows[detector] == values, f"README row {detector}: {rows[detector]}, the CSV gives {values}"
    assert re.fullmatch(rf"shapes: {len(rows)} detectors, seeds 0", title), title


def test_leaderboard_numbers_are_the_csv_means(readme: str) -> None:
    """The same check without the leaderboard's own formatting: each number is the CSV's mean, in percent."""
    _, columns, rows = _leaderboard(readme)
    csv_rows = _csv_rows("shapes")
    metrics = {"near AUROC": ("near_mean", "auroc"), "near FPR95": ("near_mean", "fpr95")}
    metrics |= {"far AUROC": ("far_mean", "auroc"), "far FPR95": ("far_mean", "fpr95")}
    metrics["ID acc"] = ("near_mean", "id_accuracy")
    for detector, cells in rows.items():
        for column, text in zip(columns[1:], cells):
            if column in metrics:
                assert float(text) == pytest.approx(_metric(csv_rows, detector, *metrics[column]), abs=0.005)
    assert len(rows) == len({r["detector"] for r in csv_rows})


def test_readme_is_what_make_docs_renders(readme: str, make_docs) -> None:
    """Every marked block and value (table, time, machine, prose numbers) re-renders to itself."""
    rendered = make_docs.render(readme, make_docs.load_records(readme, RESULTS))
    diff = "".join(
        difflib.unified_diff(readme.splitlines(True), rendered.splitlines(True), "README.md", "rendered", n=1)
    )
    assert rendered == readme, (
        "README.md differs from what docs/make_docs.py renders from docs/results/ (a hand edit?); "
        "run `make docs` (or `docs/make_docs.py --render-only`):\n" + diff
    )


@pytest.mark.parametrize("name", ["shapes", "fmnist"])
def test_results_files_belong_together(readme: str, make_docs, name: str) -> None:
    """The JSON names its CSV by hash and ran exactly the documented command."""
    if name not in make_docs.needed_runs(readme):
        pytest.skip(f"README.md quotes nothing from the {name} run")
    info = json.loads((RESULTS / f"{name}_default.json").read_text(encoding="utf-8"))
    csv_bytes = (RESULTS / info["results_csv"]).read_bytes()
    assert hashlib.sha256(csv_bytes).hexdigest() == info["results_sha256"], f"{info['results_csv']} edited"
    assert info["command"] == " ".join(make_docs.bench_command(name))
    assert info["ran"].startswith(info["command"] + " --out "), "the docs run added options besides --out"
    assert info["wall_s"] > 0 and info["machine"]["usable_cpus"] >= 1


def test_values_do_not_start_lines(readme: str) -> None:
    """A line that starts with a value's comment would turn into a raw HTML block and break its paragraph."""
    for number, line in enumerate(readme.split("\n"), 1):
        assert not re.match(r"\s*<!-- make-docs:[a-z0-9_.]+ -->", line), f"README.md line {number}: {line}"


def test_make_bench_is_the_documented_command() -> None:
    """The README says `make bench` is `harness bench` with no arguments; the docs run runs exactly that."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^bench:.*\n((?:\t.*\n)+)", makefile, flags=re.M)
    assert recipe and recipe.group(1).strip() == "$(VENV)/bin/harness bench"
    assert re.search(r"^docs:.*\n\t\$\(PY\) docs/make_docs\.py", makefile, flags=re.M)


def test_figures_exist(readme: str) -> None:
    """Every figure and local file the README links is there, and every figure in docs/figures is shown."""
    links = re.findall(r"\]\(((?:docs|configs)/[^)#\s]+)\)", readme)
    assert links
    for link in links:
        assert (ROOT / link).exists(), f"README.md links {link}, which does not exist"
    shown = {Path(link).name for link in links if link.startswith("docs/figures/")}
    assert shown == {path.name for path in (ROOT / "docs" / "figures").glob("*.png")}


def test_figures_are_the_docs_runs(readme: str, make_docs) -> None:
    """The shapes figures the README shows are those `make docs` copied from its run."""
    info = json.loads((RESULTS / "shapes_default.json").read_text(encoding="utf-8"))
    shown = set(re.findall(r"\]\((docs/figures/[\w.-]+\.png)\)", readme)) | {"docs/shapes_masks_preview.png"}
    assert shown <= set(info["figures"])


# ------------------------------------------------------------------ the claims in words still hold
def test_shapes_claims_hold(readme: str) -> None:
    """What the README says in words about the default bench, checked against the committed numbers."""
    rows = _csv_rows("shapes")
    info = json.loads((RESULTS / "shapes_default.json").read_text(encoding="utf-8"))
    facts = info["facts"]
    assert _says(readme, "DFB makes far-OOD detection worse")
    for base in ("msp", "odin", "energy", "vim"):
        for variant in (f"{base}_dfb", f"{base}_dfbz"):
            assert _metric(rows, variant, "far_mean") < _metric(rows, base, "far_mean"), variant
    # "bg ... ranks textured and noise backgrounds as *more* in-distribution than the real ID backgrounds"
    assert _says(readme, "ranks textured and noise backgrounds as *more*")
    for far_set in ("textures", "plain_textures", "noise"):
        assert _metric(rows, "bg", far_set) < 50, far_set
    # "The pseudo masks are fine ... none is degenerate"
    assert _says(readme, "none is degenerate")
    assert not facts["masks"].get("degenerate", False)
    assert facts["masks"]["vs_true_objects"]["iou"] > 0.3
    # "labels *more* pixels of OOD images as background than of ID images ... larger background logits"
    pixels = facts["pixels"]
    for far_set in ("textures", "plain_textures", "noise"):
        assert pixels[far_set]["bg_argmax_fraction"] > pixels["test"]["bg_argmax_fraction"], far_set
        assert pixels[far_set]["mean_bg_logit"] > pixels["test"]["mean_bg_logit"], far_set
        assert pixels[far_set]["mean_p_bg"] > pixels["test"]["mean_p_bg"], far_set
    # Reports: "vim_dfb wins on near-OOD, loses on far-OOD here"
    assert _says(readme, "vim_dfb wins on near-OOD, loses on far-OOD here")
    assert _metric(rows, "vim_dfb", "near_mean") > _metric(rows, "vim", "near_mean")
    assert _metric(rows, "vim_dfb", "far_mean") < _metric(rows, "vim", "far_mean")
    # Conventions: "the fused score is the background score alone (compare `odin_dfb` and `bg` above)"
    assert _says(readme, "compare `odin_dfb` and `bg`")
    for group in ("near_mean", "far_mean"):
        assert _metric(rows, "odin_dfb", group) == pytest.approx(_metric(rows, "bg", group), abs=1.0)


def test_fmnist_table_equals_committed_results(readme: str, make_docs) -> None:
    """Each AUROC of the Fashion-MNIST table is the committed CSV's near/far mean."""
    if "fmnist" not in make_docs.needed_runs(readme):
        pytest.skip("README.md quotes nothing from the fmnist run")
    rows = _csv_rows("fmnist")
    seen = 0
    for line in _block(readme, "fmnist-table").split("\n"):
        cells = [cell.strip().strip("*") for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or len(cells) != 7 or cells[1] in ("near AUROC", "---"):
            continue
        for detector, near, far in (cells[0:3], cells[4:7]):
            if detector:
                assert float(near) == pytest.approx(_metric(rows, detector, "near_mean"), abs=0.005), detector
                assert float(far) == pytest.approx(_metric(rows, detector, "far_mean"), abs=0.005), detector
                seen += 1
    assert seen == 9


def test_fmnist_claims_hold(readme: str, make_docs) -> None:
    """What the README says in words about the Fashion-MNIST run, checked against its committed numbers."""
    if "fmnist" not in make_docs.needed_runs(readme):
        pytest.skip("README.md quotes nothing from the fmnist run")
    rows = _csv_rows("fmnist")
    # "the background score is a real detector"
    assert _says(readme, "the background score is a real detector")
    assert _metric(rows, "bg", "near_mean") > 60 and _metric(rows, "bg", "far_mean") > 55
    # "only ViM gains from the fusion, and only on far-OOD"
    assert _says(readme, "only ViM gains from the fusion, and only on far-OOD")
    for base in ("msp", "odin", "energy", "vim"):
        for group in ("near_mean", "far_mean"):
            gains = _metric(rows, f"{base}_dfb", group) > _metric(rows, base, group)
            assert gains == (base == "vim" and group == "far_mean"), f"{base}_dfb on {group}"
