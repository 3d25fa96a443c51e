"""The leaderboard page's HTML: the page model (:mod:`harness.page_model`) through a jinja2 template.

Why a template: the page's markup lives in one file (``harness/page/leaderboard.html.j2``) that
reads as HTML, and every value in it is escaped unless the renderer marked it safe, so a name
full of markup (a run folder, a benchmark, a detector) stays text. The renderer marks as safe only
what it built and checked itself: the Content-Security-Policy, the page's JSON (no ``<``, ``>`` or
``&`` left in it), the CSS and script assets (refused if they could close their element), and
captions whose ``code`` spans it made. Escaping is :func:`html.escape` with quotes, as the page has
always written it, so the page's bytes do not depend on the template engine's own escaper.

The CSP allows no network source at all and runs only the page's own script and style (by hash),
so even a mistake in escaping could not run injected code.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import json
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

import jinja2

from dfb_ood.harness.leaderboard import CONVENTION_TEXT
from dfb_ood.harness.page_folder import WRITER
from dfb_ood.harness.page_model import COLUMNS, VARIANT_TAG, VARIANT_TEXT, RunFigures, RunSummary

__all__ = ["render_page"]

_TEMPLATE = "leaderboard.html.j2"
# The first metric column of each group gets a separating left edge.
_FIRST_OF_GROUP = ("near_auroc", "far_auroc", "id_accuracy")
# A caption's pieces: a Markdown backslash escape (report.md escapes names read from files, see
# harness.markdown), a `code` span, or plain text.
_CAPTION_PIECE = re.compile(
    r"\\(?P<escaped>[!-/:-@\[-`{-~])|`(?P<code>[^`]+)`|(?P<text>[^`\\]+|.)", re.DOTALL
)
# A line break and the indentation after it: the template's layout, not the page's (see its header).
_LAYOUT = re.compile(r"\n[ \t]*")


class _Safe(str):
    """Markup the renderer built and checked itself: the template writes it as it is.

    jinja2's autoescape passes any value with an ``__html__`` method through unescaped (its own
    macros' output included); every other value is escaped by :func:`_finalize`.
    """

    def __html__(self) -> str:
        return str(self)


def _escape(value: object) -> str:
    """Text as HTML (element content and quoted attribute values alike)."""
    return html.escape(str(value), quote=True)


def _finalize(value: object) -> object:
    """Every ``{{ value }}``: escaped as :func:`html.escape` does, unless already marked safe."""
    if hasattr(value, "__html__"):
        return value
    return _Safe(_escape(value))


def _inline_code(text: str) -> _Safe:
    """Escaped text with markdown's `code` spans as <code> and its backslash escapes undone."""
    out = []
    for piece in _CAPTION_PIECE.finditer(text):
        if piece["code"] is not None:
            out.append(f"<code>{_escape(piece['code'])}</code>")
        else:
            out.append(_escape(piece["escaped"] if piece["escaped"] is not None else piece["text"]))
    return _Safe("".join(out))


def _script_json(data: Any) -> _Safe:
    """JSON safe inside <script>: no '<', '>' or '&' (so no '</script>' or '<!--'), ASCII only."""
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    return _Safe(text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))


def _csp_hash(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _page_file(name: str) -> str:
    return (resources.files("dfb_ood.harness") / "page" / name).read_text(encoding="utf-8")


def _asset(name: str) -> str:
    text = _page_file(name)
    closing = "</script" if name.endswith(".js") else "</style"
    if closing in text.lower():
        raise RuntimeError(
            f"harness/page/{name} contains {closing}>, which would end its inline element early"
        )
    return text


@functools.lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    environment = jinja2.Environment(autoescape=True, finalize=_finalize, undefined=jinja2.StrictUndefined)
    environment.filters.update(
        inline_code=_inline_code, urlquote=quote, basename=lambda path: PurePosixPath(path).name
    )
    return environment.from_string(_LAYOUT.sub("", _page_file(_TEMPLATE)))


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


# --------------------------------------------------------------------------------------------------
# The model as the template reads it: labels, classes and numbers as shown
# --------------------------------------------------------------------------------------------------


def _metric_classes(key: str) -> list[str]:
    group = COLUMNS[key]["group"]
    classes = [f"col-{group}"] if group else []
    if key in _FIRST_OF_GROUP:
        classes.append("first-" + (group or "id"))
    return classes


def _columns() -> list[dict[str, Any]]:
    columns = []
    for key, spec in COLUMNS.items():
        column: dict[str, Any] = {"key": key, "label": spec["label"], "text": spec["kind"] == "text"}
        if not column["text"]:
            column.update(
                classes=" ".join(_metric_classes(key)),
                group=spec["group"],
                direction="↑" if spec["higher"] else "↓",
                better="higher is better" if spec["higher"] else "lower is better",
            )
        columns.append(column)
    return columns


def _metric_cell(key: str, cell: Mapping[str, Any] | None) -> dict[str, Any]:
    classes = ["num", *_metric_classes(key)]
    if cell is None:
        return {"missing": True, "classes": " ".join([*classes, "missing"])}
    best = bool(cell.get("best"))
    return {
        "missing": False,
        "classes": " ".join([*classes, "best"] if best else classes),
        "best": best,
        "mean": _pct(cell["mean"]),
        "std": _pct(cell["std"]) if cell["seeds"] > 1 else None,
    }


def _block_view(index: int, block: Mapping[str, Any], multi: bool, aupr_text: str) -> dict[str, Any]:
    rows = block["rows"]
    seeds = sorted({r["seeds"] for r in rows})
    uneven = len(seeds) > 1
    convention = CONVENTION_TEXT.get(
        block["fpr_convention"], f"FPR@95 convention {block['fpr_convention']!r}"
    )
    if uneven:
        spread = "mean ± sample std over the seeds each detector has (seeds column)"
    elif seeds == [1]:
        spread = "one seed (no std)"
    else:
        spread = f"mean ± sample std over {seeds[0]} seeds"
    metric_keys = [key for key, spec in COLUMNS.items() if spec["kind"] == "metric"]
    return {
        "index": index,
        "title": f"{block['benchmark']} / {block['network']}",
        "convention_heading": convention if multi else None,
        "benchmark": block["benchmark"],
        "network": block["network"],
        "caption": (
            f"Percent, {spread}. {convention}. {aupr_text}. Shaded bold: the best value of a column "
            "(compared as shown, ties all marked), over every detector of this table whatever the filters."
        ),
        "uneven": uneven,
        "searched": any(r["hyperparameters"] for r in rows),
        "rows": [
            {
                "variant": row["variant"],
                "tag": VARIANT_TAG.get(row["variant"]),
                "detector": row["detector"],
                "detector_network": row["detector_network"],
                "net": row["net"],
                "cells": [_metric_cell(key, row["cells"][key]) for key in metric_keys],
                "seeds": row["seeds"],
                "hyperparameters": row["hyperparameters"],
            }
            for row in rows
        ],
    }


def _comparison_view(comparison: Mapping[str, Any]) -> dict[str, Any]:
    from dfb_ood.harness.reference import METRIC_LABELS

    rows = comparison["rows"]
    notes: list[str] = []
    for row in rows:
        for caveat in row.get("caveats", []):
            if caveat not in notes:
                notes.append(caveat)
    multi = len({(r["benchmark"], r["network"]) for r in rows}) > 1
    heads = (["benchmark / network"] if multi else []) + [
        "detector", "theirs as", "dataset", "metric", "ours %", "theirs %", "diff (pp)", "notes"
    ]  # fmt: skip
    shown = []
    for row in rows:
        marks = ",".join(str(i) for i in sorted(notes.index(c) + 1 for c in row.get("caveats", [])))
        dataset = (
            row["dataset"]
            if row["dataset"] == row["their_dataset"]
            else (f"{row['dataset']} ({row['their_dataset']})")
        )
        shown.append(
            {
                "benchmark": row["benchmark"],
                "network": row["network"],
                "detector": row["detector"],
                "their_name": row["their_name"],
                "dataset": dataset,
                "metric": METRIC_LABELS.get(str(row["metric"]), row["metric"]),
                "ours": _pct(float(row["ours"])),
                "theirs": _pct(float(row["theirs"])),
                "difference": f"{100 * float(row['difference']):+.2f}",
                "marks": marks or "-",
            }
        )
    return {
        "name": comparison["name"],
        "source": comparison["source"],
        "protocol": comparison["protocol"],
        "scope": comparison["scope"],
        "multi": multi,
        "heads": heads,
        "rows": shown,
        "notes": notes,
    }


def render_page(
    runs: Sequence[tuple[Path, list[dict[str, object]]]],
    blocks: list[dict[str, Any]],
    group_order: Sequence[str],
    figures: Sequence[RunFigures],
    summaries: Sequence[RunSummary],
    comparison: Mapping[str, Any] | None,
    sort_by: str | None,
    aupr_text: str,
) -> str:
    """The whole page (``index.html``) for the model: tables, filters, comparison, figures, runs."""
    css, script = _asset("leaderboard.css"), _asset("leaderboard.js")
    data = {
        "version": 1,
        "columns": COLUMNS,
        "blocks": blocks,
        "sort": {"column": sort_by} if sort_by else None,
        "comparison": comparison,
        "aupr": aupr_text,
        "fpr_conventions": {b["fpr_convention"]: CONVENTION_TEXT.get(b["fpr_convention"]) for b in blocks},
    }
    names = list(dict.fromkeys(f"{b['benchmark']} / {b['network']}" for b in blocks))
    seeds = sorted(
        {int(r.get("seed", 0)) for _, rows in runs for r in rows if str(r.get("seed", "")).isdigit()}
    )
    conventions = sorted({b["fpr_convention"] for b in blocks})
    lede = (
        f"{sum(len(b['rows']) for b in blocks)} rows from {len(runs)} run(s)"
        + (f", seeds {', '.join(map(str, seeds))}" if seeds else "")
        + ". Click a column header to sort (best first; again to reverse); the filters hide rows, "
        "never change the numbers. Detector scores: higher = more in-distribution."
    )
    legend = [
        *(f"{CONVENTION_TEXT.get(c, f'FPR@95 convention {c!r}')}." for c in conventions),
        f"{aupr_text}.",
        "AUROC, AUPR and ID accuracy: higher is better (↑); FPR@95: lower is better (↓). near / far: the "
        "mean over the benchmark's near- / far-OOD sets.",
        'net: K = the K-class classifier, K+1 = the DFB net, "K, bg" = classifier foreground + DFB '
        "background. Coloured left edge and tag: base detector, _dfb, _dfbz, bg.",
    ]
    csp = (
        "default-src 'none'; img-src 'self' file:; "
        f"style-src {_csp_hash(css)}; script-src {_csp_hash(script)}; base-uri 'none'; form-action 'none'"
    )
    table_rows = [row for block in blocks for row in block["rows"]]
    return _template().render(
        csp=_Safe(csp),
        writer=WRITER,
        title="OOD leaderboard: " + "; ".join(names),
        css=_Safe(css),
        script=_Safe(script),
        data=_script_json(data),
        lede=lede,
        legend=legend,
        columns=_columns(),
        families=list(dict.fromkeys(row["base"] for row in table_rows)),
        groups=[g for g in group_order if any(row["group"] == g for row in table_rows)],
        variants=[
            (v, text) for v, text in VARIANT_TEXT.items() if any(row["variant"] == v for row in table_rows)
        ],
        blocks=[_block_view(i, block, len(conventions) > 1, aupr_text) for i, block in enumerate(blocks)],
        comparison=_comparison_view(comparison) if comparison is not None else None,
        figures=figures,
        runs=summaries,
    )
