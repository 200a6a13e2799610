"""``relay serve``: wire the concrete stores, start SMTP and web listeners, handle signals.

Rule 1: one process runs the SMTP listener and the web endpoints on one event loop; with
        ``--workers N`` the parent starts N such processes that share both ports through
        SO_REUSEPORT, and one embedded Redis server (started by the parent) if configured.
Rule 2: SIGHUP reloads the rule files only if they validate, then swaps them in atomically
        (messages in flight finish with the rules they began with); SIGTERM/SIGINT drain:
        stop accepting, answer 421 to new transactions, let messages in flight finish up to
        ``[smtp] shutdown_grace`` seconds, then close.
Rule 3: the audit journal written while Redis was down is replayed at start and every minute;
        records older than ``[audit] retention_days`` are trimmed every hour.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import uvicorn

from relay.context import build_context, load_rule_set
from relay.core.esp import startup_warnings
from relay.core.links import LinkSigner
from relay.errors import RelayError
from relay.inbound.listener import SmtpServer, listening_socket
from relay.inbound.receive import RelayHandler
from relay.model import Envelope
from relay.ops import logs
from relay.outbound.forward import make_upstream, safe_url
from relay.pipeline import Outcome, Pipeline
from relay.settings import Settings
from relay.store.audit import AuditLog
from relay.store.consent import RedisConsentStore
from relay.store.ledger import Ledger
from relay.store.redis_conn import async_client, resolve
from relay.store.redis_keys import Keys
from relay.web.app import create_app

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
        log.info("rules reloaded, digest %s", context.policy.digest)
        self.smtp.reload_tls()
        return True

    async def stop(self) -> None:
        await self.smtp.stop()
        await self.pipeline.drain(self.settings.smtp.shutdown_grace)
        self.web.should_exit = True
        self.journal_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.journal_task
        await self.web_task
        await self.pipeline.close()
        await self.pipeline.redis.aclose()


async def _audit_upkeep(audit: AuditLog) -> None:
    """Replay the journal every minute (Rule 3) and apply the retention every hour."""
    last_trim = 0.0
    while True:
        try:
            replayed = await audit.replay_journal()
            if replayed:
                log.info("replayed %d audit record(s) from the journal", replayed)
            if time.monotonic() - last_trim >= 3600:
                trimmed = await audit.trim(datetime.now(UTC))
                last_trim = time.monotonic()
                if trimmed:
                    log.info("retention: removed %d decision record(s)", trimmed)
        except Exception as exc:  # keep trying: the journal keeps the records meanwhile
            log.warning("audit upkeep failed: %s", exc)
        await asyncio.sleep(60)


async def start(
    settings: Settings,
    redis_url: str,
    *,
    smtp_sock: socket.socket | None = None,
    web_sock: socket.socket | None = None,
) -> Running:
    rules = load_rule_set(settings)
    context = build_context(settings, rules)
    for warning in startup_warnings(
        settings.upstream.profile, ses_no_tracking_set=settings.upstream.ses_no_tracking_set
    ):
        log.warning("upstream profile %s: %s", settings.upstream.profile, warning)
    keys = Keys(settings.redis.prefix)
    client = async_client(redis_url, settings.redis)
    store = RedisConsentStore(
        client,
        keys,
        settings.address_key,
        settings.consent,
        rules_digest=rules.digest,
        timeout=settings.redis.timeout,
    )
    audit = AuditLog(
        client,
        keys,
        settings.audit.journal,
        timeout=settings.redis.timeout,
        retention_days=settings.audit.retention_days,
    )
    pipeline = Pipeline(
        settings,
        context,
        redis=client,
        keys=keys,
        store=store,
        audit=audit,
        ledger=Ledger(client, keys, timeout=settings.redis.timeout),
        upstream=make_upstream(settings.upstream, settings.smtp.hostname or socket.getfqdn()),
    )

    async def process(raw: bytes, envelope: Envelope, relay_id: str) -> Outcome:
        return await pipeline.process(raw, envelope, relay_id)

    smtp = SmtpServer(settings, RelayHandler(settings, process, pipeline.ledger.forget))
    await smtp.start(smtp_sock)
    app = create_app(
        settings=settings,
        redis=client,
        store=store,
        signer=LinkSigner.from_settings(settings.secrets),
    )
    web = _QuietUvicorn(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
    web_sock = web_sock or listening_socket(settings.web.listen)
    web_task = asyncio.create_task(web.serve(sockets=[web_sock]))
    journal_task = asyncio.create_task(_audit_upkeep(audit))
    return Running(pipeline, smtp, web, web_task, journal_task, settings)


async def _serve_forever(settings: Settings, redis_url: str) -> None:
    running = await start(settings, redis_url)
    log.info(
        "relay pid %d: SMTP on %s, web on %s, upstream %s",
        os.getpid(),
        settings.smtp.listen,
        settings.web.listen,
        safe_url(settings.upstream.url),
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, running.reload)
    await stop.wait()
    log.info("shutting down: draining messages in flight")
    await running.stop()


def _child(settings: Settings, redis_url: str) -> None:
    configure_logging(settings)
    asyncio.run(_serve_forever(settings, redis_url))


def configure_logging(settings: Settings) -> None:
    logs.configure(settings.log.level, settings.log.format)


def serve(settings: Settings, workers: int = 1) -> int:
    """Run until SIGTERM/SIGINT. Returns the exit status."""
    configure_logging(settings)
    if not settings.secrets.link_key:
        raise RelayError(
            f"{settings.source}: secrets.link_key: required to sign links "
            "(set it in the file or in $RELAY_LINK_KEY)"
        )
    redis_url, embedded = resolve(settings.redis)
    try:
        if workers <= 1:
            asyncio.run(_serve_forever(settings, redis_url))
            return 0
        return _supervise(settings, redis_url, workers)
    finally:
        if embedded is not None:
            embedded.stop()


def _supervise(settings: Settings, redis_url: str, workers: int) -> int:
    # Metrics of every worker in one folder, so that any of them answers /metrics for all.
    metrics_dir = tempfile.mkdtemp(prefix="relay-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        return _run_children(settings, redis_url, workers)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _run_children(settings: Settings, redis_url: str, workers: int) -> int:
    ctx = multiprocessing.get_context("spawn")
    children = [ctx.Process(target=_child, args=(settings, redis_url)) for _ in range(workers)]
    for child in children:
        child.start()

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
