"""Consent proofs: validation of incoming events, their canonical JSON and the hash chain.

Stage: pure helpers of the consent store (no I/O, no Redis).
Input: a ``ConsentEvent`` from the pipeline, the web pages, the CLI, an import row or an app's
JSON payload. Output: a validated event, its stored JSON record and that record's SHA-256 hash.

Rule 1: an event is refused with a ``ValueError`` whose message names the bad field; nothing
        half-valid is ever stored. Vocabularies (event, purpose, actor, method) are closed sets.
Rule 2: times are stored in UTC with a fixed width (``2026-04-14T09:30:00.000000Z``), so that
        the store's Lua script can order them by comparing strings.
Rule 3: the record's hash is SHA-256 over its canonical JSON (sorted keys, no spaces, UTF-8),
        which includes ``prev``, the hash of the recipient's previous record: changing,
        inserting or deleting a record breaks the chain from that point on.
Rule 4: the address appears only inside the record (for auditors), never in a Redis key.
Rule 5: every record names its ``controller`` (an id); records written before controllers
        existed have none and belong to the controller whose keys hold them.
Rule 6: proof before reliance. A ``granted`` event (the relay tracks on it) or an ``informed``
        event (the legacy regime tracks on it) must carry the conditions the recommendation
        asks the controller to prove (section 6: "a record of each person's consent, as well
        as the conditions under which that consent was obtained"; Article 7.1 GDPR): how it
        was given (``method``), where (``source``: form, page, message, beyond the import's
        own bookkeeping) and which information was shown (``notice.version``). ``check_proof``
        names every missing field at once; each input path (CLI, API, CSV import, the pages)
        calls it with its own names for the fields, and a default an input path fills in on
        its own is not proof (the CLI's ``admin``, the API's ``api``, the import's ``import``).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import uuid
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from relay.core.recipients import normalise
from relay.model import ConsentEvent, EventType, Purpose

ACTORS = ("recipient", "import", "admin", "system", "api")
METHODS = ("checkbox", "button", "link_confirmation", "import", "api", "relay", "admin")
NOTICE_FIELDS = ("id", "version", "language", "hash")

# Events that change one purpose's decisive state; they must name at least one purpose.
DECISIVE = frozenset({EventType.GRANTED, EventType.REFUSED, EventType.WITHDRAWN, EventType.EXPIRED})
NEEDS_PURPOSE = DECISIVE | {EventType.REQUESTED}

# Clocks of apps and relays drift a little; an event further in the future is a bad input.
FUTURE_SKEW = timedelta(minutes=10)

_FIELD_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_CONTROLLER_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
# Tabs and line breaks may be part of a wording shown; other control characters are garbage.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
MAX_VALUE = 2000
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
TIME_WIDTH = 27  # len("2026-04-14T09:30:00.000000Z")


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(TIME_FORMAT)


def parse_time(text: str, field: str = "occurred_at") -> datetime:
    """ISO-8601 with an explicit offset (``Z`` accepted) -> aware UTC datetime."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{field}: not an ISO-8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"{field}: needs a time zone (e.g. 2026-04-14T09:30:00Z), got {text!r}")
    return moment.astimezone(UTC)


def _check_address(address: str) -> str:
    clean = normalise(address)
    local, at, domain = clean.rpartition("@")
    if not at or not local or "." not in domain or len(clean) > 320 or re.search(r"\s", clean):
        raise ValueError(f"address: not an email address: {address!r}")
    return clean


def _check_mapping(name: str, value: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, text in value.items():
        if not isinstance(key, str) or not _FIELD_NAME.match(key):
            raise ValueError(f"{name}: bad key {key!r} (lower-case letters, digits, _)")
        if not isinstance(text, str):
            raise ValueError(f"{name}.{key}: must be a string, not {type(text).__name__}")
        if len(text) > MAX_VALUE:
            raise ValueError(f"{name}.{key}: longer than {MAX_VALUE} characters")
        if _CONTROL.search(text):
            raise ValueError(f"{name}.{key}: contains a control character")
        if text:
            out[key] = text
    return out


def validate_event(event: ConsentEvent, now: datetime) -> ConsentEvent:
    """Check every field; return the event with a normalised address, UTC time, typed enums."""
    try:
        kind = EventType(event.event)
    except ValueError:
        known = ", ".join(e.value for e in EventType)
        raise ValueError(f"event: unknown event {event.event!r} (known: {known})") from None
    purposes: list[Purpose] = []
    for index, purpose in enumerate(event.purposes):
        try:
            typed = Purpose(purpose)
        except ValueError:
            known = ", ".join(p.value for p in Purpose)
            raise ValueError(
                f"purposes[{index}]: unknown purpose {purpose!r} (known: {known})"
            ) from None
        if typed not in purposes:
            purposes.append(typed)
    if kind in NEEDS_PURPOSE and not purposes:
        raise ValueError(f"purposes: a {kind.value!r} event needs at least one purpose")
    occurred = event.occurred_at
    if not isinstance(occurred, datetime) or occurred.tzinfo is None:
        raise ValueError("occurred_at: must be a time-zone-aware datetime (UTC)")
    occurred = occurred.astimezone(UTC)
    if occurred > now + FUTURE_SKEW:
        raise ValueError(f"occurred_at: {format_time(occurred)} is in the future")
    if event.actor not in ACTORS:
        raise ValueError(f"actor: {event.actor!r} is not one of {', '.join(ACTORS)}")
    if event.method not in METHODS:
        raise ValueError(f"method: {event.method!r} is not one of {', '.join(METHODS)}")
    notice = _check_mapping("notice", event.notice)
    for key in notice:
        if key not in NOTICE_FIELDS:
            raise ValueError(f"notice: unknown key {key!r} (known: {', '.join(NOTICE_FIELDS)})")
    evidence = _check_mapping("evidence", event.evidence)
    if "ip" in evidence:
        try:
            ipaddress.ip_address(evidence["ip"])
        except ValueError:
            raise ValueError(f"evidence.ip: not an IP address: {evidence['ip']!r}") from None
    return ConsentEvent(
        event=kind,
        purposes=tuple(purposes),
        address=_check_address(event.address),
        occurred_at=occurred,
        actor=event.actor,
        method=event.method,
        source=_check_mapping("source", event.source),
        notice=notice,
        evidence=evidence,
        rules_digest=event.rules_digest,
        recorded_at=event.recorded_at,
        id=event.id,
        controller=_controller_id(event.controller),
    )


def _controller_id(value: str) -> str:
    if value and not (isinstance(value, str) and _CONTROLLER_ID.match(value)):
        raise ValueError(f"controller: not a controller id: {value!r}")
    return value


# Events the relay relies on to track: they must prove their conditions (Rule 6).
PROOF_EVENTS = frozenset({EventType.GRANTED, EventType.INFORMED})
PROOF_FIELDS = ("method", "source", "notice.version")
# Source fields an input path writes itself: they say where the record came from, not where
# the recipient consented.
BOOKKEEPING_SOURCE = frozenset({"import_file", "import_line"})


def missing_proof(event: ConsentEvent, *, defaulted: Collection[str] = ()) -> list[str]:
    """The ``PROOF_FIELDS`` a ``granted``/``informed`` event lacks (Rule 6). ``defaulted``:
    the fields the input path filled in itself, which prove nothing."""
    if event.event not in PROOF_EVENTS:
        return []
    given = {
        "method": bool(event.method),
        "source": any(v.strip() for k, v in event.source.items() if k not in BOOKKEEPING_SOURCE),
        "notice.version": bool(event.notice.get("version", "").strip()),
    }
    return [f for f in PROOF_FIELDS if not given[f] or f in defaulted]


def check_proof(
    event: ConsentEvent,
    *,
    defaulted: Collection[str] = (),
    names: Mapping[str, str] | None = None,
) -> None:
    """Raise ``ValueError`` naming every missing proof field (Rule 6), in the input's words
    (``names`` maps ``PROOF_FIELDS`` to the input's own names, e.g. ``--notice-version``)."""
    missing = missing_proof(event, defaulted=defaulted)
    if not missing:
        return
    shown = [(names or {}).get(field, field) for field in missing]
    kind = EventType(event.event).value
    article = "an" if kind[0] in "aeiou" else "a"
    raise ValueError(
        f"{shown[0]}: missing: {article} {kind!r} event needs proof of the "
        f"conditions of consent (recommendation section 6): give {', '.join(shown)}"
    )


def new_event_id() -> str:
    return uuid.uuid4().hex


def canonical(data: Mapping[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def proof_fields(event: ConsentEvent) -> dict[str, Any]:
    """What an event says, without store bookkeeping (id, recorded_at, chain)."""
    return {
        "event": event.event.value,
        "purposes": [p.value for p in event.purposes],
        "address": event.address,
        "occurred_at": format_time(event.occurred_at),
        "actor": event.actor,
        "method": event.method,
        "source": dict(event.source),
        "notice": {k: event.notice.get(k, "") for k in NOTICE_FIELDS},
        "evidence": {
            "ip": event.evidence.get("ip", ""),
            "user_agent": event.evidence.get("user_agent", ""),
            "token_id": event.evidence.get("token_id", ""),
            **event.evidence,
        },
        "rules_digest": event.rules_digest,
        "controller": event.controller,
    }


def fingerprint(event: ConsentEvent, ignore_source: tuple[str, ...] = ()) -> bytes:
    """16 bytes identifying what an event says (for idempotent imports).

    The controller is left out: each controller has its own set of imported fingerprints, so
    fingerprints of rows imported before controllers existed still match.
    """
    fields = proof_fields(event)
    fields.pop("controller")
    fields["source"] = {k: v for k, v in fields["source"].items() if k not in ignore_source}
    return hashlib.blake2b(canonical(fields), digest_size=16).digest()


def chain_record(event: ConsentEvent, prev: str) -> tuple[dict[str, Any], str]:
    """The stored record of a validated event (id and recorded_at set) and its hash."""
    assert event.recorded_at is not None and event.id, "the store sets id and recorded_at"
    record = proof_fields(event)
    record["id"] = event.id
    record["recorded_at"] = format_time(event.recorded_at)
    record["prev"] = prev
    digest = hashlib.sha256(canonical(record)).hexdigest()
    record["hash"] = digest
    return record, digest


def record_hash(record: Mapping[str, Any]) -> str:
    """Recompute a stored record's hash (everything but the ``hash`` field itself)."""
    return hashlib.sha256(canonical({k: v for k, v in record.items() if k != "hash"})).hexdigest()


def event_from_record(record: Mapping[str, Any]) -> ConsentEvent:
    """A stored record -> ``ConsentEvent`` (raises ValueError/KeyError on a damaged record)."""
    evidence = {k: v for k, v in record["evidence"].items() if v}
    notice = {k: v for k, v in record["notice"].items() if v}
    return ConsentEvent(
        event=EventType(record["event"]),
        purposes=tuple(Purpose(p) for p in record["purposes"]),
        address=record["address"],
        occurred_at=parse_time(record["occurred_at"]),
        actor=record["actor"],
        method=record["method"],
        source=dict(record["source"]),
        notice=notice,
        evidence=evidence,
        rules_digest=record["rules_digest"],
        recorded_at=parse_time(record["recorded_at"], "recorded_at"),
        id=record["id"],
        controller=str(record.get("controller", "")),
    )


# ---------------------------------------------------------------------------------------------
# The authenticated JSON API apps use to record consent collected in their own forms.

_API_FIELDS = frozenset(
    {"address", "event", "purposes", "occurred_at", "actor", "method", "source", "notice",
     "evidence", "rules_digest", "controller"}
)  # fmt: skip
_API_ACTORS = ("recipient", "api")


def _str_field(payload: Mapping[str, object], name: str, default: str | None = None) -> str:
    value = payload.get(name, default)
    if value is None:
        raise ValueError(f"{name}: missing")
    if not isinstance(value, str):
        raise ValueError(f"{name}: must be a string, not {type(value).__name__}")
    return value


def _map_field(payload: Mapping[str, object], name: str) -> dict[str, str]:
    value = payload.get(name, {})
    if not isinstance(value, dict):
        raise ValueError(f"{name}: must be an object of strings")
    for key, text in value.items():
        if not isinstance(text, str):
            raise ValueError(f"{name}.{key}: must be a string, not {type(text).__name__}")
    return {str(k): v for k, v in value.items()}


def validate_api_payload(payload: object, now: datetime) -> ConsentEvent:
    """An app's JSON body -> a validated ``ConsentEvent``; ValueError names the bad field.

    Body: ``{"address", "event", "purposes": [...], "occurred_at"?: ISO-8601 with offset
    (default now), "actor"?: "recipient"|"api" (default "api"), "method"?: (default "api"),
    "source"?: {...}, "notice"?: {"id", "version", "language", "hash"}, "evidence"?: {"ip",
    "user_agent", "token_id"}, "controller"?: id (may be left out when there is one)}``.
    Unknown fields are refused, so that a typo is not lost proof.
    A ``granted`` or ``informed`` event must give ``method``, ``source`` and
    ``notice.version`` (module Rule 6).
    """
    if not isinstance(payload, dict):
        raise ValueError("body: must be a JSON object")
    unknown = sorted(str(k) for k in payload if k not in _API_FIELDS)
    if unknown:
        raise ValueError(f"{unknown[0]}: unknown field (known: {', '.join(sorted(_API_FIELDS))})")
    purposes = payload.get("purposes", [])
    if not isinstance(purposes, list) or not all(isinstance(p, str) for p in purposes):
        raise ValueError("purposes: must be a list of purpose ids")
    actor = _str_field(payload, "actor", "api")
    if actor not in _API_ACTORS:
        raise ValueError(f"actor: must be one of {', '.join(_API_ACTORS)}, not {actor!r}")
    occurred_text = payload.get("occurred_at")
    if occurred_text is None:
        occurred = now
    elif isinstance(occurred_text, str):
        occurred = parse_time(occurred_text)
    else:
        raise ValueError("occurred_at: must be an ISO-8601 string")
    event = ConsentEvent(
        event=_str_field(payload, "event"),  # type: ignore[arg-type]  # checked just below
        purposes=tuple(purposes),  # each checked by validate_event
        address=_str_field(payload, "address"),
        occurred_at=occurred,
        actor=actor,
        method=_str_field(payload, "method", "api"),
        source=_map_field(payload, "source"),
        notice=_map_field(payload, "notice"),
        evidence=_map_field(payload, "evidence"),
        rules_digest=_str_field(payload, "rules_digest", ""),
        controller=_str_field(payload, "controller", ""),
    )
    valid = validate_event(event, now)
    check_proof(valid, defaulted=() if "method" in payload else ("method",))
    return valid
