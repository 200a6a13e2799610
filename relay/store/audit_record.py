"""Decision records: one per (message, recipient), built from the pipeline's decisions.

Stage: the audit stage's pure half. Input: the filter result (its recipient plans), the
envelope and the upstream's replies. Output: frozen ``DecisionRecord``s
and the auditors' JSON (SPEC section 3). The stored and CSV forms are in ``audit_codec``.

Rule 1: pure: no I/O and no randomness. The record id is a hash of the relay id, the reception
        time, the message id, the recipient and its position, so that the same message handled
        once always yields the same ids, and a journal replay can recognise what is stored.
Rule 2: the JSON is canonical: the same record gives the same bytes (sorted keys, no spaces,
        UTC timestamps with microseconds and a ``Z``), so that exports are reproducible.
Rule 3: the address is kept inside the record (auditors must be able to read it); only its
        keyed hash ever appears in a Redis key.
Rule 4: ``controller`` is the id of the controller whose consent the decisions read ("" when
        no configured controller covered the message); records made before controllers
        existed read back with "" as well.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from relay import __version__
from relay.model import Candidate, Category, Decision, Envelope, RecipientPlan


@dataclass(frozen=True, slots=True)
class TrackerRecord:
    """One tracker of one recipient's version: what was found and what was done, and why."""

    url: str
    element: str
    rule: str
    vendor: str
    purpose: str
    basis: str
    action: str
    policy_rule: str
    consent_event_ids: tuple[str, ...] = ()

    def to_json(self) -> dict[str, object]:
        return {
            "url": self.url,
            "element": self.element,
            "rule": self.rule,
            "vendor": self.vendor,
            "purpose": self.purpose,
            "basis": self.basis,
            "action": self.action,
            "policy_rule": self.policy_rule,
            "consent_event_ids": list(self.consent_event_ids),
        }


@dataclass(frozen=True, slots=True)
class DecisionRecord:
    """What the relay decided for one recipient of one message, with the basis of each action."""

    record_id: str
    message_id: str
    relay_id: str
    mail_from: str  # envelope sender
    header_from: str  # the From header as written
    rcpt: str
    recipient_key: str
    category: str
    category_reason: str
    pack: str
    trackers: tuple[TrackerRecord, ...]
    consent_event_ids: tuple[str, ...]
    footer_injected: bool
    upstream_reply: str
    relay_version: str
    rules_digest: str
    received_at: datetime
    decided_at: datetime
    controller: str = ""

    def to_json(self) -> dict[str, object]:
        """The SPEC section-3 shape of one recipient, with the audit fields around it."""
        return {
            "record_id": self.record_id,
            "message_id": self.message_id,
            "relay_id": self.relay_id,
            "mail_from": self.mail_from,
            "header_from": self.header_from,
            "rcpt": self.rcpt,
            "recipient_key": self.recipient_key,
            "category": self.category,
            "category_reason": self.category_reason,
            "pack": self.pack,
            "trackers": [t.to_json() for t in self.trackers],
            "consent_event_ids": list(self.consent_event_ids),
            "footer_injected": self.footer_injected,
            "upstream_reply": self.upstream_reply,
            "relay_version": self.relay_version,
            "rules_digest": self.rules_digest,
            "received_at": iso(self.received_at),
            "decided_at": iso(self.decided_at),
            "controller": self.controller,
        }


# ---------------------------------------------------------------------------------------------
# Building records


class _Controller(Protocol):
    @property
    def id(self) -> str: ...


class DecidedMessage(Protocol):
    """What the pipeline's filter result offers (``relay.core.filtering.FilterResult`` fits)."""

    @property
    def message_id(self) -> str: ...
    @property
    def from_header(self) -> str: ...
    @property
    def category(self) -> Category: ...
    @property
    def category_reason(self) -> str: ...
    @property
    def candidates(self) -> tuple[Candidate, ...]: ...
    @property
    def plans(self) -> tuple[RecipientPlan, ...]: ...
    @property
    def packs(self) -> Mapping[str, str]: ...
    @property
    def rules_digest(self) -> str: ...
    @property
    def controller(self) -> _Controller | None: ...


def build_records(
    source: DecidedMessage,
    envelope: Envelope,
    upstream_replies: Mapping[str, str],
    /,
    *,
    relay_id: str,
    received_at: datetime,
    decided_at: datetime | None = None,
) -> list[DecisionRecord]:
    """One record per recipient plan, in plan order (pure: the same input gives the same
    records, ids included). ``decided_at`` defaults to ``received_at``: the decisions are taken
    while the message is received; pass the time explicitly when it matters."""
    plans = source.plans
    from_header = source.from_header
    digest = source.rules_digest
    packs = source.packs
    by_id = {c.id: c for c in source.candidates}
    controller = source.controller.id if source.controller is not None else ""
    records = []
    for index, plan in enumerate(plans):
        trackers = tuple(_tracker(by_id[d.candidate_id], d) for d in plan.decisions)
        records.append(
            DecisionRecord(
                record_id=record_id(relay_id, received_at, source.message_id, index, plan.rcpt),
                message_id=source.message_id,
                relay_id=relay_id,
                mail_from=envelope.mail_from,
                header_from=from_header,
                rcpt=plan.rcpt,
                recipient_key=plan.recipient_key,
                category=source.category.value,
                category_reason=source.category_reason,
                pack=packs.get(plan.rcpt, ""),
                trackers=trackers,
                consent_event_ids=_union(t.consent_event_ids for t in trackers),
                footer_injected=plan.footer,
                upstream_reply=upstream_replies.get(plan.rcpt, ""),
                relay_version=__version__,
                rules_digest=digest,
                received_at=received_at,
                decided_at=decided_at or received_at,
                controller=controller,
            )
        )
    return records


def _tracker(candidate: Candidate, decision: Decision) -> TrackerRecord:
    return TrackerRecord(
        url=candidate.url,
        element=candidate.element.value,
        rule=candidate.rule,
        vendor=candidate.vendor,
        purpose=candidate.purpose.value,
        basis=decision.basis.value,
        action=decision.action.value,
        policy_rule=decision.policy_rule,
        consent_event_ids=tuple(decision.consent_event_ids),
    )


def _union(groups: Iterable[tuple[str, ...]]) -> tuple[str, ...]:
    """Event ids in first-seen order, each once (dict keeps insertion order)."""
    return tuple(dict.fromkeys(i for group in groups for i in group))


def record_id(relay_id: str, received_at: datetime, message_id: str, index: int, rcpt: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    for part in (relay_id, iso(received_at), message_id, str(index), rcpt):
        h.update(part.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Encodings


def normalise_message_id(message_id: str) -> str:
    return message_id.strip().strip("<>").strip()


def message_key(message_id: str) -> str:
    """Index key part for a Message-ID: 64 bits of hash (a collision only merges two lists)."""
    data = normalise_message_id(message_id).encode("utf-8", "surrogateescape")
    return hashlib.blake2b(data, digest_size=8).hexdigest()


def iso(moment: datetime) -> str:
    """UTC ISO-8601 with microseconds and a ``Z``: one spelling per instant (Rule 2)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    text = moment.astimezone(UTC).isoformat(timespec="microseconds")
    return text.removesuffix("+00:00") + "Z"


def canonical_json(data: object) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _str(data: Mapping[str, object], name: str) -> str:
    value = data.get(name, "")
    if not isinstance(value, str):
        raise ValueError(f"record field {name!r} must be a string, not {value!r}")
    return value


def _ids(data: Mapping[str, object], name: str) -> tuple[str, ...]:
    value = data.get(name, [])
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"record field {name!r} must be a list of strings")
    return tuple(value)


def _time(data: Mapping[str, object], name: str) -> datetime:
    moment = datetime.fromisoformat(_str(data, name))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def record_from_json(data: Mapping[str, object]) -> DecisionRecord:
    """The inverse of ``DecisionRecord.to_json``; a wrong field raises ValueError."""
    raw_trackers = data.get("trackers", [])
    if not isinstance(raw_trackers, list):
        raise ValueError("record field 'trackers' must be a list")
    trackers = []
    for item in raw_trackers:
        if not isinstance(item, dict):
            raise ValueError("each tracker must be an object")
        trackers.append(
            make_tracker([_str(item, n) for n in TRACKER_FIELDS], _ids(item, "consent_event_ids"))
        )
    footer = data.get("footer_injected", False)
    if not isinstance(footer, bool):
        raise ValueError("record field 'footer_injected' must be true or false")
    rid = _str(data, "record_id")
    if not rid or any(c not in "0123456789abcdef" for c in rid):
        raise ValueError(f"record_id must be lower-case hex, not {rid!r}")
    return DecisionRecord(
        record_id=rid,
        message_id=_str(data, "message_id"),
        relay_id=_str(data, "relay_id"),
        mail_from=_str(data, "mail_from"),
        header_from=_str(data, "header_from"),
        rcpt=_str(data, "rcpt"),
        recipient_key=_str(data, "recipient_key"),
        category=_str(data, "category"),
        category_reason=_str(data, "category_reason"),
        pack=_str(data, "pack"),
        trackers=tuple(trackers),
        consent_event_ids=_ids(data, "consent_event_ids"),
        footer_injected=footer,
        upstream_reply=_str(data, "upstream_reply"),
        relay_version=_str(data, "relay_version"),
        rules_digest=_str(data, "rules_digest"),
        received_at=_time(data, "received_at"),
        decided_at=_time(data, "decided_at"),
        controller=_str(data, "controller"),
    )


TRACKER_FIELDS = ("url", "element", "rule", "vendor", "purpose", "basis", "action", "policy_rule")


def make_tracker(values: Sequence[str], event_ids: tuple[str, ...]) -> TrackerRecord:
    if len(values) != len(TRACKER_FIELDS) or not all(isinstance(v, str) for v in values):
        raise ValueError("a tracker record with wrong fields")
    url, element, rule, vendor, purpose, basis, action, policy_rule = values
    return TrackerRecord(url, element, rule, vendor, purpose, basis, action, policy_rule, event_ids)


__all__ = [
    "TRACKER_FIELDS",
    "DecisionRecord",
    "TrackerRecord",
    "build_records",
    "canonical_json",
    "iso",
    "make_tracker",
    "record_from_json",
]
