""" "Did you mean ...?" for a mistyped name: the closest known names, first, in one short line.

Shared by every place that refuses an unknown name (detectors in :mod:`postprocessors.registry`,
networks in :mod:`networks.registry`, recipes, benchmarks, config names and the CLI's choices), so
that ``--post msq`` answers "did you mean 'msp'?" instead of listing all 73 detectors. It lives in
``dfb_ood`` itself because ``networks`` and ``postprocessors`` must not import ``harness``; it
imports nothing but :mod:`difflib`.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

#: A list of at most this many names is shown whole (after the closest); a longer one only by its
#: closest names, or, when none is close, by its first ones and where to see them all.
SHOWN = 12


def closest(name: str, known: Iterable[str], count: int = 3) -> list[str]:
    """The names of ``known`` closest to ``name`` (difflib's ratio, case-insensitive), best first.

    Args:
        name: What the user typed.
        known: The valid names.
        count: At most this many.

    Returns:
        Up to ``count`` names of ``known``, closest first; empty when none is close.
    """
    names = list(dict.fromkeys(known))
    lowered = {candidate.lower(): candidate for candidate in names}
    matches = difflib.get_close_matches(name.strip().lower(), list(lowered), n=count, cutoff=0.6)
    return [lowered[match] for match in matches]


def suggestion(name: str, known: Iterable[str], listing: str = "") -> str:
    """The end of an unknown-name message: the closest names, or a few known ones and where to see all.

    Args:
        name: What the user typed.
        known: The valid names.
        listing: Where every name is listed (``"harness list detectors"``); named when nothing is close.

    Returns:
        ``"did you mean 'msp'?"`` when some are close (for a short list, the other names after
        them: ``"did you mean 'frozen'? known: paper, cpu-quick"``), else ``"known: a, b, c, ... (N
        in all; see `harness list detectors`)"``.
    """
    names = list(dict.fromkeys(known))
    near = closest(name, names)
    if near and len(names) > SHOWN:
        return "did you mean " + " or ".join(repr(match) for match in near) + "?"
    if near:  # a short list: the closest first, then every other one
        rest = [other for other in names if other not in near]
        return (
            "did you mean " + " or ".join(map(repr, near)) + "?" + (f" known: {', '.join(rest)}" * bool(rest))
        )
    shown = ", ".join(names[:SHOWN])
    more = f", ... ({len(names)} in all" + (f"; see `{listing}`)" if listing else ")")
    return f"known: {shown}{more if len(names) > SHOWN else ''}"


def unknown_name(what: str, name: str, known: Iterable[str], listing: str = "") -> str:
    """One line refusing ``name``: ``"unknown detector 'msq'; did you mean 'msp'?"``.

    Args:
        what: What kind of name (``"detector"``, ``"network"``).
        name: What the user typed.
        known: The valid names.
        listing: Where every name is listed, for when nothing is close.

    Returns:
        The message.
    """
    return f"unknown {what} {name!r}; {suggestion(name, known, listing)}"


__all__ = ["closest", "suggestion", "unknown_name"]
