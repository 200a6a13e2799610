"""The auditors' lists: decision records by filter, and every email tracked without consent.

Stage: async edge (HTTP handlers). Input: a day range, ``Filters`` and a page cursor (query
parameters). Output: a page of records, each linking to its message and its recipient.

Rule 1: a list page does bounded work (``AuditReader`` Rule 1) and says how far it read; the
        "next" link carries the cursor, so a rare filter over a long range is a few clicks,
        never one request that stalls the relay.
Rule 2: the "tracked without consent" list reads its own index, so every such record of the
        range is listed, oldest first, each tracker with the reason it was kept
        (``audit_legend.reason``); its total comes from the per-day counts.
Rule 3: addresses are masked; links name recipients by their key, messages by their hash.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from relay.store.audit import message_key
from relay.store.audit_counts import WITHOUT_CONSENT, WITHOUT_CONSENT_RECORDS, sender_domain
from relay.store.audit_legend import reason, tracked_without_consent
from relay.store.audit_query import Filters, Page
from relay.store.audit_record import DecisionRecord, TrackerRecord, iso
from relay.web.audit import params
from relay.web.audit.workspace import Workspace

PAGE_SIZE = 50


@dataclass(frozen=True)
class TrackerRow:
    tracker: TrackerRecord
    reason: str
    without_consent: bool
    matched: bool


@dataclass(frozen=True)
class RecordRow:
    record: DecisionRecord
    decided: str
    domain: str
    message_link: str
    recipient_link: str
    trackers: list[TrackerRow]


def record_rows(records: list[DecisionRecord], filters: Filters) -> list[RecordRow]:
    rows = []
    for r in records:
        trackers = [
            TrackerRow(
                t,
                reason(t),
                tracked_without_consent(t),
                filters.on_trackers and filters.tracker_matches(t),
            )
            for t in r.trackers
        ]
        if filters.without_consent:
            trackers = [t for t in trackers if t.without_consent]
        rows.append(
            RecordRow(
                r,
                stamp(r.decided_at),
                sender_domain(r.header_from, r.mail_from),
                f"m/{message_key(r.message_id)}",
                f"r/{r.recipient_key}",
                trackers,
            )
        )
    return rows


def _next_link(base: str, span: params.DayRange, f: Filters, page: Page) -> str:
    if page.cursor is None:
        return ""
    return base + params.query(**span.query(), **params.filter_query(f), after=page.cursor)


def _reached(page: Page) -> str:
    if page.cursor is None or not page.records:
        return ""
    return stamp(page.records[-1].decided_at)


def _list_values(
    base: str, span: params.DayRange, f: Filters, page: Page, after: str | None
) -> dict[str, Any]:
    """What both lists' templates show: the range, the filters, the rows, the next page."""
    return {
        "span": span,
        "f": f,
        "implicit": params.IMPLICIT_CONTROLLER,
        "rows": record_rows(page.records, f),
        "page": page,
        "next_link": _next_link(base, span, f, page),
        "continued": bool(after),
    }


async def records(request: Request, user: str) -> Response:
    workspace: Workspace = request.app.state.audit
    qp = request.query_params
    span = params.day_range(qp)
    f = params.filters(qp)
    after = qp.get("after") or None
    if after and not all(c.isdigit() or c == "-" for c in after):
        raise ValueError("after: not a cursor of this list")
    page = await workspace.reader.records(span.since, span.until, f, after, PAGE_SIZE)
    return workspace.render(
        request,
        user,
        "audit/records.html",
        reached=_reached(page),
        **_list_values("records", span, f, page, after),
    )


async def without_consent(request: Request, user: str) -> Response:
    workspace: Workspace = request.app.state.audit
    qp = request.query_params
    span = params.day_range(qp)
    f = params.filters(qp, without_consent=True)
    after = qp.get("after") or None
    page = await workspace.reader.without_consent(span.since, span.until, f, after, PAGE_SIZE)
    counts = await workspace.reader.counts(span.first_day, span.last_day, f.controller)
    return workspace.render(
        request,
        user,
        "audit/without_consent.html",
        trackers_total=counts.total(WITHOUT_CONSENT),
        records_total=counts.total(WITHOUT_CONSENT_RECORDS),
        **_list_values("without-consent", span, f, page, after),
    )


def stamp(moment: datetime) -> str:
    return iso(moment)[:19].replace("T", " ")


__all__ = ["PAGE_SIZE", "RecordRow", "TrackerRow", "record_rows", "records", "stamp"]
