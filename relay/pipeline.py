"""The conductor: one received message -> consent lookup, pure core, upstream groups, audit, reply.

Order of work for one message (only this module knows it):

1. read the delivery ledger and the consent state of every recipient (one Redis round trip
   each, concurrently);
2. run the pure core (``filtering.filter_message``) in the event loop for small messages,
   in a worker process for large ones, so that one big message never stalls other sessions;
3. refuse a consent request to a recipient inside the re-ask window (5xx saying until when),
   or from a domain no configured controller covers;
4. store the gateway links and the addresses of every recipient whose copy carries a relay
   link (a link that cannot be stored defers the message: every minted link must work);
5. send every group not already delivered to the upstream, concurrently;
6. record final upstream answers in the ledger, then the decision records in the audit log,
   and only then answer the client.

Rule 1: the client gets 250 only when every recipient was accepted upstream (now or by an
        earlier attempt recorded in the ledger); a deferral anywhere gives a 4xx.
Rule 2: a recipient the upstream refused for good, while others were accepted, is reported
        to the envelope sender by a delivery status notification and the message is accepted.
Rule 3: steps 5 and 6 run shielded from the client's connection: a client that disconnects
        or times out mid-way cannot leave a delivered group out of the ledger.
Rule 4: a copy the core withheld is the relay's own 5xx, noticed like an upstream's (``dsn``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from relay import replies
from relay.core.controllers import from_domain
from relay.core.downgrade import downgrade_in_context
from relay.core.filtering import FilterContext, FilterResult
from relay.core.recipients import mask
from relay.filter_pool import FilterRunner
from relay.model import (
    Category,
    ConsentState,
    Envelope,
    RenderedGroup,
)
from relay.ops import metrics
from relay.outbound.dsn import NOTICE_INTRO, first_refusal, withheld_replies
from relay.outbound.dsn_failure import send_failure_notice
from relay.outbound.dsn_relayed import notify_relayed
from relay.outbound.forward import GroupOutcome, Upstream, UpstreamReply
from relay.replies import Reply
from relay.settings import Settings
from relay.store.audit import AuditLog
from relay.store.consent import ConsentStore
from relay.store.ledger import IN_FLIGHT, Ledger, message_key, rcpt_key
from relay.store.link_store import LINK_TTL_DAYS, LinkStore
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys
from relay.summary import count_decisions, requested_events, summarise, with_notice

log = logging.getLogger("relay.pipeline")


States = Mapping[str, ConsentState]


@dataclass
class Outcome:
    """What happened to one message, for the reply, the audit log and the tests."""

    reply: Reply
    result: FilterResult | None
    upstream: dict[str, str]  # rcpt -> upstream reply text (or ledger entry)
    settled_key: str | None = None  # ledger key to forget once the client saw the 250


def without_groups(result: FilterResult) -> FilterResult:
    """``result`` without its renderings, which the sender then owns (filtering Rule 5): its
    fields copied as they are, where ``dataclasses.replace`` ran ``__init__`` again (1 us
    against 7)."""
    bare = object.__new__(FilterResult)
    bare.__dict__.update(result.__dict__, groups=())
    return bare


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        context: FilterContext,
        *,
        redis: AsyncRedis,
        keys: Keys,
        store: ConsentStore,
        audit: AuditLog,
        ledger: Ledger,
        upstream: Upstream,
        links: LinkStore | None = None,
    ) -> None:
        self.settings = settings
        self.context = context
        self.redis = redis
        self.keys = keys
        self.store = store
        self.audit = audit
        self.ledger = ledger
        self.upstream = upstream
        self.links = links or LinkStore(redis, keys, timeout=settings.redis.timeout)
        self.runner = FilterRunner(settings, context)
        self._deliveries: set[asyncio.Task[Outcome]] = set()

    def reload(self, context: FilterContext) -> None:
        """Swap in validated rules: new messages use them, messages in flight finish as begun."""
        self.context = context
        self.runner.reload(context)

    async def close(self) -> None:
        self.runner.close()
        await self.upstream.close()

    async def process(self, raw: bytes, envelope: Envelope, relay_id: str) -> Outcome:
        outcome = await self._process(raw, envelope, relay_id)
        code = outcome.reply.code
        result = "accepted" if code < 300 else "deferred" if code < 500 else "refused"
        metrics.count(metrics.MESSAGES, result)
        return outcome

    async def _states(self, raw: bytes, env: Envelope, now: datetime) -> States:
        """The recipients' consent for the message's controller (none read without one)."""
        owner = self.context.controllers.for_message(raw, env.mail_from)
        return await self.store.states(env.rcpt_tos, now, owner.id) if owner else {}

    async def _process(self, raw: bytes, envelope: Envelope, relay_id: str) -> Outcome:
        received = datetime.now(UTC)
        key = message_key(envelope.mail_from, raw)
        # Both reads go out in one write to Redis (the multiplexer's); one of them in a task.
        reading = asyncio.ensure_future(self.ledger.read(key))
        try:
            states = await self._states(raw, envelope, received)
        except BaseException:
            reading.cancel()
            raise
        done, ledger_read = await reading
        unavailable = sum(not s.available for s in states.values())
        metrics.count(metrics.CONSENT_LOOKUPS, "unavailable", amount=unavailable)
        metrics.count(metrics.CONSENT_LOOKUPS, "ok", amount=len(states) - unavailable)
        # On a cluster the ledger's master may be down while the recipients' answer.
        if self.settings.smtp.redis_down == "tempfail" and (unavailable or not ledger_read):
            return Outcome(replies.TEMP_REDIS, None, {})
        earlier = frozenset(r for r in envelope.rcpt_tos if rcpt_key(r) in done)
        started = time.perf_counter()
        result = await self.runner.run(raw, envelope, states, received, earlier)
        metrics.observe(metrics.PROCESSING, time.perf_counter() - started)
        if result.category is Category.CONSENT_REQUEST and unavailable:
            # The re-ask window cannot be checked: asking again could harass a recipient who
            # refused, and refusing for good would punish a Redis outage. Retry later.
            return Outcome(replies.TEMP_REDIS, result, {})
        if result.category is Category.CONSENT_REQUEST and result.controller is None:
            domain = from_domain(raw) or envelope.mail_from.rpartition("@")[2]
            return Outcome(replies.NO_CONTROLLER.with_detail(domain or "(none)"), result, {})
        if result.reask_blocked:
            until = max(result.reask_blocked.values()).date().isoformat()
            detail = f"{len(result.reask_blocked)} recipient(s) may not be asked before {until}"
            return Outcome(replies.REASK_REFUSED.with_detail(detail), result, {})
        # The renderings are owned by ``batch``, which the sender empties as it goes
        # (filtering Rule 5: the memory of one message stays bounded).
        batch = list(result.groups)
        result = without_groups(result)
        # Steps 4-6 must complete even if the client goes away (Rule 3).
        task = asyncio.ensure_future(
            self._deliver(raw, envelope, relay_id, key, done, result, batch, received, states)
        )
        self._deliveries.add(task)
        metrics.delivery_started()
        task.add_done_callback(self._delivery_done)
        return await asyncio.shield(task)

    def _delivery_done(self, task: asyncio.Task[Outcome]) -> None:
        self._deliveries.discard(task)
        metrics.delivery_ended()

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
        sent = await self._send_batches(
            raw, envelope, key, done, result, batch, received, states, relay_id
        )
        if sent is None:
            return Outcome(replies.TEMP_LINKS, result, {})
        outcomes = sent
        elapsed = (time.perf_counter() - started) * 1000
        metrics.observe(metrics.UPSTREAM, elapsed / 1000)
        count_decisions(result, outcomes)
        outcomes.append(GroupOutcome(withheld := withheld_replies(result.withheld)))
        upstream: dict[str, str] = {}
        final: dict[str, str] = {}
        for outcome in outcomes:
            for rcpt, reply in outcome.replies.items():
                upstream[rcpt] = reply.text
                if (reply.accepted or reply.permanent) and rcpt not in withheld:
                    final[rcpt] = reply.text  # a withheld copy is decided again on a retry
        settled = all(r in final or r in withheld or rcpt_key(r) in done for r in envelope.rcpt_tos)
        for rcpt in envelope.rcpt_tos:
            if rcpt not in upstream and rcpt_key(rcpt) in done:
                upstream[rcpt] = f"(delivered earlier) {done[rcpt_key(rcpt)]}"
        deferred = [r for o in outcomes for r in o.deferred()]
        # Both before the client is answered; neither waits for, nor is abandoned by, the other.
        recording = asyncio.ensure_future(
            self.ledger.record(key, final, settled=settled, cleared=deferred)
        )
        failures: list[Exception] = []
        try:
            await self._after_delivery(envelope, result, upstream, relay_id, received)
        except Exception as exc:
            failures.append(exc)
        try:
            await recording
        except Exception as exc:
            failures.insert(0, exc)  # the ledger's first, as before
        await notify_relayed(
            self.upstream, self.settings, envelope, result.message_id, outcomes, relay_id
        )
        if failures:
            raise failures[0]
        answer = summarise(envelope.rcpt_tos, outcomes, {rcpt_key(r) for r in done}, rcpt_key)
        if withheld.keys() >= set(envelope.rcpt_tos) and not done:
            answer = first_refusal(result.withheld)  # nobody gets it: the client is told why
        refused_now = [r for o in outcomes for r in o.refused()]
        if refused_now and answer.code == 250:
            notice = await self._bounce(raw, envelope, result, refused_now, upstream, relay_id)
            answer = with_notice(answer, notice)
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
        relay_id: str,
    ) -> list[GroupOutcome] | None:
        """Send the rendered groups; while groups are left unrendered (the per-message render
        budget, filtering Rule 6) and nothing was deferred, render and send the next batch.
        Each rendering is dropped once sent: only one batch is ever held. None: the first
        batch's links could not be stored, so nothing was sent (step 4)."""
        outcomes: list[GroupOutcome] = []
        unrendered, linked = result.unrendered, result.linked
        while True:
            if not await self._store_links(batch, linked, relay_id):
                return outcomes or None  # a later batch: its recipients are deferred
            sends = []
            for group in batch:
                todo = [r for r in group.rcpts if rcpt_key(r) not in done]
                if todo:
                    sends.append(self._send(envelope, todo, group.data, key))
            batch.clear()
            # One group (the usual message) is sent as it is, without a task around it.
            outcomes += [await sends[0]] if len(sends) == 1 else await asyncio.gather(*sends)
            sends.clear()
            if not unrendered or any(o.deferred() for o in outcomes):
                return outcomes  # recipients left unanswered are deferred: the client retries
            answered = {r for o in outcomes for r in o.replies}
            skip = frozenset(r for r in envelope.rcpt_tos if r in answered or rcpt_key(r) in done)
            following = await self.runner.run(raw, envelope, states, received, skip)
            batch.extend(following.groups)
            unrendered, linked = following.unrendered, following.linked
            del following

    async def _send(
        self, envelope: Envelope, rcpts: Sequence[str], data: bytes, key: str
    ) -> GroupOutcome:
        """One group. The upstream picks which of the client's parameters it can pass on (DSN
        to an upstream with DSN, ...), and converts 8-bit data for one without 8BITMIME."""

        async def commit(accepted: Sequence[str]) -> None:
            await self.ledger.in_flight(key, accepted)  # ledger Rule 6 (RFC 1047)

        try:
            return await self.upstream.send(
                envelope.mail_from,
                rcpts,
                data,
                envelope.mail_options,
                xforward=envelope.xforward,
                rcpt_options=dict(zip(envelope.rcpt_tos, envelope.rcpt_options, strict=False)),
                downgrade=self._downgrade,
                commit=commit,
            )
        except Exception as exc:  # the other groups' outcomes must still be recorded
            log.error("upstream send failed unexpectedly: %s", type(exc).__name__)
            return GroupOutcome({r: UpstreamReply.own(replies.OUT_INTERNAL) for r in rcpts})

    async def _downgrade(self, data: bytes) -> bytes:  # 8-bit data, upstream without 8BITMIME
        return await asyncio.to_thread(downgrade_in_context, self.context, data)

    async def _store_links(
        self, groups: Sequence[RenderedGroup], linked: Mapping[str, str], relay_id: str
    ) -> bool:
        """Keep gateway targets and the address of every recipient whose copy carries a relay
        link (placeholder, footer, pixel), in Redis or its write journal (link_store Rule 5):
        False, and the message waits, if neither took them."""
        links = [link for group in groups for link in group.gateway_links]
        if await self.links.store(links, linked, ttl_days=LINK_TTL_DAYS):
            return True
        # A page link whose recipient cannot be found would answer "unknown" for years.
        log.warning("[%s] could not store the links of %d recipient(s)", relay_id, len(linked))
        return False

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
                await self.store.record_or_journal(event)
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
    ) -> str:
        """The failure notice the refused recipients asked for; says what became of it."""
        return await send_failure_notice(
            self.upstream,
            envelope,
            {r: upstream[r] for r in refused},
            reporting_mta=self.settings.smtp.hostname or "consent-relay",
            message_id=result.message_id,
            relay_id=relay_id,
            original=raw,
            intro=NOTICE_INTRO if result.withheld else None,
        )
