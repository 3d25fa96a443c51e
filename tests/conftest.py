"""Test-wide settings: the decoded-image cache lives in a temporary folder, never in the home."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_decoded_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path_factory.getbasetemp() / "harness-cache"))
