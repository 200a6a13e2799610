"""Charts of the auditors' workspace and report: stacked bars per day, as inline SVG.

Stage: pure rendering helper (no I/O). Input: the days and, per value, its count on each day.
Output: an SVG fragment (``markupsafe.Markup``) ready to be placed in a page.

Rule 1: server-side SVG only: no script, no external asset, no ``style`` attribute (the pages'
        Content-Security-Policy forbids inline styles; colours are presentation attributes).
Rule 2: a chart never carries a number the table beside it does not: the SVG has a title and a
        description for screen readers, and each bar segment a tooltip, but the table is the
        reference; colours come from a fixed colour-blind-safe palette, in a stable order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from html import escape

from markupsafe import Markup

# Okabe & Ito's colour-blind-safe palette (darkest first), then greys.
PALETTE = (
    "#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#7F7F7F",
)  # fmt: skip
WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 44, 8, 10, 28


def colour(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def swatch(index: int) -> Markup:
    """A small square of a value's colour, for a legend (decorative: the label says it all)."""
    return Markup(
        '<svg class="swatch" width="12" height="12" viewBox="0 0 12 12" aria-hidden="true" '
        f'focusable="false"><rect width="12" height="12" fill="{colour(index)}"/></svg>'
    )


def _nice_top(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    top = 1
    while True:
        for step in (1, 2, 5):
            if top * step >= value:
                return top * step
        top *= 10


def stacked_bars(
    chart_id: str,
    title: str,
    days: Sequence[date],
    series: Mapping[str, Sequence[int]],
    unit: str,
) -> Markup:
    """One bar per day, stacked by value in ``series`` order (Rule 2)."""
    totals = [sum(values[i] for values in series.values()) for i in range(len(days))]
    top = _nice_top(max(totals, default=0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(len(days), 1)
    bar = max(slot * 0.8, 1.0)
    grand = sum(totals)
    desc = f"{grand} {unit} over {len(days)} days; the table beside gives every number."
    out = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{escape(desc)}</desc>',
    ]
    # Axes and the scale: 0, half, top.
    for fraction in (0.0, 0.5, 1.0):
        y = TOP + plot_h * (1 - fraction)
        label = f"{top * fraction:g}"
        out.append(
            f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH - RIGHT}" y2="{y:.1f}" '
            f'stroke="#c8c8c8" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#333333">{label}</text>'
        )
    for index, day in enumerate(days):
        x = LEFT + index * slot + (slot - bar) / 2
        base = float(TOP + plot_h)
        for number, (value, counts) in enumerate(series.items()):
            n = counts[index]
            if not n:
                continue
            h = plot_h * n / top
            base -= h
            out.append(
                f'<rect x="{x:.2f}" y="{base:.2f}" width="{bar:.2f}" height="{h:.2f}" '
                f'fill="{colour(number)}"><title>{day.isoformat()} {escape(value)}: {n}'
                "</title></rect>"
            )
    if days:
        y = HEIGHT - 8
        labels = {0: "start", len(days) - 1: "end"}
        if len(days) > 2:
            labels[len(days) // 2] = "middle"
        for index, anchor in labels.items():
            x = LEFT + index * slot + slot / 2
            align = {"start": "start", "end": "end"}.get(anchor, "middle")
            out.append(
                f'<text x="{x:.1f}" y="{y}" text-anchor="{align}" font-size="11" '
                f'fill="#333333">{days[index].isoformat()}</text>'
            )
    out.append("</svg>")
    return Markup("".join(out))


__all__ = ["PALETTE", "colour", "stacked_bars", "swatch"]
