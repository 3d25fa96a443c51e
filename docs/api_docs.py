"""Build the Python API's HTML reference from its docstrings (pdoc): ``python docs/api_docs.py [FOLDER]``.

Why generated: the docstrings are the one source of what each public function takes, returns and
raises; a hand-written page would drift from them. The pages go to ``docs/api/`` by default (git
ignores it), one per module of :data:`API_MODULES`; ``tests/test_api_docs.py`` builds them into a
temporary folder and checks every public name is there with its docstring.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The modules of the public Python API, each one page.
API_MODULES: tuple[str, ...] = (
    "dfb_ood.api",
    "dfb_ood.api_benchmark",
    "dfb_ood.api_outputs",
    "dfb_ood.api_table",
)


def build(folder: str | Path = ROOT / "docs" / "api") -> list[Path]:
    """Write the API's HTML pages into ``folder`` (created when missing).

    Args:
        folder: where the pages go; its old pages of the same names are replaced.

    Returns:
        The HTML page of each module of :data:`API_MODULES`, in that order.
    """
    import pdoc

    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pdoc.render.configure(docformat="google", show_source=False)
    pdoc.pdoc(*API_MODULES, output_directory=folder)
    return [folder / (name.replace(".", "/") + ".html") for name in API_MODULES]


def main(argv: list[str] | None = None) -> int:
    """The command line: ``python docs/api_docs.py [FOLDER]``; prints each page written."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", nargs="?", default=str(ROOT / "docs" / "api"), help="output folder")
    for page in build(parser.parse_args(argv).folder):
        print(page)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
