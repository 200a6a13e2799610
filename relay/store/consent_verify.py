"""Hash-chain verification of consent records (``relay consent verify``).

Stage: pure check used by the consent store.
Input: a recipient key, its stored records (raw JSON, in append order) and its cached state.
Output: the problems found, each naming the recipient key, the event and what is wrong.

Rule 1: every record's hash must match its content, its ``prev`` the hash of the record
        before it, and the state's ``head`` and ``count`` the last record and the list length:
        together these find an edited, inserted, reordered or deleted record (last one included).
Rule 2: the cached state must equal the state replayed from the records, so that an edit of
        the cache alone (which would change decisions without touching the proof) is found too.
Rule 3: a record must belong to the recipient whose list holds it (its address hashes to the
        list's key) and to the controller whose keys hold it (a record written before
        controllers existed names none, and belongs to the one holding it).
Limit: the chain proves integrity against edits made without re-hashing; someone able to
rewrite a whole chain and its state can forge it. Export heads elsewhere to anchor them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.core.recipients import recipient_key
from relay.model import ConsentEvent
from relay.store.consent_proof import event_from_record, record_hash
from relay.store.consent_state import FIELD_COUNT, FIELD_HEAD, replay


@dataclass(frozen=True, slots=True)
class ChainProblem:
    recipient_key: str
    index: int  # position of the record in the recipient's list, -1 for the state itself
    event_id: str
    reason: str

    def __str__(self) -> str:
        where = f"event {self.event_id or '?'} (#{self.index})" if self.index >= 0 else "state"
        return f"recipient {self.recipient_key}: {where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class VerifyReport:
    recipients: int = 0
    events: int = 0
    problems: tuple[ChainProblem, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return not self.problems


def _record(raw: str | bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def check_chain(
    rkey: str,
    raw_records: Sequence[str | bytes],
    state: Mapping[str, str],
    address_key: bytes,
    controller: str = "",
) -> VerifyReport:
    problems: list[ChainProblem] = []
    prev = ""
    events: list[ConsentEvent] = []
    for index, raw in enumerate(raw_records):
        record = _record(raw)
        if record is None:
            problems.append(ChainProblem(rkey, index, "", "not a JSON record"))
            return VerifyReport(1, len(raw_records), tuple(problems))
        eid = str(record.get("id", ""))
        stored_hash = record.get("hash")
        if stored_hash != record_hash(record):
            problems.append(ChainProblem(rkey, index, eid, "altered: hash does not match content"))
        if record.get("prev") != prev:
            problems.append(
                ChainProblem(rkey, index, eid, "chain broken: an event before it was removed, "
                             "inserted or reordered (prev does not match)")
            )  # fmt: skip
        address = record.get("address")
        if not isinstance(address, str) or recipient_key(address, address_key) != rkey:
            problems.append(ChainProblem(rkey, index, eid, "belongs to another recipient"))
        named = record.get("controller", "")
        if controller and named and named != controller:
            problems.append(
                ChainProblem(
                    rkey, index, eid, f"belongs to controller {named!r}, not {controller!r}"
                )
            )
        try:
            events.append(event_from_record(record))
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            problems.append(ChainProblem(rkey, index, eid, f"unreadable field: {exc}"))
        prev = str(stored_hash)
    problems.extend(_check_state(rkey, prev, len(raw_records), events, state))
    return VerifyReport(1, len(raw_records), tuple(problems))


def _check_state(
    rkey: str, last: str, count: int, events: Sequence[ConsentEvent], state: Mapping[str, str]
) -> list[ChainProblem]:
    problems: list[ChainProblem] = []
    if state.get(FIELD_HEAD, "") != last:
        problems.append(
            ChainProblem(rkey, -1, "", "chain head differs from the last event: "
                         "events were removed at the end or written outside the store")
        )  # fmt: skip
    if state.get(FIELD_COUNT, "0" if not count else "") != str(count):
        problems.append(
            ChainProblem(rkey, -1, "", f"state counts {state.get(FIELD_COUNT)} events, "
                         f"the list holds {count}")
        )  # fmt: skip
    cached = {k: v for k, v in state.items() if k not in (FIELD_HEAD, FIELD_COUNT)}
    expected = replay(events)
    for name in sorted(set(cached) | set(expected)):
        if cached.get(name) != expected.get(name):
            problems.append(
                ChainProblem(rkey, -1, "", f"cached state field {name!r} differs from the events")
            )
    return problems
