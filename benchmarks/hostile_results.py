"""Hostile-input cases for benchmarks/bad_inputs.py: (filled in below)."""

from __future__ import annotations

from bad_inputs import Case


def cases() -> list[Case]:
    return []
