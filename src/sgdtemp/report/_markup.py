"""HTML fragments shared by the report's sections: escaping, numbers, verdict badges, tables."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

from sgdtemp.analysis import DOES_NOT_HOLD, HOLDS, NOT_MEASURED

__all__ = ["esc", "num", "verdict_badge", "table"]

_VERDICT_CLASS = {HOLDS: "v-holds", DOES_NOT_HOLD: "v-no", NOT_MEASURED: "v-na"}


def esc(text: Any) -> str:
    """``text`` as escaped HTML (quotes included)."""
    return html.escape(str(text), quote=True)


def num(x: Any, fmt: str = ".3g") -> str:
    """A number in ``fmt`` (``–`` for None and non-finite values; other values escaped).

    Example:
        >>> num(0.12345), num(float("nan")), num(3, ".2f")
        ('0.123', '–', '3.00')
    """
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    if isinstance(x, int | float):
        return format(x, fmt)
    return esc(x)


def verdict_badge(v: str) -> str:
    """A verdict as a coloured badge."""
    return f'<span class="verdict {_VERDICT_CLASS.get(v, "v-na")}">{esc(v)}</span>'


def table(head: Sequence[str], rows: Iterable[Sequence[str]], *, raw: bool = True) -> str:
    """A table: ``head`` escaped, the cells raw HTML (escaped with ``raw=False``)."""
    out = ["<table><thead><tr>", *(f"<th>{esc(h)}</th>" for h in head), "</tr></thead><tbody>"]
    for row in rows:
        out.append("<tr>")
        for cell in row:
            out.append(f"<td>{cell if raw else esc(cell)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)
