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
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis
from redis.exceptions import RedisError

from relay import replies
from relay.core.downgrade import downgrade_in_context
from relay.core.filtering import FilterContext, FilterResult, filter_message
from relay.core.recipients import mask
from relay.model import Category, ConsentEvent, ConsentState, Envelope, EventType, Purpose
from relay.ops import metrics
from relay.outbound.dsn import build_dsn
from relay.outbound.dsn_relayed import notify_relayed
from relay.outbound.forward import GroupOutcome, Upstream, UpstreamReply
from relay.replies import Reply
from relay.settings import Settings
from relay.store.audit import AuditLog
from relay.store.consent import ConsentStore
from relay.store.ledger import Ledger, message_key
from relay.store.link_store import remember_recipients, store_gateway_links
from relay.store.redis_keys import Keys

log = logging.getLogger("relay.pipeline")

# Purposes a consent request asks about: every purpose that may need consent.
REQUESTED_PURPOSES = tuple(p for p in Purpose if p is not Purpose.AUTHENTICATION_SECURITY)

_worker_context: FilterContext | None = None


def _init_worker(settings: Settings) -> None:
    """Process-pool initializer: each worker loads the rules itself (nothing pickled per call)."""
    global _worker_context
    from relay.context import build_context

    _worker_context = build_context(settings)


def _filter_in_worker(
    raw: bytes, envelope: Envelope, states: Mapping[str, ConsentState], now: datetime
) -> FilterResult:
    assert _worker_context is not None, "worker not initialised"
    return filter_message(_worker_context, raw, envelope, states, now)


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
        self, raw: bytes, envelope: Envelope, states: Mapping[str, ConsentState], now: datetime
    ) -> FilterResult:
        if self._pool is None or len(raw) <= self.settings.smtp.inline_max_bytes:
            return filter_message(self.context, raw, envelope, states, now)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool, _filter_in_worker, raw, envelope, states, now
            )
        except concurrent.futures.process.BrokenProcessPool:
            # A worker died (killed, out of memory): nothing was sent yet, so rebuild the pool
            # and filter this message here rather than fail it.
            log.error("filter worker died; restarting the pool")
            self._pool = self._new_pool()
            return filter_message(self.context, raw, envelope, states, now)

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
        with metrics.PROCESSING.time():
            result = await self._filter(raw, envelope, states, received)
        if result.category is Category.CONSENT_REQUEST and unavailable:
            # The re-ask window cannot be checked: asking again could harass a recipient who
            # refused, and refusing for good would punish a Redis outage. Retry later.
            return Outcome(replies.TEMP_REDIS, result, {})
        if result.reask_blocked:
            until = max(result.reask_blocked.values()).date().isoformat()
            detail = f"{len(result.reask_blocked)} recipient(s) may not be asked before {until}"
            return Outcome(replies.REASK_REFUSED.with_detail(detail), result, {})
        # Steps 4-6 must complete even if the client goes away (Rule 3).
        task = asyncio.ensure_future(
            self._deliver(raw, envelope, relay_id, key, done, result, received)
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
        received: datetime,
    ) -> Outcome:
        await self._store_links(result)
        sends = []
        for group in result.groups:
            todo = [r for r in group.rcpts if r.lower() not in done]
            if todo:
                sends.append(self._send(envelope, todo, group.data))
        started = time.perf_counter()
        outcomes: list[GroupOutcome] = list(await asyncio.gather(*sends))
        elapsed = (time.perf_counter() - started) * 1000
        metrics.UPSTREAM.observe(elapsed / 1000)
        _count_decisions(result, outcomes)
        upstream: dict[str, str] = {}
        final: dict[str, str] = {}
        for outcome in outcomes:
            for rcpt, reply in outcome.replies.items():
                upstream[rcpt] = reply.text
                if reply.accepted or reply.permanent:
                    final[rcpt] = reply.text
        settled = all(r in final or r.lower() in done for r in envelope.rcpt_tos)
        for rcpt in envelope.rcpt_tos:
            if rcpt not in upstream and rcpt.lower() in done:
                upstream[rcpt] = f"(delivered earlier) {done[rcpt.lower()]}"
        # Both before the client is answered; neither waits for, nor is abandoned by, the other.
        written = await asyncio.gather(
            self.ledger.record(key, final, settled=settled),
            self._after_delivery(envelope, result, upstream, relay_id, received),
            return_exceptions=True,
        )
        await notify_relayed(
            self.upstream, self.settings, envelope, result.message_id, outcomes, relay_id
        )
        if failed := [w for w in written if isinstance(w, BaseException)]:
            raise failed[0]
        answer = summarise(envelope.rcpt_tos, outcomes, done)
        refused_now = [r for o in outcomes for r in o.refused()]
        if refused_now and answer.code == 250:
            await self._bounce(envelope, result, refused_now, upstream, relay_id)
        log.info(
            "[%s] %d recipient(s), %d group(s), category=%s, upstream %.1f ms -> %s",
            relay_id,
            len(envelope.rcpt_tos),
            len(result.groups),
            result.category,
            elapsed,
            answer.id,
        )
        settled_key = key if settled and answer.code == 250 else None
        return Outcome(answer, result, upstream, settled_key)

    async def _send(self, envelope: Envelope, rcpts: Sequence[str], data: bytes) -> GroupOutcome:
        try:
            return await self.upstream.send(
                envelope.mail_from,
                rcpts,
                data,
                envelope.mail_options,
                xforward=envelope.xforward,
                rcpt_options=dict(zip(envelope.rcpt_tos, envelope.rcpt_options, strict=False)),
                downgrade=self._downgrade,
            )
        except Exception as exc:  # the other groups' outcomes must still be recorded
            log.error("upstream send failed unexpectedly: %s", type(exc).__name__)
            return GroupOutcome({r: UpstreamReply.own(replies.OUT_INTERNAL) for r in rcpts})

    async def _downgrade(self, data: bytes) -> bytes:  # 8-bit data, upstream without 8BITMIME
        return await asyncio.to_thread(downgrade_in_context, self.context, data)

    async def _store_links(self, result: FilterResult) -> None:
        links = [link for group in result.groups for link in group.gateway_links]
        linked = {p.recipient_key: p.rcpt for p in result.plans if p.needs_links or p.footer}
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
        self,
        envelope: Envelope,
        result: FilterResult,
        upstream: Mapping[str, str],
        when: datetime,
    ) -> None:
        """The relay records ``requested`` itself when it relays a consent request (SPEC 1)."""
        for rcpt in envelope.rcpt_tos:
            if not upstream.get(rcpt, "").startswith("2"):
                continue
            event = ConsentEvent(
                event=EventType.REQUESTED,
                purposes=REQUESTED_PURPOSES,
                address=rcpt,
                occurred_at=when,
                actor="system",
                method="relay",
                source={"message_ref": result.message_id},
                rules_digest=result.rules_digest,
            )
            try:
                await self.store.record(event)
            except Exception as exc:  # the mail went out; losing this event must not fail it
                log.error("could not record 'requested' for %s: %s", mask(rcpt), exc)

    async def _bounce(
        self,
        envelope: Envelope,
        result: FilterResult,
        refused: Sequence[str],
        upstream: Mapping[str, str],
        relay_id: str,
    ) -> None:
        if not envelope.mail_from:
            return  # never bounce a bounce
        dsn = build_dsn(
            reporting_mta=self.settings.smtp.hostname or "consent-relay",
            original_sender=envelope.mail_from,
            message_id=result.message_id,
            failures={r: upstream[r] for r in refused},
            relay_id=relay_id,
        )
        outcome = await self.upstream.send("", [envelope.mail_from], dsn, [])
        if not outcome.accepted():
            log.error("[%s] could not send the failure notice: %s", relay_id, outcome.replies)


def _count_decisions(result: FilterResult, outcomes: Sequence[GroupOutcome]) -> None:
    for outcome in outcomes:
        for reply in outcome.replies.values():
            metrics.UPSTREAM_REPLIES.labels(metrics.reply_class(reply.code)).inc()
    for rplan in result.plans:
        if rplan.footer:
            metrics.FOOTERS.inc()
        for decision in rplan.decisions:
            purpose = result.candidates[decision.candidate_id].purpose.value
            metrics.TRACKERS.labels(decision.action.value, purpose).inc()


def summarise(
    rcpts: Sequence[str], outcomes: Sequence[GroupOutcome], done: Mapping[str, str]
) -> Reply:
    """Map every recipient's upstream answer to the one reply the client gets (Rules 1, 2)."""
    replies_by_rcpt: dict[str, UpstreamReply] = {}
    for outcome in outcomes:
        replies_by_rcpt.update(outcome.replies)
    delivered = deferred = refused = 0
    last_refusal = last_deferral = ""
    for rcpt in rcpts:
        reply = replies_by_rcpt.get(rcpt)
        if reply is None:
            if rcpt.lower() in done:
                delivered += 1
            else:
                deferred += 1
            continue
        if reply.accepted:
            delivered += 1
        elif reply.permanent:
            refused += 1
            last_refusal = reply.text
        else:
            deferred += 1
            last_deferral = reply.text
    if deferred:
        answer = replies.TEMP_PARTIAL if delivered or refused else replies.TEMP_UPSTREAM
        return answer.with_detail(f"upstream said: {last_deferral}") if last_deferral else answer
    if refused and not delivered:
        return replies.UPSTREAM_REJECTED.with_detail(last_refusal)
    if refused:
        return replies.OK_QUEUED.with_detail(
            f"{refused} recipient(s) refused upstream, notice sent"
        )
    return replies.OK_QUEUED
