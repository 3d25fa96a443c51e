"""Fixtures shared by the harness tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_pipeline import TINY_BENCHMARK, TINY_RECIPE


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, Path]:
    (tmp_path / "tiny.yaml").write_text(TINY_BENCHMARK)
    (tmp_path / "recipe.yaml").write_text(TINY_RECIPE)
    return {"benchmark": tmp_path / "tiny.yaml", "recipe": tmp_path / "recipe.yaml", "root": tmp_path}
