"""Retention: the day-of-last-open entries and the consent proofs are kept for a limited time.

Stage: async edge (Redis), run by ``relay serve`` beside the audit trim (``service``).
Input: ``[retention]`` settings, the consent settings and ``now``. Output: what was deleted.

Why these limits (GDPR Article 5(1)(e), storage limitation: personal data are kept "no longer
than is necessary for the purposes for which [they] are processed"):

- Last-open day (``last_open_days``, default 396 days = 13 months after the last open). The
  exemption of section 3.2 covers only what is "strictly necessary to adjust the frequency or
  stop the sending of emails to so-called 'inactive' recipients", keeping "only the date (at
  the day ...) of the last known opening". An entry untouched for 13 months says nothing more
  about list cleaning than that the recipient is inactive, which the sender must have acted
  on by then; 13 months is also the CNIL's reference lifetime for trackers and the choices
  about them (deliberation 2020-092 on cookies and other trackers, which this recommendation
  builds on). ``relay inactive --days N`` therefore makes sense for N below this limit.
- Consent proofs (``consent_days``, default 1826 days = 5 years, counted from the end of the
  consent). Section 6 and Article 7(1) GDPR: the controller "must be able to demonstrate, at
  any time, that the users have given their consent", so a proof is kept for as long as the
  relay relies on it (a valid grant, a legacy notice without objection), and afterwards for
  the time a claim about that processing can still be brought: the five-year limitation period
  of French civil law (Code civil, article 2224). The audit trail's decision records cite the
  consent events they relied on, so this must be at least ``[audit] retention_days`` (the
  settings check it).

Rule 1: last-open entries whose day is more than ``last_open_days`` before today are removed
        (one ZREMRANGEBYSCORE); a new open writes the entry again.
Rule 2: a recipient's consent chain (events and state) is deleted whole, never an event alone
        (the hash chain would break): when no grant is valid any more, no legacy notice stands
        unopposed, and the latest of its events (occurred or recorded) and of the end of its
        last consent is more than ``consent_days`` ago. A grant ends when it is refused,
        withdrawn or expires (``[consent] lifetime_days``).
Rule 3: the deletion is a compare-and-set on the chain's head hash (one Lua script): an event
        appended between the check and the deletion keeps the chain.
Rule 4: the consent scan runs at most once a day across every relay sharing the Redis (a lock
        key), in batches, so that its memory stays bounded; 0 days turns a limit off.
Rule 5: import fingerprints (``consent:{<rkey>}:imported``) are kept: they hold no address, and
        they stop a re-import of an old file from bringing deleted proofs back.
Rule 6 (Redis Cluster): each deletion touches one recipient's keys (one hash slot); the
        last-open days are trimmed bucket by bucket.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from relay.model import EventType
from relay.settings import ConsentSettings, RetentionSettings
from relay.store.consent_proof import parse_time
from relay.store.consent_state import FIELD_HEAD, derive
from relay.store.link_store import day_number
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys

log = logging.getLogger("relay.store.retention")

SCAN_BATCH = 500
CONSENT_INTERVAL = timedelta(days=1)

# KEYS: events list, state hash. ARGV: the head hash the decision was made on.
DELETE_LUA = """
if (redis.call('HGET', KEYS[2], 'head') or '') ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""


@dataclass(frozen=True, slots=True)
class RetentionReport:
    last_open: int = 0
    consent_chains: int = 0
    consent_events: int = 0


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def relied_until(
    fields: Mapping[str, str], now: datetime, settings: ConsentSettings
) -> datetime | None:
    """When the relay last relied (or will stop relying) on this chain: ``now`` while a grant
    is valid or a legacy notice stands unopposed, else the end of its last consent; None when
    it never held one (module Rule 2)."""
    state = derive("", fields, now, settings)
    if state.informed_at is not None and not state.objected:
        return now
    ends = [p.at for p in state.purposes.values() if p.at is not None]
    if any(p.state is EventType.GRANTED for p in state.purposes.values()):
        return now
    return max(ends, default=None)


def _latest_event(records: Sequence[bytes | str]) -> datetime | None:
    latest: datetime | None = None
    for raw in records:
        record = json.loads(raw)
        for name in ("occurred_at", "recorded_at"):
            moment = parse_time(record[name], name)
            latest = moment if latest is None or moment > latest else latest
    return latest


class Retention:
    def __init__(
        self,
        client: AsyncRedis,
        keys: Keys,
        settings: RetentionSettings,
        consent: ConsentSettings,
    ) -> None:
        self.client = client
        self.keys = keys
        self.settings = settings
        self.consent = consent
        self._delete = client.register_script(DELETE_LUA)

    async def apply(self, now: datetime) -> RetentionReport:
        """Rule 1 every call; the consent scan when the daily lock is free (Rule 4)."""
        last_open = await self.trim_last_open(now)
        chains = events = 0
        if self.settings.consent_days:
            lock = self.keys.retention_lock()
            seconds = int(CONSENT_INTERVAL.total_seconds())
            if await self.client.set(lock, now.isoformat(), nx=True, ex=seconds):
                chains, events = await self.trim_consent(now)
        return RetentionReport(last_open, chains, events)

    async def trim_last_open(self, now: datetime) -> int:
        if not self.settings.last_open_days:
            return 0
        cutoff = day_number(now) - self.settings.last_open_days
        pipe = self.client.pipeline(transaction=False)  # one command per bucket (its own slot)
        for bucket in self.keys.last_open_buckets():
            pipe.zremrangebyscore(self.keys.last_open_bucket(bucket), "-inf", f"({cutoff}")
        return sum(int(n) for n in await pipe.execute())

    async def trim_consent(self, now: datetime) -> tuple[int, int]:
        """Delete the chains Rule 2 allows; (chains, events) deleted."""
        keep = timedelta(days=self.settings.consent_days)
        pattern = self.keys.consent_state_match()
        chains = events = 0
        batch: list[str] = []
        # On a cluster this scans every master; a chain missed while its slot migrates is
        # simply considered the next day.
        async for key in self.client.scan_iter(match=pattern, count=SCAN_BATCH):
            batch.append(self.keys.tag_of(_text(key)))
            if len(batch) >= SCAN_BATCH:
                done = await self._trim_batch(batch, now, keep)
                chains, events = chains + done[0], events + done[1]
                batch.clear()
        if batch:
            done = await self._trim_batch(batch, now, keep)
            chains, events = chains + done[0], events + done[1]
        return chains, events

    async def _trim_batch(
        self, rkeys: list[str], now: datetime, keep: timedelta
    ) -> tuple[int, int]:
        pipe = self.client.pipeline(transaction=False)
        for rkey in rkeys:
            pipe.hgetall(self.keys.consent_state(rkey))
        states = await pipe.execute()
        candidates: list[tuple[str, str]] = []
        for rkey, raw in zip(rkeys, states, strict=True):
            fields = {_text(k): _text(v) for k, v in raw.items()}
            try:
                until = relied_until(fields, now, self.consent)
            except (ValueError, KeyError) as exc:
                log.error("retention: consent state %s is damaged (%s): kept", rkey, exc)
                continue
            if until is None or until + keep < now:
                candidates.append((rkey, fields.get(FIELD_HEAD, "")))
        chains = events = 0
        for rkey, head in candidates:
            records = await self.client.lrange(self.keys.consent_events(rkey), 0, -1)
            try:
                latest = _latest_event(records)
            except (ValueError, KeyError, TypeError) as exc:
                log.error("retention: consent chain %s has a damaged record (%s): kept", rkey, exc)
                continue
            if latest is not None and latest + keep >= now:
                continue
            keys = [self.keys.consent_events(rkey), self.keys.consent_state(rkey)]
            if await self._delete(keys=keys, args=[head]):
                chains += 1
                events += len(records)
        return chains, events
