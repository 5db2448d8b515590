"""Server-side drawings: the calls-per-hour plot and a call's SIP ladder, as inline SVG.

Both return :class:`markupsafe.Markup` built only from numbers and escaped text, so the
templates can insert them as they are.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from markupsafe import Markup, escape


def calls_plot(points: Sequence[tuple[float, int]], width: int = 600, height: int = 140) -> Markup:
    """A line of ``(epoch, calls_per_hour)`` points, with the maximum and time marks."""
    pad_l, pad_b, pad_t = 34, 18, 8
    w, h = width - pad_l - 4, height - pad_b - pad_t
    parts = [
        f'<svg class="plot" viewBox="0 0 {width} {height}" role="img" aria-label="calls per hour">',
        f'<rect x="{pad_l}" y="{pad_t}" width="{w}" height="{h}" class="frame"/>',
    ]
    if len(points) < 2:
        parts.append(
            f'<text x="{pad_l + 8}" y="{pad_t + h / 2:.0f}" class="note">'
            "not enough samples yet</text></svg>"
        )
        return Markup("".join(parts))
    t0, t1 = points[0][0], points[-1][0]
    span = max(t1 - t0, 1.0)
    top = max(max(v for _, v in points), 1)
    coords = " ".join(
        f"{pad_l + (t - t0) / span * w:.1f},{pad_t + h - v / top * h:.1f}" for t, v in points
    )
    parts.append(f'<polyline points="{coords}" class="line"/>')
    parts.append(f'<text x="2" y="{pad_t + 10}" class="axis">{top}</text>')
    parts.append(f'<text x="2" y="{pad_t + h}" class="axis">0</text>')
    for t, anchor, x in ((t0, "start", pad_l), (t1, "end", pad_l + w)):
        label = dt.datetime.fromtimestamp(t, dt.UTC).strftime("%H:%M")
        parts.append(
            f'<text x="{x}" y="{height - 4}" text-anchor="{anchor}" class="axis">{label}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))


@dataclass(frozen=True, slots=True)
class LadderRow:
    index: int
    time: float
    source: int  # column: 0 phone, 1 Limen, 2 PBX
    target: int
    label: str
    side: str  # "set" or "icp"
    record: Any


COLUMNS = ("Phone", "Limen", "PBX")


def ladder_rows(records: Sequence[Any], set_call_ids: set[str]) -> list[LadderRow]:
    """Place each message between two columns: its Call-ID tells the leg (each leg has its
    own Call-ID in a B2BUA), its direction tells which way."""
    rows = []
    for index, r in enumerate(records):
        side = "set" if r.call_id in set_call_ids else "icp"
        outer = 0 if side == "set" else 2
        source, target = (outer, 1) if r.direction == "in" else (1, outer)
        rows.append(LadderRow(index, r.time, source, target, r.label, side, r))
    return rows


def ladder_svg(rows: Sequence[LadderRow], href: str, width: int = 640) -> Markup:
    """The ladder: three lifelines and one arrow per message, each a link to its text
    (``href`` with ``{n}`` for the message number; htmx loads it beside the drawing)."""
    step, top = 26, 40
    xs = (70, width // 2, width - 70)
    height = top + step * max(len(rows), 1) + 10
    out = [
        f'<svg class="ladder" viewBox="0 0 {width} {height}" width="{width}" '
        f'role="img" aria-label="SIP ladder">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0L10,5L0,10z"/></marker>'
        "</defs>",
    ]
    for x, name in zip(xs, COLUMNS, strict=True):
        out.append(f'<text x="{x}" y="16" text-anchor="middle" class="head">{name}</text>')
        out.append(f'<line x1="{x}" y1="24" x2="{x}" y2="{height - 4}" class="life"/>')
    t0 = rows[0].time if rows else 0.0
    for i, row in enumerate(rows):
        y = top + i * step
        x1, x2 = xs[row.source], xs[row.target]
        link = escape(href.format(n=row.index))
        cls = "req" if not row.label[:1].isdigit() else "resp"
        out.append(
            f'<a href="{link}" hx-get="{link}" hx-target="#message" hx-swap="innerHTML" '
            f'class="msg {cls}" data-n="{row.index}">'
            # The whole row is the target, not just the thin arrow.
            f'<rect x="0" y="{y - step + 6}" width="{width}" height="{step}" class="hit"/>'
            f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" marker-end="url(#arrow)"/>'
            f'<text x="{(x1 + x2) / 2:.0f}" y="{y - 4}" text-anchor="middle">'
            f"{escape(row.label)}</text>"
            f'<text x="4" y="{y + 4}" class="t">+{row.time - t0:.3f}</text></a>'
        )
    out.append("</svg>")
    return Markup("".join(out))
