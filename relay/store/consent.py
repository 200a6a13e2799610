"""The consent store: append-only, hash-chained consent events per recipient, and their state.

Stage: async edge (Redis). The pipeline reads ``states()`` once per message; the web pages,
the JSON API, the pipeline (``requested``) and ``relay consent`` write with ``record()``.
Input: ``ConsentEvent`` values (validated here) and recipient addresses.
Output: stored events with id, recorded_at and hash chain; ``ConsentState`` per recipient.

Rule 1: ``states()`` never raises: a Redis error or a reply slower than the timeout gives
        ``ConsentState(available=False)`` for the recipients it hides, and the policy fails
        closed for them; one pipelined round trip per master reads the states of a message.
Rule 3: an append and its state update are one Lua script (``consent_state.RECORD_LUA``);
        the chain is a compare-and-set on the recipient's head hash, so concurrent writers for
        one recipient are serialised by retrying, never by interleaving.
Rule 4: recipients are keyed by ``recipient_key`` (keyed hash); the address is only inside the
        stored record. Every other failure of a write or read is a ``StoreUnavailable``.
Rule 5: every chain, state and import set belongs to one controller (``relay.core.
        controllers``): an event names its controller (or none when there is one), a read
        names the controller asked about, and nothing recorded for one controller is ever read
        for another. The controller owning the older consent keeps the keys it had.
Rule 6: a script touches one recipient's keys (one hash slot on a Redis Cluster); on a cluster
        or with Sentinel an append waits for a replica (``replicated``); one no replica
        confirmed is journalled (``writeback``) and replayed, skipped if its id is stored.
        ``record_or_journal`` (the relay's own events) journals what Redis cannot take.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

from redis.exceptions import RedisError

from relay.core.controllers import Controller, Controllers
from relay.core.recipients import mask, recipient_key
from relay.errors import StoreUnavailable
from relay.model import ConsentEvent, ConsentState
from relay.settings import ConsentSettings
from relay.store import replicated
from relay.store.consent_proof import (
    canonical,
    chain_record,
    event_from_record,
    format_time,
    new_event_id,
    proof_fields,
    validate_api_payload,
    validate_event,
)
from relay.store.consent_read import read_chains, recipient_keys
from relay.store.consent_state import FIELD_HEAD, RECORD_LUA, derive, script_args
from relay.store.consent_verify import ChainProblem, VerifyReport, check_chain
from relay.store.fanout import per_master, queue_script
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys
from relay.store.replicated import Durability
from relay.store.writeback import Entry, WriteBack
from relay.time_limits import time_limit

__all__ = ["ChainProblem", "ConsentStore", "RedisConsentStore", "VerifyReport"]
__all__ += ["validate_api_payload"]

log = logging.getLogger("relay.store.consent")

# Errors that mean "the store did not answer properly" rather than a bug of ours.
STORE_ERRORS = (RedisError, OSError, TimeoutError, asyncio.TimeoutError)
VERIFY_BATCH = 200  # recipients read per pipeline by verify()
MAX_CHAIN_RETRIES = 200  # concurrent writers for one recipient; each retry costs 2 round trips
REPLAY_PREFIX = b"id:"  # fingerprint of a journalled event: skip it when its id is stored


class ConsentStore(Protocol):
    async def record(self, event: ConsentEvent) -> ConsentEvent: ...

    async def record_or_journal(self, event: ConsentEvent) -> ConsentEvent: ...

    async def states(
        self, addresses: Sequence[str], now: datetime, controller: str | None = None
    ) -> dict[str, ConsentState]: ...

    async def history(self, address: str, controller: str | None = None) -> list[ConsentEvent]: ...

    async def verify(
        self, address: str | None = None, controller: str | None = None
    ) -> VerifyReport: ...


@dataclasses.dataclass(frozen=True, slots=True)
class Pending:
    """A validated event with its id and recorded_at set, ready to be chained."""

    rkey: str
    event: ConsentEvent
    fingerprint: bytes = b""
    scope: str = ""  # the controller's key scope (``Controller.scope``)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisConsentStore:
    def __init__(
        self,
        client: AsyncRedis,
        keys: Keys,
        address_key: bytes,
        settings: ConsentSettings,
        rules_digest: str = "",
        *,
        timeout: float = 2.0,
        controllers: Controllers | None = None,
        durability: Durability | None = None,
        writeback: WriteBack | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.address_key = address_key
        self.settings = settings
        self.rules_digest = rules_digest
        self.timeout = timeout
        self.controllers = controllers or Controllers()
        self.durability = durability or Durability.off()
        self.writeback = writeback

    def rkey(self, address: str) -> str:
        return recipient_key(address, self.address_key)

    def controller(self, controller_id: str | None) -> Controller:
        """The controller an event or a read names (ValueError names the choices)."""
        return self.controllers.resolve(controller_id)

    def prepare(
        self, event: ConsentEvent, now: datetime, fingerprint: bytes = b"", validated: bool = False
    ) -> Pending:
        """Validate an event and give it its controller, id, recorded_at and rules digest."""
        valid = event if validated else validate_event(event, now)
        owner = self.controller(valid.controller)
        valid = dataclasses.replace(
            valid,
            id=new_event_id(),
            recorded_at=now,
            rules_digest=valid.rules_digest or self.rules_digest,
            controller=owner.id,
        )
        return Pending(self.rkey(valid.address), valid, fingerprint, owner.scope)

    # -- writes ----------------------------------------------------------------------------

    async def record(self, event: ConsentEvent) -> ConsentEvent:
        pending = self.prepare(event, datetime.now(UTC))
        try:
            await self._append(pending)
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"consent store: cannot record the event: {exc}") from exc
        return pending.event

    async def record_or_journal(self, event: ConsentEvent) -> ConsentEvent:
        """``record``, or, when Redis cannot take the event, journal it for replay (Rule 6)."""
        pending = self.prepare(event, datetime.now(UTC))
        try:
            await self._append(pending)
        except Exception as exc:  # as in ledger: any client failure means "not stored"
            if self.writeback is None:
                raise StoreUnavailable(f"consent store: cannot record the event: {exc}") from exc
            log.warning("consent store unavailable (%s): event journalled", exc)
            await self._journal(pending.event)
        return pending.event

    async def _journal(self, event: ConsentEvent) -> None:
        assert self.writeback is not None
        record = proof_fields(event)
        record.update(id=event.id, recorded_at=format_time(event.recorded_at or datetime.now(UTC)))
        await self.writeback.add("consent", record=record)

    async def _append(self, item: Pending) -> bool:
        """Append one event, retrying while other writers move the chain; False if seen."""
        appended, confirmed = await self._append_confirmed(item)
        if appended and not confirmed:
            if self.writeback is None:
                log.warning("consent event %s: no replica confirmed it", item.event.id)
            else:
                await self._journal(item.event)
        return appended

    async def _append_confirmed(self, item: Pending) -> tuple[bool, bool]:
        """(appended, confirmed by a replica or no replica to wait for)."""
        head = await self.client.hget(self.keys.consent_state(item.rkey, item.scope), FIELD_HEAD)
        prev = _text(head) if head else ""
        for _attempt in range(MAX_CHAIN_RETRIES):
            command = replicated.script(
                RECORD_LUA, self._script_keys(item.rkey, item.scope), self._args(item, prev)
            )
            replies, confirmed = await replicated.execute(self.client, [command], self.durability)
            status, head = replies[0]
            if status == 1:
                return True, confirmed
            if status == 2:
                return False, True
            prev = _text(head)  # another writer appended first: chain onto its event
        raise StoreUnavailable(f"consent store: too many concurrent writes for {item.rkey}")

    async def replay_events(self, entries: Sequence[Entry]) -> list[bool]:
        """Handler of the write journal's ``consent`` entries (Rule 6)."""
        confirmed: list[bool] = []
        for entry in entries:
            event = event_from_record(entry["record"])
            marker = REPLAY_PREFIX + event.id.encode()
            try:
                scope = self.controller(event.controller or None).scope
                item = Pending(self.rkey(event.address), event, marker, scope)
                _appended, ok = await self._append_confirmed(item)
            except STORE_ERRORS as exc:
                raise StoreUnavailable(f"consent store: replay stopped: {exc}") from exc
            confirmed.append(ok)
        return confirmed

    def _script_keys(self, rkey: str, scope: str) -> list[str]:
        return [
            self.keys.consent_events(rkey, scope),
            self.keys.consent_state(rkey, scope),
            self.keys.consent_import_seen(rkey, scope),
        ]

    def _args(self, item: Pending, prev: str) -> list[Any]:
        record, digest = chain_record(item.event, prev)
        args = script_args(item.event, prev, canonical(record), digest)
        args[3] = item.fingerprint
        return args

    async def append_many(self, items: Sequence[Pending]) -> tuple[int, int]:
        """Append a batch in two pipelined round trips; (added, skipped as already imported).

        Round one reads which fingerprints are known and every recipient's chain head; the
        chain is then computed locally and round two runs one script per event. An event whose
        head moved meanwhile (a concurrent writer) is retried alone, in order.
        """
        try:
            return await self._append_many(items)
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"consent store: cannot write the batch: {exc}") from exc

    async def _append_many(self, items: Sequence[Pending]) -> tuple[int, int]:
        added = skipped = 0
        unique: list[Pending] = []
        local: set[bytes] = set()
        for item in items:
            if item.fingerprint and item.fingerprint in local:
                skipped += 1
                continue
            local.add(item.fingerprint)
            unique.append(item)
        if not unique:
            return added, skipped
        by_chain: dict[tuple[str, str], list[Pending]] = {}
        for item in unique:
            by_chain.setdefault((item.rkey, item.scope), []).append(item)
        pipe = self.client.pipeline(transaction=False)
        for (rkey, scope), group in by_chain.items():
            fingerprints = [i.fingerprint or b"-" for i in group]
            pipe.smismember(self.keys.consent_import_seen(rkey, scope), fingerprints)
            pipe.hget(self.keys.consent_state(rkey, scope), FIELD_HEAD)
        first = await pipe.execute()
        heads: dict[tuple[str, str], str] = {}
        seen: dict[int, bool] = {}
        for index, (chain, group) in enumerate(by_chain.items()):
            known_flags, head = first[2 * index], first[2 * index + 1]
            heads[chain] = _text(head) if head else ""
            seen.update((id(i), bool(k)) for i, k in zip(group, known_flags, strict=True))
        pipe = self.client.pipeline(transaction=False)
        chained: list[tuple[Pending, str]] = []
        for item in unique:
            known = seen[id(item)]
            if known and item.fingerprint:
                skipped += 1
                continue
            chain = (item.rkey, item.scope)
            prev = heads[chain]
            args = self._args(item, prev)
            heads[chain] = str(args[2])  # this event's hash is the next one's prev
            chained.append((item, prev))
            queue_script(pipe, RECORD_LUA, self._script_keys(item.rkey, item.scope), args)
        results = await pipe.execute() if chained else []
        for (item, _prev), (status, _head) in zip(chained, results, strict=True):
            # Status 0: the head moved under us (a concurrent writer): retry alone, in order.
            done = status == 1 or (status == 0 and await self._append(item))
            added += done
            skipped += not done
        return added, skipped

    # -- reads -----------------------------------------------------------------------------

    async def states(
        self, addresses: Sequence[str], now: datetime, controller: str | None = None
    ) -> dict[str, ConsentState]:
        """Each address's state for one controller (``None``: the only one). A controller that
        is not configured raises ``ValueError``: the caller names the wrong id."""
        owner = self.controller(controller)
        rkeys = {address: self.rkey(address) for address in addresses}
        keys = [self.keys.consent_state(rkey, owner.scope) for rkey in rkeys.values()]
        try:
            with time_limit(self.timeout):
                replies = await per_master(self.client, keys, lambda pipe, key: pipe.hgetall(key))
        except Exception as exc:  # Rule 1: fail closed whatever went wrong
            replies = [exc] * len(keys)
        out: dict[str, ConsentState] = {}
        failed = [r for r in replies if isinstance(r, BaseException)]
        if failed:
            reason = failed[0]
            log.warning(
                "consent store unavailable for %d of %d recipient(s), failing closed: %s",
                len(failed), len(replies), reason or type(reason).__name__,
            )  # fmt: skip
        for (address, rkey), raw in zip(rkeys.items(), replies, strict=True):
            if isinstance(raw, BaseException):
                out[address] = ConsentState(rkey, available=False, controller=owner.id)
                continue
            fields = {_text(k): _text(v) for k, v in raw.items()}
            try:
                state = derive(rkey, fields, now, self.settings)
                out[address] = dataclasses.replace(state, controller=owner.id)
            except (ValueError, KeyError) as exc:
                log.error("consent state of %s is damaged (%s): failing closed", mask(address), exc)
                out[address] = ConsentState(rkey, available=False, controller=owner.id)
        return out

    async def raw_records(
        self, rkey: str, controller: str | None = None
    ) -> tuple[list[bytes], dict[str, str]]:
        """The stored JSON records of one recipient (append order) and its state hash."""
        return (await self._raw_many([rkey], self.controller(controller).scope))[0]

    async def _raw_many(
        self, rkeys: Sequence[str], scope: str
    ) -> list[tuple[list[bytes], dict[str, str]]]:
        try:
            return await read_chains(self.client, self.keys, rkeys, scope)  # consent_read Rule 1
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"consent store: cannot read the records: {exc}") from exc

    async def history(self, address: str, controller: str | None = None) -> list[ConsentEvent]:
        """The recipient's events in the order recorded (ValueError names a damaged record).
        An event recorded before controllers existed is given the controller that holds it."""
        rkey = self.rkey(address)
        owner = self.controller(controller)
        records, _state = await self.raw_records(rkey, owner.id)
        events: list[ConsentEvent] = []
        for index, raw in enumerate(records):
            try:
                event = event_from_record(json.loads(raw))
                events.append(event if event.controller else _owned(event, owner.id))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise ValueError(
                    f"recipient {rkey}: record #{index} is damaged ({exc}): "
                    "run relay consent verify"
                ) from None
        return events

    async def verify(
        self, address: str | None = None, controller: str | None = None
    ) -> VerifyReport:
        """Check the chains of one controller (or, without one, of every controller)."""
        owners = (
            [self.controller(controller)] if controller else list(self.controllers.by_id.values())
        )
        recipients = events = 0
        problems: list[ChainProblem] = []
        for owner in owners:
            if address is not None:
                rkeys: list[str] = [self.rkey(address)]
            else:
                rkeys = sorted(await self._all_rkeys(owner.scope))
            for start in range(0, len(rkeys), VERIFY_BATCH):
                batch = rkeys[start : start + VERIFY_BATCH]
                chains = await self._raw_many(batch, owner.scope)
                for rkey, (records, state) in zip(batch, chains, strict=True):
                    if address is not None and not records and not state and len(owners) > 1:
                        continue  # this recipient has nothing with that controller
                    one = check_chain(rkey, records, state, self.address_key, owner.id)
                    recipients += one.recipients
                    events += one.events
                    problems.extend(one.problems)
        return VerifyReport(recipients, events, tuple(problems))

    async def _all_rkeys(self, scope: str) -> set[str]:
        try:
            return await recipient_keys(self.client, self.keys, scope)
        except STORE_ERRORS as exc:
            raise StoreUnavailable(f"consent store: cannot list recipients: {exc}") from exc


def _owned(event: ConsentEvent, controller: str) -> ConsentEvent:
    return dataclasses.replace(event, controller=controller)
