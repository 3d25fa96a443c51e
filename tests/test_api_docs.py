"""The API reference: docs/api_docs.py builds a page per API module from the docstrings, all documented."""

from __future__ import annotations

import html
import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("api_docs", ROOT / "docs" / "api_docs.py")
api_docs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(api_docs)


def public_names(module) -> list[str]:
    names = getattr(module, "__all__", None)
    if names is None:
        names = [
            name
            for name, value in vars(module).items()
            if not name.startswith("_")
            and (inspect.isfunction(value) or inspect.isclass(value))
            and value.__module__ == module.__name__
        ]
    return list(names)


def plain(text: str) -> str:
    """Text as a reader sees it: no tags, no markup quotes or roles, one space between words."""
    text = html.unescape(re.sub(r"<[^>]+>", "", text))
    text = re.sub(r":[a-z]+:", "", text).replace("`", "").replace("~", "")
    return " ".join(text.split())


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("api-docs")
    written = api_docs.build(folder)
    assert [page.is_file() for page in written] == [True] * len(api_docs.API_MODULES)
    return dict(zip(api_docs.API_MODULES, written, strict=True))


@pytest.mark.parametrize("module_name", api_docs.API_MODULES)
def test_every_public_name_is_on_its_page_with_its_summary(pages, module_name):
    module = importlib.import_module(module_name)
    page = plain(pages[module_name].read_text())
    for name in public_names(module):
        doc = inspect.getdoc(getattr(module, name))
        assert doc, f"{module_name}.{name} has no docstring"
        assert f"def {name}" in page or f"class {name}" in page, f"{name} is not on the page"
        assert plain(doc.splitlines()[0]) in page, f"{name}'s summary is not on the page"


@pytest.mark.parametrize("module_name", api_docs.API_MODULES)
def test_every_public_function_documents_its_parameters(module_name):
    module = importlib.import_module(module_name)
    for name in public_names(module):
        value = getattr(module, name)
        if value.__module__ != module_name:
            continue  # re-exported (create, available): documented where it is defined
        target = value.__init__ if inspect.isclass(value) else value
        doc = inspect.getdoc(value) or ""
        params = [p for p in inspect.signature(target).parameters if p not in ("self", "cls")]
        params = [p.lstrip("*") for p in params]
        if params:
            assert "Args:" in doc, f"{name} documents no parameters"
            for param in params:
                assert re.search(rf"^\s+\**{param}:", doc, re.M), f"{name} does not document {param!r}"
        if not inspect.isclass(value) and inspect.signature(value).return_annotation not in ("None", None):
            assert "Returns:" in doc, f"{name} does not say what it returns"
