"""The conductor: one received message -> consent lookup, pure core, upstream groups, audit, reply.

Order of work for one message (only this module knows it):

1. read the delivery ledger and the consent state of every recipient (one Redis round trip
   each, concurrently);
2. run the pure core (``filtering.filter_message``) in the event loop for small messages,
   in a worker process for large ones, so that one big message never stalls other sessions;
3. refuse a consent request to a recipient inside the re-ask window (5xx saying until when);
4. store the gateway links and the recipients' addresses the web pages need;
5. send every group not already delivered to the upstream, concurrently;
6. record final upstream answers in the ledger, then the decision records in the audit log,
   and only then answer the client.

Rule 1: the client gets 250 only when every recipient was accepted upstream (now or by an
        earlier attempt recorded in the ledger); a deferral anywhere gives a 4xx.
Rule 2: a recipient the upstream refused for good, while others were accepted, is reported
        to the envelope sender by a delivery status notification and the message is accepted.
Rule 3: steps 5 and 6 run shielded from the client's connection: a client that disconnects
        or times out mid-way cannot leave a delivered group out of the ledger.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay import replies
from relay.core.filtering import FilterContext, FilterResult, filter_message
from relay.core.recipients import mask
from relay.model import (
    Category,
    ConsentState,
    Envelope,
    RecipientPlan,
    RenderedGroup,
)
from relay.ops import metrics
from relay.outbound.dsn import failure_notice
from relay.outbound.forward import GroupOutcome, Upstream
from relay.replies import Reply
from relay.settings import Settings
from relay.store.audit import AuditLog
from relay.store.consent import ConsentStore
from relay.store.ledger import IN_FLIGHT, Ledger, message_key, rcpt_key
from relay.store.link_store import remember_recipients, store_gateway_links
from relay.store.redis_keys import Keys
from relay.summary import count_decisions, requested_events, summarise

log = logging.getLogger("relay.pipeline")


_worker_context: FilterContext | None = None


def _init_worker(settings: Settings) -> None:
    """Process-pool initializer: each worker loads the rules itself (nothing pickled per call)."""
    global _worker_context
    from relay.context import build_context

    _worker_context = build_context(settings)


def _filter_in_worker(
    raw: bytes,
    envelope: Envelope,
    states: Mapping[str, ConsentState],
    now: datetime,
    skip: frozenset[str],
    budget: int,
) -> FilterResult:
    assert _worker_context is not None, "worker not initialised"
    return filter_message(_worker_context, raw, envelope, states, now, skip=skip, budget=budget)


@dataclass
class Outcome:
    """What happened to one message, for the reply, the audit log and the tests."""

    reply: Reply
    result: FilterResult | None
    upstream: dict[str, str]  # rcpt -> upstream reply text (or ledger entry)
    settled_key: str | None = None  # ledger key to forget once the client saw the 250


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        context: FilterContext,
        *,
        redis: Redis,
        keys: Keys,
        store: ConsentStore,
        audit: AuditLog,
        ledger: Ledger,
        upstream: Upstream,
    ) -> None:
        self.settings = settings
        self.context = context
        self.redis = redis
        self.keys = keys
        self.store = store
        self.audit = audit
        self.ledger = ledger
        self.upstream = upstream
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._deliveries: set[asyncio.Task[Outcome]] = set()
        if settings.smtp.process_pool > 0:
            self._pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        import multiprocessing

        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.settings.smtp.process_pool,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.settings,),
        )

    def reload(self, context: FilterContext) -> None:
        """Swap in validated rules: new messages use them, messages in flight finish as begun."""
        self.context = context
        if self._pool is not None:
            old, self._pool = self._pool, self._new_pool()
            old.shutdown(wait=False)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        await self.upstream.close()

    async def _filter(
        self,
        raw: bytes,
        envelope: Envelope,
        states: Mapping[str, ConsentState],
        now: datetime,
        skip: frozenset[str] = frozenset(),
    ) -> FilterResult:
        budget = self.settings.smtp.max_render_bytes
        if self._pool is None or len(raw) <= self.settings.smtp.inline_max_bytes:
            return filter_message(
                self.context, raw, envelope, states, now, skip=skip, budget=budget
            )
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool, _filter_in_worker, raw, envelope, states, now, skip, budget
            )
        except concurrent.futures.process.BrokenProcessPool:
            # A worker died (killed, out of memory): nothing was sent yet, so rebuild the pool
            # and filter this message here rather than fail it.
            log.error("filter worker died; restarting the pool")
            self._pool = self._new_pool()
            return filter_message(
                self.context, raw, envelope, states, now, skip=skip, budget=budget
            )

    async def process(self, raw: bytes, envelope: Envelope, relay_id: str) -> Outcome:
        outcome = await self._process(raw, envelope, relay_id)
        code = outcome.reply.code
        result = "accepted" if code < 300 else "deferred" if code < 500 else "refused"
        metrics.MESSAGES.labels(result).inc()
        return outcome

    async def _process(self, raw: bytes, envelope: Envelope, relay_id: str) -> Outcome:
        received = datetime.now(UTC)
        key = message_key(envelope.mail_from, raw)
        done, states = await asyncio.gather(
            self.ledger.done(key), self.store.states(envelope.rcpt_tos, received)
        )
        unavailable = sum(not s.available for s in states.values())
        metrics.CONSENT_LOOKUPS.labels("unavailable").inc(unavailable)
        metrics.CONSENT_LOOKUPS.labels("ok").inc(len(states) - unavailable)
        if self.settings.smtp.redis_down == "tempfail" and unavailable:
            return Outcome(replies.TEMP_REDIS, None, {})
        earlier = frozenset(r for r in envelope.rcpt_tos if rcpt_key(r) in done)
        with metrics.PROCESSING.time():
            result = await self._filter(raw, envelope, states, received, earlier)
        if result.category is Category.CONSENT_REQUEST and unavailable:
            # The re-ask window cannot be checked: asking again could harass a recipient who
            # refused, and refusing for good would punish a Redis outage. Retry later.
            return Outcome(replies.TEMP_REDIS, result, {})
        if result.reask_blocked:
            until = max(result.reask_blocked.values()).date().isoformat()
            detail = f"{len(result.reask_blocked)} recipient(s) may not be asked before {until}"
            return Outcome(replies.REASK_REFUSED.with_detail(detail), result, {})
        # The renderings are owned by ``batch``, which the sender empties as it goes
        # (filtering Rule 5: the memory of one message stays bounded).
        batch = list(result.groups)
        result = dataclasses.replace(result, groups=())
        # Steps 4-6 must complete even if the client goes away (Rule 3).
        task = asyncio.ensure_future(
            self._deliver(raw, envelope, relay_id, key, done, result, batch, received, states)
        )
        self._deliveries.add(task)
        metrics.IN_FLIGHT.inc()
        task.add_done_callback(self._delivery_done)
        return await asyncio.shield(task)

    def _delivery_done(self, task: asyncio.Task[Outcome]) -> None:
        self._deliveries.discard(task)
        metrics.IN_FLIGHT.dec()

    async def drain(self, timeout: float) -> None:
        """Wait for deliveries whose clients went away (shutdown calls this)."""
        if self._deliveries:
            await asyncio.wait(list(self._deliveries), timeout=timeout)

    async def _deliver(
        self,
        raw: bytes,
        envelope: Envelope,
        relay_id: str,
        key: str,
        done: Mapping[str, str],
        result: FilterResult,
        batch: list[RenderedGroup],
        received: datetime,
        states: Mapping[str, ConsentState],
    ) -> Outcome:
        assumed = [r for r in envelope.rcpt_tos if done.get(rcpt_key(r)) == IN_FLIGHT]
        if assumed:
            log.warning(
                "[%s] %d recipient(s) were in flight when the relay last stopped: counted as"
                " delivered, not sent again (RFC 1047 window)",
                relay_id,
                len(assumed),
            )
        started = time.perf_counter()
        outcomes = await self._send_batches(
            raw, envelope, key, done, result, batch, received, states
        )
        elapsed = (time.perf_counter() - started) * 1000
        metrics.UPSTREAM.observe(elapsed / 1000)
        count_decisions(result, outcomes)
        upstream: dict[str, str] = {}
        final: dict[str, str] = {}
        for outcome in outcomes:
            for rcpt, reply in outcome.replies.items():
                upstream[rcpt] = reply.text
                if reply.accepted or reply.permanent:
                    final[rcpt] = reply.text
        settled = all(r in final or rcpt_key(r) in done for r in envelope.rcpt_tos)
        for rcpt in envelope.rcpt_tos:
            if rcpt not in upstream and rcpt_key(rcpt) in done:
                upstream[rcpt] = f"(delivered earlier) {done[rcpt_key(rcpt)]}"
        deferred = [r for o in outcomes for r in o.deferred()]
        # Both must be written before the client is answered; neither waits for the other.
        await asyncio.gather(
            self.ledger.record(key, final, settled=settled, cleared=deferred),
            self._after_delivery(envelope, result, upstream, relay_id, received),
        )
        answer = summarise(envelope.rcpt_tos, outcomes, {rcpt_key(r) for r in done}, rcpt_key)
        refused_now = [r for o in outcomes for r in o.refused()]
        if refused_now and answer.code == 250:
            await self._bounce(raw, envelope, result, refused_now, upstream, relay_id)
        log.info(
            "[%s] %d recipient(s), %d group(s), category=%s, upstream %.1f ms -> %s",
            relay_id,
            len(envelope.rcpt_tos),
            len(outcomes),
            result.category,
            elapsed,
            answer.id,
        )
        settled_key = key if settled and answer.code == 250 else None
        return Outcome(answer, result, upstream, settled_key)

    async def _send_batches(
        self,
        raw: bytes,
        envelope: Envelope,
        key: str,
        done: Mapping[str, str],
        result: FilterResult,
        batch: list[RenderedGroup],
        received: datetime,
        states: Mapping[str, ConsentState],
    ) -> list[GroupOutcome]:
        """Send the rendered groups; while groups are left unrendered (the per-message render
        budget, filtering Rule 5) and nothing was deferred, render and send the next batch.
        Each rendering is dropped once sent: only one batch is ever held."""
        outcomes: list[GroupOutcome] = []
        unrendered = result.unrendered
        while True:
            await self._store_links(batch, result.plans)
            sends = []
            for group in batch:
                todo = [r for r in group.rcpts if rcpt_key(r) not in done]
                if todo:
                    sends.append(self._send(envelope, todo, group.data, key))
            batch.clear()
            outcomes += await asyncio.gather(*sends)
            sends.clear()
            if not unrendered or any(o.deferred() for o in outcomes):
                return outcomes  # recipients left unanswered are deferred: the client retries
            answered = {r for o in outcomes for r in o.replies}
            skip = frozenset(r for r in envelope.rcpt_tos if r in answered or rcpt_key(r) in done)
            following = await self._filter(raw, envelope, states, received, skip)
            batch.extend(following.groups)
            unrendered = following.unrendered
            del following

    async def _send(
        self, envelope: Envelope, rcpts: Sequence[str], data: bytes, key: str
    ) -> GroupOutcome:
        options = [o for o in envelope.mail_options if o.upper().startswith(("BODY=", "SMTPUTF8"))]

        async def commit(accepted: Sequence[str]) -> None:
            await self.ledger.in_flight(key, accepted)  # ledger Rule 6 (RFC 1047)

        return await self.upstream.send(
            envelope.mail_from, rcpts, data, options, xforward=envelope.xforward, commit=commit
        )

    async def _store_links(
        self, groups: Sequence[RenderedGroup], plans: Sequence[RecipientPlan]
    ) -> None:
        links = [link for group in groups for link in group.gateway_links]
        sent = {r for group in groups for r in group.rcpts}
        linked = {
            p.recipient_key: p.rcpt for p in plans if p.rcpt in sent and (p.needs_links or p.footer)
        }
        try:
            await store_gateway_links(self.redis, self.keys, links, ttl_days=400)
            await remember_recipients(self.redis, self.keys, linked)
        except (RedisError, OSError, TimeoutError) as exc:
            # Fail closed, not shut: a gateway link Redis did not keep answers the blank GIF,
            # and minimise links never needed their target. The mail still goes out.
            log.warning("could not store %d link(s): %s", len(links), exc)

    async def _after_delivery(
        self,
        envelope: Envelope,
        result: FilterResult,
        upstream: Mapping[str, str],
        relay_id: str,
        received: datetime,
    ) -> None:
        from relay.store.audit import build_records

        records = build_records(
            result,
            envelope,
            upstream,
            relay_id=relay_id,
            received_at=received,
        )
        await self.audit.write(records)
        if result.category is Category.CONSENT_REQUEST:
            await self._record_requested(envelope, result, upstream, received)

    async def _record_requested(
        self, envelope: Envelope, result: FilterResult, upstream: Mapping[str, str], when: datetime
    ) -> None:
        """The relay records ``requested`` itself when it relays a consent request (SPEC 1)."""
        for event in requested_events(envelope, result, upstream, when):
            try:
                await self.store.record(event)
            except Exception as exc:  # the mail went out; losing this event must not fail it
                log.error("could not record 'requested' for %s: %s", mask(event.address), exc)

    async def _bounce(
        self,
        raw: bytes,
        envelope: Envelope,
        result: FilterResult,
        refused: Sequence[str],
        upstream: Mapping[str, str],
        relay_id: str,
    ) -> None:
        # NOTIFY, ORCPT, ENVID and RET as the sender asked (dsn.py); None: no notice wanted.
        dsn = failure_notice(
            envelope,
            {r: upstream[r] for r in refused},
            reporting_mta=self.settings.smtp.hostname or "consent-relay",
            message_id=result.message_id,
            relay_id=relay_id,
            original=raw,
        )
        if dsn is None:
            return
        options = ["BODY=8BITMIME"] if not dsn.isascii() else []
        outcome = await self.upstream.send("", [envelope.mail_from], dsn, options)
        if not outcome.accepted():
            log.error("[%s] could not send the failure notice: %s", relay_id, outcome.replies)
