"""Withdrawal effect: a recipient's consent events beside the decisions of the emails sent to
them, and, after each withdrawal, refusal, expiry or objection, what was still tracked.

Stage: pure (no I/O). Input: the recipient's stored consent records (dicts, in append order)
and their decision records. Output: one merged ``Entry`` list in time order, and one
``Effect`` per (stopping event, purpose) with the trackers that still reached their server.

Rule 1: an event takes effect when the relay recorded it (``recorded_at``): a decision taken
        before the relay knew of a withdrawal is not counted against it. The effect of a
        withdrawal of purpose p lasts until the next ``granted`` event naming p.
Rule 2: "tracked" means the tracker's server still received the request
        (``audit_legend.REACHING_ACTIONS``) on a basis other than an exemption; for an
        ``objected`` event, a tracker of any purpose kept on the ``legacy`` basis. The result
        states facts (which tracker, which basis, which decision row); it does not judge them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from relay.store.audit_legend import REACHING_ACTIONS
from relay.store.audit_record import DecisionRecord, TrackerRecord
from relay.store.consent_proof import parse_time

STOPPING = ("withdrawn", "refused", "expired", "objected")
ANY_PURPOSE = "*"


@dataclass(frozen=True)
class Entry:
    at: datetime
    event: Mapping[str, Any] | None = None  # a consent record
    record: DecisionRecord | None = None  # a decision
    tracked: tuple[str, ...] = ()  # purposes whose tracker reached its server
    stopped: tuple[str, ...] = ()  # purposes whose tracker did not


@dataclass(frozen=True)
class Effect:
    event: Mapping[str, Any]
    purpose: str  # ANY_PURPOSE for an objection (the legacy regime as a whole)
    start: datetime
    end: datetime | None  # the next grant of the purpose, None = still in force
    decisions: int = 0  # decisions taken in the window
    trackers: int = 0  # trackers of the purpose in those decisions
    still_tracked: list[tuple[DecisionRecord, TrackerRecord]] = field(default_factory=list)

    @property
    def held(self) -> bool:
        return not self.still_tracked


def _reaches(t: TrackerRecord) -> bool:
    return t.action in REACHING_ACTIONS and t.basis != "exempt"


def _recorded(event: Mapping[str, Any]) -> datetime:
    return parse_time(str(event.get("recorded_at") or event.get("occurred_at")), "recorded_at")


def entries(events: Sequence[Mapping[str, Any]], records: Sequence[DecisionRecord]) -> list[Entry]:
    """Events and decisions in one list, by time (an event before a decision at the same time)."""
    rows: list[tuple[datetime, int, Entry]] = []
    for event in events:
        at = _recorded(event)
        rows.append((at, 0, Entry(at, event=event)))
    for r in records:
        tracked = tuple(dict.fromkeys(t.purpose for t in r.trackers if _reaches(t)))
        stopped = tuple(
            dict.fromkeys(t.purpose for t in r.trackers if not _reaches(t) and t.purpose)
        )
        rows.append((r.decided_at, 1, Entry(r.decided_at, record=r, tracked=tracked,
                                            stopped=stopped)))  # fmt: skip
    rows.sort(key=lambda row: (row[0], row[1]))
    return [entry for _at, _order, entry in rows]


def _window_end(events: Sequence[Mapping[str, Any]], index: int, purpose: str) -> datetime | None:
    if purpose == ANY_PURPOSE:
        return None  # an objection to the legacy regime is final
    for later in events[index + 1 :]:
        if later.get("event") == "granted" and purpose in later.get("purposes", ()):
            return _recorded(later)
    return None


def effects(events: Sequence[Mapping[str, Any]], records: Sequence[DecisionRecord]) -> list[Effect]:
    """Rule 1 and Rule 2, one ``Effect`` per stopping event and purpose, in event order."""
    out = []
    for index, event in enumerate(events):
        kind = event.get("event")
        if kind not in STOPPING:
            continue
        purposes = [ANY_PURPOSE] if kind == "objected" else list(event.get("purposes", ()))
        start = _recorded(event)
        for purpose in purposes:
            end = _window_end(events, index, purpose)
            decisions = trackers = 0
            still: list[tuple[DecisionRecord, TrackerRecord]] = []
            for r in records:
                if r.decided_at < start or (end is not None and r.decided_at >= end):
                    continue
                decisions += 1
                for t in r.trackers:
                    if purpose == ANY_PURPOSE:
                        relevant = t.basis == "legacy"
                    else:
                        relevant = t.purpose == purpose
                    trackers += relevant
                    if relevant and _reaches(t):
                        still.append((r, t))
            out.append(Effect(event, purpose, start, end, decisions, trackers, still))
    return out


__all__ = ["ANY_PURPOSE", "STOPPING", "Effect", "Entry", "effects", "entries"]
