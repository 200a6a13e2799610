"""The auditors' report (``relay audit report``): the workspace's counts, charts and "tracked
without consent" list as one self-contained HTML file.

Stage: edge (writes a file from the decision log), shared by the CLI; no HTTP.
Input: an ``AuditReader``, UTC days, a controller. Output: HTML written to a stream as it is
read, so a range with millions of records costs the memory of one page of them.

Rule 1: the same facts as the workspace: the counts and sections come from ``overview`` over
        the same per-day counts, the list from the same index and the same rows as ``lists``.
Rule 2: self-contained: the stylesheet is inlined, charts are inline SVG, nothing is loaded and
        nothing runs; the print styles keep each chart with its table, so a browser's "print
        to PDF" gives a clean document.
Rule 3: addresses are masked unless the caller asks for them in full (an auditor's export of
        the audit trail may carry them, a report handed around should not need to).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

import jinja2

from relay import __version__
from relay.core.recipients import mask
from relay.store.audit_legend import ACTIONS, BASES, CATEGORIES, ELEMENTS, PURPOSES
from relay.store.audit_query import AuditReader, Filters
from relay.web.audit.lists import record_rows
from relay.web.audit.overview import Summary, rule_totals, sections, summary
from relay.web.audit.params import DayRange
from relay.web.context import STATIC

LEGEND = (
    ("Categories (recipient copies)", CATEGORIES),
    ("Purposes (trackers)", PURPOSES),
    ("Actions (what the relay did to a tracker)", ACTIONS),
    ("Bases (the legal ground of each decision)", BASES),
    ("Elements (where the tracker was found)", ELEMENTS),
)
PAGE = 200


@dataclass(frozen=True)
class ReportFacts:
    summary: Summary
    listed: int  # recipient copies in the "tracked without consent" list


async def write_report(
    reader: AuditReader,
    templates: jinja2.Environment,
    span: DayRange,
    controller: str | None,
    out: IO[str],
    *,
    full_addresses: bool = False,
    on_progress: Callable[[int], None] = lambda _n: None,
) -> ReportFacts:
    counts = await reader.counts(span.first_day, span.last_day, controller)
    facts = summary(counts)
    label = "every controller" if controller is None else (controller or "the single controller")
    head = templates.get_template("audit/report_head.html").render(
        css=(STATIC / "audit.css").read_text(encoding="utf-8"),
        span=span,
        controller_label=label,
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
        version=__version__,
        full_addresses=full_addresses,
        summary=facts,
        sections=sections(counts),
        rules=rule_totals(counts),
    )
    out.write(head)
    row_macro = templates.get_template("audit/_macros.html").module.row  # type: ignore[attr-defined]
    filters = Filters(controller=controller, without_consent=True)
    cursor: str | None = None
    listed = 0
    while True:
        page = await reader.without_consent(span.since, span.until, filters, cursor, PAGE)
        for row in record_rows(page.records, filters):
            shown = row.record.rcpt if full_addresses else mask(row.record.rcpt)
            out.write(str(row_macro(row, "", shown)))
        listed += len(page.records)
        on_progress(len(page.records))
        if page.cursor is None:
            break
        cursor = page.cursor
    tail = templates.get_template("audit/report_tail.html").render(
        listed=listed, legend_tables=LEGEND
    )
    out.write(tail)
    return ReportFacts(facts, listed)


def default_templates() -> jinja2.Environment:
    from relay.web.context import templates_environment

    return templates_environment()


__all__ = ["LEGEND", "ReportFacts", "default_templates", "write_report"]
