"""What ``relay serve`` settles before it starts: every listening address claimed, and the
warnings a newcomer needs before the first message finds out (service Rule 1 and Rule 4).

Rule 1: a port that cannot be bound, or one another relay holds, is a ``SettingsError``
        naming the key and the address (``inbound.listener.claim``); nothing else is started.
Rule 2: Redis or the upstream unreachable, and the example link key in use, are warnings:
        the relay still starts (Redis down is fail-closed by design).
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from relay.inbound.listener import Claim, claim
from relay.ops import logs
from relay.ops.readiness import check_ready
from relay.settings import EXAMPLE_LINK_KEY, Settings
from relay.store.redis_conn import async_client


def claim_all(settings: Settings, workers: int) -> list[tuple[str, Claim]]:
    """Every listening address of this relay, bound for ``workers`` processes (Rule 1)."""
    wanted = [("smtp_sock", "smtp.listen", settings.smtp.listen)]
    wanted.append(("web_sock", "web.listen", settings.web.listen))
    tls = settings.smtp.tls
    if tls.implicit_listen and tls.cert and tls.key:
        wanted.append(("implicit_sock", "smtp.tls.implicit_listen", tls.implicit_listen))
    claims: list[tuple[str, Claim]] = []
    try:
        for name, key, listen in wanted:
            claims.append((name, claim(key, listen, workers)))
    except BaseException:
        for _name, held in claims:
            held.close()
        raise
    return claims


def first_warnings(settings: Settings, redis_url: str) -> list[str]:
    """Rule 4: what will not work, found before the first message does."""
    found = []
    if settings.secrets.link_key == EXAMPLE_LINK_KEY:
        found.append(
            f"{settings.source}: secrets.link_key: the example key is in use; anyone who "
            "read config.example.toml can forge links: run `relay init` or set $RELAY_LINK_KEY"
        )

    outbox = settings.upstream.url
    if outbox.startswith("file:"):  # the folder the file upstream would create anyway
        with contextlib.suppress(OSError):
            Path(outbox.removeprefix("file:").removeprefix("//")).mkdir(parents=True, exist_ok=True)

    async def probe() -> list[str]:
        client = async_client(redis_url, settings.redis)
        try:
            return await check_ready(settings, client)
        finally:
            await client.aclose()

    for problem in asyncio.run(probe()):
        what, _, detail = problem.partition(": ")
        if what == "redis":
            found.append(
                f"redis.url {logs.redact_url(settings.redis.url)}: unreachable ({detail}); "
                "consent counts as absent (fail closed) until it answers"
            )
        else:
            found.append(
                f"upstream.url {logs.redact_url(settings.upstream.url)}: {detail}; "
                "messages get 451 until it answers"
            )
    return found
