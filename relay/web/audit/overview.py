"""The auditors' first page: counts per day by category, purpose, action and basis.

Stage: async edge (HTTP handler) and the pure model it shares with the HTML report.
Input: a day range and a controller (query parameters). Output: the overview page, whose
numbers come from the per-day counts (``relay.store.audit_counts``), never from a scan.

Rule 1: each chart has its table beside it, built from the same ``Section``: the same numbers,
        the values in the same order and colours (``charts`` Rule 2).
Rule 2: the page reads a bounded number of hash fields (days x dimensions seen), so it costs
        the same at a thousand records as at a billion.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from markupsafe import Markup
from starlette.requests import Request
from starlette.responses import Response

from relay.store.audit_counts import (
    RECORDS,
    TRACKERS,
    WITHOUT_CONSENT,
    WITHOUT_CONSENT_RECORDS,
    Counts,
)
from relay.store.audit_legend import DIMENSIONS, meaning
from relay.web.audit import params
from relay.web.audit.charts import stacked_bars, swatch
from relay.web.audit.workspace import Workspace

SECTIONS = (
    ("category", "Recipient copies by category", "recipient copies"),
    ("purpose", "Trackers by purpose", "trackers"),
    ("action", "Trackers by action", "trackers"),
    ("basis", "Trackers by basis", "trackers"),
)


@dataclass(frozen=True)
class Column:
    code: str
    meaning: str
    swatch: Markup
    total: int


@dataclass(frozen=True)
class Section:
    key: str
    title: str
    unit: str
    chart: Markup
    columns: list[Column]
    rows: list[tuple[date, list[int], int]]  # newest day first: day, counts, total
    total: int


def _ordered(dimension: str, present: list[str]) -> list[str]:
    """The legend's order first (stable colours), then any other code seen."""
    known = [code for code in DIMENSIONS.get(dimension, {}) if code in present]
    return known + sorted(code for code in present if code not in known)


def sections(counts: Counts) -> list[Section]:
    days = counts.days
    out = []
    for key, title, unit in SECTIONS:
        raw = counts.series(key)
        codes = _ordered(key, [c for c, v in raw.items() if any(v)])
        series = {code: raw[code] for code in codes}
        chart = stacked_bars(f"chart-{key}", title, days, series, unit)
        columns = [
            Column(code, meaning(key, code), swatch(i), sum(series[code]))
            for i, code in enumerate(codes)
        ]
        rows = []
        for index, day in reversed(list(enumerate(days))):  # the table: newest day first
            cells = [series[code][index] for code in codes]
            rows.append((day, cells, sum(cells)))
        out.append(Section(key, title, unit, chart, columns, rows, sum(c.total for c in columns)))
    return out


def rule_totals(counts: Counts) -> list[tuple[str, int]]:
    """Trackers per detection rule over the range, most frequent first."""
    totals = [(rule, sum(v)) for rule, v in counts.series("rule").items()]
    return sorted((t for t in totals if t[1]), key=lambda t: (-t[1], t[0]))


@dataclass(frozen=True)
class Summary:
    records: int
    trackers: int
    without_consent: int
    without_consent_records: int


def summary(counts: Counts) -> Summary:
    return Summary(
        counts.total(RECORDS),
        counts.total(TRACKERS),
        counts.total(WITHOUT_CONSENT),
        counts.total(WITHOUT_CONSENT_RECORDS),
    )


async def overview(request: Request, user: str) -> Response:
    workspace: Workspace = request.app.state.audit
    qp = request.query_params
    span = params.day_range(qp)
    ctl = params.controller(qp)
    counts = await workspace.reader.counts(span.first_day, span.last_day, ctl)
    link = {**span.query(), "controller": qp.get("controller", "")}
    return workspace.render(
        request,
        user,
        "audit/overview.html",
        span=span,
        controller=qp.get("controller", ""),
        controllers=counts.controllers,
        implicit=params.IMPLICIT_CONTROLLER,
        summary=summary(counts),
        sections=sections(counts),
        rules=rule_totals(counts),
        untracked_link="without-consent" + params.query(**link),
        records_link="records" + params.query(**link),
    )


__all__ = ["SECTIONS", "Column", "Section", "Summary", "overview", "rule_totals", "sections"]
