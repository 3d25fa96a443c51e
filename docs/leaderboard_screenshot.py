"""A screenshot of the static leaderboard page (``harness leaderboard RUN... --html DIR``) for the README.

    .venv/bin/python docs/leaderboard_screenshot.py                    # runs/docs/mini_seeds/run/seed0..2
    .venv/bin/python docs/leaderboard_screenshot.py RUN [RUN ...] --out docs/leaderboard_page.png

The page is written into a temporary folder (nothing of it is kept), opened from disk in headless
Chromium through Playwright, sorted by near AUROC, and the top of it (title, conventions, controls
and the first rows under the sticky header) saved as a PNG, atomically. It needs the system's
Chromium (``apt-get install chromium``) and ``pip install playwright``, never a downloaded browser.

The PNG goes to ``docs/``, beside the mask previews, not to ``docs/figures/``: that folder holds
exactly the report figures ``make docs`` copies from its runs, which tests/test_readme.py checks.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from dfb_ood.harness.html_page import write_leaderboard_page
from dfb_ood.harness.io import atomic_path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_RUNS = [ROOT / "runs" / "docs" / "mini_seeds" / "run" / f"seed{seed}" for seed in range(3)]
DEFAULT_OUT = ROOT / "docs" / "leaderboard_page.png"
VIEWPORT = {"width": 1400, "height": 1000}


def chromium_path() -> str:
    """The system's Chromium, or SystemExit saying how to get it."""
    found = os.environ.get("HARNESS_CHROMIUM") or next(
        (path for name in ("chromium", "chromium-browser", "google-chrome") if (path := shutil.which(name))),
        None,
    )
    if found is None:
        raise SystemExit(
            "Chromium not found: apt-get install chromium (or set HARNESS_CHROMIUM to a browser)"
        )
    return found


def screenshot(run_dirs: list[Path], out: Path, sort_by: str = "near_auroc") -> Path:
    """Write the page for ``run_dirs`` into a temporary folder and save its top as ``out`` (PNG)."""
    try:
        from playwright.sync_api import sync_playwright
    except ModuleNotFoundError:
        raise SystemExit(
            "playwright not installed: pip install playwright (no `playwright install`)"
        ) from None
    browser_path = chromium_path()
    with tempfile.TemporaryDirectory(prefix="leaderboard-page-") as folder:
        page_path = write_leaderboard_page(run_dirs, Path(folder) / "page", sort_by=sort_by)
        with sync_playwright() as playwright:
            args = ["--no-sandbox"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []
            browser = playwright.chromium.launch(executable_path=browser_path, args=args)
            try:
                page = browser.new_page(viewport=VIEWPORT)
                page.goto(page_path.as_uri())
                page.wait_for_selector("#status:not(:empty)")  # the script ran
                with atomic_path(out, suffix=".png") as tmp:
                    page.screenshot(path=str(tmp), full_page=False)
            finally:
                browser.close()
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, help="Run directories (default: the mini_seeds seeds).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="The PNG to write.")
    parser.add_argument("--sort-by", default="near_auroc", help="Initial order (a --sort-by name).")
    args = parser.parse_args(argv)
    runs = args.runs or [run for run in DEFAULT_RUNS if run.is_dir()]
    if not runs:
        raise SystemExit(
            f"no run directories given and none of {DEFAULT_RUNS[0].parent}/seed0..2 exists; name finished "
            "runs, or make them with `python docs/make_docs.py --only mini_seeds`"
        )
    written = screenshot(runs, args.out, args.sort_by)
    print(f"wrote {written} from {len(runs)} run(s)", file=sys.stderr)


if __name__ == "__main__":
    main()
