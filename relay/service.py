"""``relay serve``: wire the concrete stores, start SMTP and web listeners, handle signals.

Rule 1: one process runs the SMTP listener and the web endpoints on one event loop; with
        ``--workers N`` the parent binds every port (one SO_REUSEPORT socket per worker, so
        the kernel spreads connections) and starts N such processes, each given its sockets,
        and one embedded Redis server if configured. The parent holds a lock per address
        (``listener.claim``), so a second relay on the same ports stops with a one-line error
        instead of silently sharing the traffic.
Rule 2: SIGHUP reloads the rule files only if they validate, then swaps them in atomically
        (messages in flight finish with the rules they began with); SIGTERM/SIGINT drain:
        stop accepting, answer 421 to new transactions, let messages in flight finish up to
        ``[smtp] shutdown_grace`` seconds, then close.
Rule 3: the audit journal and the write journal (``writeback``) written while Redis was down, or
        while no replica confirmed, are replayed at start and every few seconds while they hold
        anything; records older than ``[audit] retention_days`` are trimmed every hour, and so
        are the last-open days and consent proofs past ``[retention]`` (``store.retention``).
Rule 4: start-up says what will not work before the first message finds out: Redis or the
        upstream unreachable, the example link key in use; each a one-line warning naming the
        key. The relay still starts (Redis down is fail-closed by design), except when a port
        cannot be bound or a setting is wrong: then one line names the key and the address.
Rule 5: the background loops (journal replay and retention, the ledger's liveness) end when
        ``stopping`` is set, at their next step; they are cancelled only if they do not. A
        cancellation alone is not enough: a Redis client may turn it into a connection error
        that the loop's error handling then swallows, and the relay would never stop.
Rule 6: what start-up loads (rules, compiled signature sets, libraries) lives as long as the
        process; once loaded it is frozen out of the garbage collector (``settle_heap``), which
        would otherwise walk it at every full collection: 20-35 ms on the reference machine,
        every few hundred messages, a stall for every session of the process.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import uvicorn

from relay.context import build_context, load_rule_set
from relay.core.esp import startup_warnings
from relay.core.links import LinkSigner
from relay.errors import RelayError
from relay.inbound.listener import Claim, SmtpServer, claim
from relay.inbound.receive import RelayHandler
from relay.model import Envelope
from relay.ops import logs, metrics
from relay.outbound.forward import make_upstream
from relay.pipeline import Outcome, Pipeline
from relay.settings import Settings
from relay.startup import claim_all, first_warnings
from relay.store.audit import AuditLog
from relay.store.layout_migrate import refuse_old_layout
from relay.store.redis_conn import resolve
from relay.store.retention import Retention
from relay.store.stores import open_stores
from relay.store.writeback import Handler, WriteBack
from relay.web.app import create_app
from relay.web.limits import descriptor_budget, web_config

log = logging.getLogger("relay.service")


class _QuietUvicorn(uvicorn.Server):
    """uvicorn without its own signal handlers: the relay owns SIGTERM/SIGHUP."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass
class Running:
    """A started relay process, for tests and for ``relay serve``."""

    pipeline: Pipeline
    smtp: SmtpServer
    web: _QuietUvicorn
    web_task: asyncio.Task[None]
    journal_task: asyncio.Task[None]
    settings: Settings
    claims: list[Claim]
    # Keeps this process's ledger liveness key fresh (ledger Rule 7).
    alive_task: asyncio.Task[None] | None = None
    # Set by ``stop``: the background loops end at their next step (Rule 5).
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    writeback: WriteBack | None = None
    handlers: Mapping[str, Handler] | None = None
    metrics_task: asyncio.Task[None] | None = None  # ops.metrics Rule 3: tallies written

    @property
    def smtp_port(self) -> int:
        return self.smtp.port

    def reload(self) -> bool:
        try:
            rules = load_rule_set(self.settings)
            context = build_context(self.settings, rules)
        except RelayError as exc:
            log.error("rules reload refused, keeping the running rules: %s", exc)
            return False
        self.pipeline.reload(context)
        settle_heap()
        log.info("rules reloaded, digest %s", context.policy.digest)
        self.smtp.reload_tls()
        return True

    async def replay_journals(self) -> int:
        """Replay both journals now (the upkeep task does it every few seconds)."""
        settled = 0
        if self.writeback is not None:
            settled += await self.writeback.replay(self.handlers or {})
        return settled + await self.pipeline.audit.replay_journal()

    async def stop(self) -> None:
        await self.smtp.stop()
        await self.pipeline.drain(self.settings.smtp.shutdown_grace)
        self.web.should_exit = True
        self.stopping.set()
        await _finish(self.journal_task)
        await self.web_task
        if self.alive_task is not None:  # after the drain: no entry of ours is in flight
            await _finish(self.alive_task)
        if self.metrics_task is not None:  # its last flush counts the drained messages
            await _finish(self.metrics_task)
        await self.pipeline.close()
        await self.pipeline.redis.aclose()
        for held in self.claims:
            held.close()


def settle_heap() -> None:
    """Rule 6: collect what start-up (or a reload) left behind, then freeze the rest, so full
    collections walk only what messages allocate. A reload unfreezes first: the replaced
    rules become collectable again instead of staying frozen for the life of the process."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


async def _finish(task: asyncio.Task[None], grace: float = 5.0) -> None:
    """Rule 5: wait for a loop that saw ``stopping``; cancel it only if it does not end."""
    done, _ = await asyncio.wait({task}, timeout=grace)
    if not done:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, grace)


async def _pause(stopping: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)


UPKEEP_PAUSE = 5.0  # seconds between journal checks (two stat calls each when empty)


async def _audit_upkeep(
    audit: AuditLog,
    retention: Retention | None,
    stopping: asyncio.Event,
    writeback: WriteBack | None = None,
    handlers: Mapping[str, Handler] | None = None,
) -> None:
    """Replay the journals (Rule 3) and apply the retention every hour, the first time at
    start (the monotonic clock may be younger than an hour on a fresh machine)."""
    last_trim = float("-inf")
    while not stopping.is_set():
        try:
            if writeback is not None and writeback.pending():
                settled = await writeback.replay(handlers or {})
                if settled:
                    log.info("replayed %d write(s) from the write journal", settled)
            replayed = await audit.replay_journal()
            if replayed:
                log.info("replayed %d audit record(s) from the journal", replayed)
            if time.monotonic() - last_trim >= 3600:
                trimmed = await audit.trim(datetime.now(UTC))
                last_trim = time.monotonic()
                if trimmed:
                    log.info("retention: removed %d decision record(s)", trimmed)
                if retention is not None:
                    kept = await retention.apply(datetime.now(UTC))
                    if kept.last_open or kept.consent_chains:
                        log.info("retention: removed %s", kept)
        except Exception as exc:  # keep trying: the journals keep the writes meanwhile
            log.warning("journal replay or retention failed, retrying: %s", exc)
        await _pause(stopping, UPKEEP_PAUSE)


async def start(
    settings: Settings,
    redis_url: str,
    *,
    smtp_sock: socket.socket | None = None,
    web_sock: socket.socket | None = None,
    implicit_sock: socket.socket | None = None,
    worker: int = 0,
) -> Running:
    logs.register_secrets(logs.secret_values(settings))
    rules = load_rule_set(settings)
    context = build_context(settings, rules)
    for warning in startup_warnings(
        settings.upstream.profile, ses_no_tracking_set=settings.upstream.ses_no_tracking_set
    ):
        log.warning("upstream profile %s: %s", settings.upstream.profile, warning)
    for line in context.controllers.describe():
        log.info("%s", line)  # which From domains get consent-based tracking, and for whom
    # Stable across restarts, so a restarted relay tells its predecessor is gone (ledger).
    identity = f"{socket.gethostname()} {settings.smtp.listen} worker {worker}"
    stores = open_stores(settings, redis_url, rules.digest, context.controllers, identity)
    client, store, audit, keys = stores.client, stores.consent, stores.audit, stores.keys
    pipeline = Pipeline(
        settings,
        context,
        redis=client,
        keys=keys,
        store=store,
        audit=audit,
        ledger=stores.ledger,
        upstream=make_upstream(settings.upstream, settings.smtp.hostname or socket.getfqdn()),
        links=stores.links,
    )

    async def process(raw: bytes, envelope: Envelope, relay_id: str) -> Outcome:
        return await pipeline.process(raw, envelope, relay_id)

    smtp = SmtpServer(settings, RelayHandler(settings, process, pipeline.ledger.forget_soon))
    # Before the first connection: a relay restarted after a crash must be known at once as
    # the successor of the one that died (ledger Rule 7), so a retry is not sent twice.
    with contextlib.suppress(Exception):  # Redis down (a cluster's errors included): later
        await pipeline.ledger.announce()
    claims: list[Claim] = []
    if web_sock is None:  # bind before the SMTP side starts, so a taken port stops both
        claims.append(claim("web.listen", settings.web.listen))
        web_sock = claims[-1].sockets[0]
    try:
        await smtp.start(smtp_sock, implicit_sock)
    except BaseException:
        for held in claims:
            held.close()
        raise
    app = create_app(
        settings=settings,
        redis=client,
        store=store,
        signer=LinkSigner.from_settings(settings.secrets),
        controllers=context.controllers,
    )
    # Connection caps and header/body deadlines (relay/web/limits.py), so that a flood of slow
    # HTTP clients cannot take the descriptors the SMTP listener of this process needs.
    for warning in descriptor_budget(settings, settings.smtp.max_connections):
        log.warning("%s", warning)
    web = _QuietUvicorn(web_config(app, settings))
    web_task = asyncio.create_task(web.serve(sockets=[web_sock]))
    retention = Retention(client, keys, settings.retention, settings.consent)
    stopping = asyncio.Event()
    journal_task = asyncio.create_task(
        _audit_upkeep(audit, retention, stopping, stores.writeback, stores.handlers)
    )
    log.info(
        "relay pid %d: SMTP on %s, web on %s, upstream %s",
        os.getpid(),
        settings.smtp.listen,
        settings.web.listen,
        logs.redact_url(settings.upstream.url),
    )
    alive_task = asyncio.create_task(pipeline.ledger.keep_alive(stopping))
    metrics_task = asyncio.create_task(metrics.flush_every(stopping))
    settle_heap()
    return Running(
        pipeline, smtp, web, web_task, journal_task, settings, claims, alive_task, stopping,
        stores.writeback, stores.handlers, metrics_task,
    )  # fmt: skip


async def _serve_forever(
    settings: Settings, redis_url: str, sockets: _Sockets, worker: int = 0
) -> None:
    running = await start(settings, redis_url, **sockets, worker=worker)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, running.reload)
    await stop.wait()
    log.info("shutting down: draining messages in flight")
    await running.stop()


_Sockets = dict[str, socket.socket]


def _child(settings: Settings, redis_url: str, sockets: _Sockets, worker: int) -> None:
    configure_logging(settings)
    run_loop(settings, _serve_forever(settings, redis_url, sockets, worker))


def run_loop(settings: Settings, main: Coroutine[Any, Any, None]) -> None:
    """``[smtp] event_loop``: uvloop runs the same asyncio code on libuv, with less CPU per
    message (measured in the README's performance section); asyncio's own loop otherwise."""
    if settings.smtp.event_loop == "uvloop":
        import uvloop

        uvloop.run(main)
    else:
        asyncio.run(main)


def configure_logging(settings: Settings) -> None:
    logs.configure(settings.log.level, settings.log.format, logs.secret_values(settings))


def serve(settings: Settings, workers: int = 1) -> int:
    """Run until SIGTERM/SIGINT. Returns the exit status."""
    configure_logging(settings)
    if not settings.secrets.link_key and settings.source == "<defaults>":
        raise RelayError(
            "no configuration: ./config.toml not found and $RELAY_CONFIG unset; run "
            "`relay init` (or `make run`) to create one, or pass --config FILE"
        )
    if not settings.secrets.link_key:
        raise RelayError(
            f"{settings.source}: secrets.link_key: required to sign links "
            "(set it in the file or in $RELAY_LINK_KEY)"
        )
    claims = claim_all(settings, workers)  # before Redis: a second relay stops here
    embedded = None
    try:
        redis_url, embedded = resolve(settings.redis)
        refuse_old_layout(settings.redis, redis_url)
        for warning in first_warnings(settings, redis_url):
            log.warning("%s", warning)
        if workers <= 1:
            sockets = {name: held.sockets[0] for name, held in claims}
            run_loop(settings, _serve_forever(settings, redis_url, sockets))
            return 0
        return _supervise(settings, redis_url, claims, workers)
    finally:
        for _name, held in claims:
            held.close()
        if embedded is not None:
            embedded.stop()


def _supervise(
    settings: Settings, redis_url: str, claims: list[tuple[str, Claim]], workers: int
) -> int:
    # Metrics of every worker in one folder, so that any of them answers /metrics for all.
    metrics_dir = tempfile.mkdtemp(prefix="relay-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return _run_children(settings, redis_url, claims, workers)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_children(
    settings: Settings, redis_url: str, claims: list[tuple[str, Claim]], workers: int
) -> int:
    ctx = multiprocessing.get_context("spawn")
    # Each worker gets its own socket of every address (multiprocessing passes them over a
    # Unix socket); the parent keeps only the locks.
    children = []
    for number in range(workers):
        sockets = {name: held.sockets[number] for name, held in claims}
        args = (settings, redis_url, sockets, number)
        children.append(ctx.Process(target=_child, args=args))
    for child in children:
        child.start()
    # The children hold the sockets now. The parent must not: a socket left open here, once
    # its worker died, would still be given connections by the kernel that nobody accepts.
    for _name, held in claims:
        held.release_sockets()

    def forward(signum: int, _frame: object) -> None:
        for child in children:
            if child.pid and child.is_alive():
                os.kill(child.pid, signum)

    handlers: dict[int, Callable[[int, object], None]] = {}
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        handlers[signum] = forward
        signal.signal(signum, forward)
    status = 0
    for child in children:
        child.join()
        status = status or (child.exitcode or 0)
    return status
