"""The leaderboard page in a real browser: sorting, near/far toggles, filters, no network requests.

Runs headless Chromium (the system's, never a downloaded one) through Playwright; skipped with the
reason when either is missing. One browser per module, one fresh tab per test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dfb_ood.harness.html_page import read_page_data, write_leaderboard_page
from dfb_ood.harness.leaderboard import read_csv, write_csv

from .test_html_page import DETECTORS, make_run

sync_api = pytest.importorskip(
    "playwright.sync_api",
    reason="playwright not installed: pip install -e '.[test]' (or pip install playwright)",
)
CHROMIUM = os.environ.get("HARNESS_CHROMIUM") or next(
    (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))),
    None,
)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found: apt-get install chromium")

#: A name that would be markup if the page ever built HTML from data; it has no far-OOD rows.
ODD = "<b>odd</b>_dfb"


@pytest.fixture(scope="module")
def page_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("browser")
    detectors = {**DETECTORS, ODD: (0.83, 0.45, 0.5, 0.5)}
    runs = [make_run(root / "runs", seed, detectors, report=seed == 0) for seed in (0, 1)]
    for run in runs:  # drop the odd detector's far rows: a column with a missing value
        rows = read_csv(run / "results.csv")
        keep = [r for r in rows if not (r["detector"] == ODD and r["group"] in ("far", "far_mean"))]
        write_csv(run / "results.csv", keep)
    write_leaderboard_page(runs, root / "page")
    return root / "page"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as playwright:
        args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
        try:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        except sync_api.Error as error:
            pytest.skip(f"Chromium at {CHROMIUM} did not start: {str(error).splitlines()[0]}")
        yield chromium
        chromium.close()


@pytest.fixture
def tab(browser: Any, page_dir: Path) -> Iterator[Any]:
    """A fresh tab on the page, recording every request, console error, page error and dialog."""
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.requests, page.problems = [], []  # type: ignore[attr-defined]
    page.on("request", lambda request: page.requests.append(request.url))
    page.on("console", lambda msg: msg.type in ("error", "warning") and page.problems.append(msg.text))
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.on("dialog", lambda dialog: (page.problems.append(f"dialog: {dialog.message}"), dialog.dismiss()))
    page.goto((page_dir / "index.html").as_uri())
    yield page
    assert page.problems == []
    page.close()


def _visible(tab: Any) -> list[str]:
    """Detector names of the rows a reader sees, top to bottom."""
    return tab.evaluate(
        """() => Array.from(document.querySelectorAll('table.leaderboard tbody tr'))
            .filter(tr => tr.offsetParent !== null)
            .map(tr => tr.querySelector('.name').textContent)"""
    )


def _expected(page_dir: Path, column: str, best_first: bool) -> list[str]:
    """The order the data asks for: values as shown, ties in input order, missing values last."""
    data = read_page_data(page_dir)
    rows = data["blocks"][0]["rows"]
    spec = data["columns"][column]
    if spec["kind"] == "text":
        ordered = sorted(rows, key=lambda r: r[column], reverse=not best_first)
        return [r["detector"] for r in ordered]
    present = [r for r in rows if r["cells"][column] is not None]
    missing = [r for r in rows if r["cells"][column] is None]
    descending = spec["higher"] == best_first
    sign = -1 if descending else 1
    ordered = sorted(present, key=lambda r: sign * r["cells"][column]["shown"])  # stable: ties keep order
    return [r["detector"] for r in ordered + missing]


def _click(tab: Any, column: str) -> None:
    tab.click(f'th[data-column="{column}"] button')


def _sort_state(tab: Any, column: str) -> str | None:
    return tab.get_attribute(f'th[data-column="{column}"]', "aria-sort")


def test_input_order_until_a_header_is_clicked(tab: Any, page_dir: Path) -> None:
    assert _visible(tab) == [*DETECTORS, ODD]
    assert tab.text_content("#status") == f"Showing {len(DETECTORS) + 1} of {len(DETECTORS) + 1} rows"


def test_click_sorts_best_first_and_again_reverses(tab: Any, page_dir: Path) -> None:
    expected = _expected(page_dir, "near_auroc", best_first=True)
    assert expected.index("energy") < expected.index("knn")  # they tie: the input order holds
    _click(tab, "near_auroc")
    assert _visible(tab) == expected and _sort_state(tab, "near_auroc") == "descending"
    _click(tab, "near_auroc")
    reverse = _expected(page_dir, "near_auroc", best_first=False)
    assert _visible(tab) == reverse and _sort_state(tab, "near_auroc") == "ascending"
    assert reverse.index("energy") < reverse.index("knn")
    # FPR@95: lower is better, so the first click sorts ascending; the row without far values is last.
    _click(tab, "far_fpr95")
    assert _visible(tab) == _expected(page_dir, "far_fpr95", best_first=True)
    assert _visible(tab)[-1] == ODD
    assert _sort_state(tab, "far_fpr95") == "ascending" and _sort_state(tab, "near_auroc") is None
    _click(tab, "far_fpr95")
    assert _visible(tab) == _expected(page_dir, "far_fpr95", best_first=False)
    assert _visible(tab)[-1] == ODD  # missing values stay last in both directions
    _click(tab, "detector")
    assert _visible(tab) == sorted([*DETECTORS, ODD])
    assert _sort_state(tab, "detector") == "ascending"


def test_near_far_toggles_hide_columns(tab: Any) -> None:
    near, far = 'th[data-column="near_auroc"]', 'th[data-column="far_auroc"]'
    assert tab.is_visible(near) and tab.is_visible(far)
    tab.uncheck('input[name="ood-group"][value="near"]')
    assert not tab.is_visible(near) and tab.is_visible(far)
    assert tab.locator("td.col-near:visible").count() == 0
    tab.uncheck('input[name="ood-group"][value="far"]')
    assert not tab.is_visible(far) and tab.is_visible('th[data-column="id_accuracy"]')
    tab.check('input[name="ood-group"][value="near"]')
    assert tab.is_visible(near) and not tab.is_visible(far)
    assert tab.locator("td.col-near:visible").count() == 4 * (len(DETECTORS) + 1)


def test_family_and_variant_filters(tab: Any) -> None:
    tab.select_option("#family", "base:energy")
    assert _visible(tab) == ["energy", "energy_dfb", "energy_dfbz"]
    tab.select_option("#family", "group:features")  # what knn reads, with its DFB variant
    assert _visible(tab) == ["knn", "knn_dfbz"]
    tab.select_option("#family", "")
    tab.uncheck('input[name="variant"][value="base"]')
    tab.uncheck('input[name="variant"][value="bg"]')
    assert _visible(tab) == ["msp_dfb", "energy_dfb", "energy_dfbz", "knn_dfbz", ODD]
    tab.uncheck('input[name="variant"][value="_dfb"]')
    tab.select_option("#family", "base:energy")
    assert _visible(tab) == ["energy_dfbz"]
    assert tab.text_content("#status") == f"Showing 1 of {len(DETECTORS) + 1} rows"
    # Sorting keeps the filters; Reset brings every row back in the input order.
    tab.check('input[name="variant"][value="base"]')
    _click(tab, "near_auroc")
    assert _visible(tab) == ["energy_dfbz", "energy"]
    tab.click("#reset")
    assert _visible(tab) == [*DETECTORS, ODD]


def test_no_network_requests_and_figures_load(tab: Any) -> None:
    """Every request is a file:// one. (An attempt the page's CSP blocks never becomes a request, but
    it logs a console error, which the ``tab`` fixture fails on.)"""
    tab.locator("#figures img").first.scroll_into_view_if_needed()
    tab.wait_for_function("() => Array.from(document.images).every(img => img.complete)")
    widths = tab.evaluate("() => Array.from(document.images).map(img => img.naturalWidth)")
    assert widths == [1, 1]  # the first run's two figures; the second run has no report
    assert tab.is_visible("text=no report/ in this run")
    assert tab.requests and all(url.startswith("file://") for url in tab.requests), tab.requests


def test_names_show_as_text(tab: Any) -> None:
    assert tab.locator("tbody .name", has_text="<b>odd</b>").count() == 1
    assert tab.locator("tbody .name b").count() == 0  # the tag was not parsed as markup
