"""How an ``relay audit`` command opens the decision log and reports failures (``audit``,
``audit_recount``).

Rule 1: with ``[redis] url = "embedded"`` the command uses the relay's running server when one
        answers, else starts one on the same data for its own duration (``redis_conn.resolve``).
Rule 2: user and store errors become one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from redis.exceptions import RedisError

from relay.errors import RelayError
from relay.settings import Settings, load_settings
from relay.store.audit import AuditLog
from relay.store.redis_conn import async_client, resolve
from relay.store.redis_keys import Keys

PROG = "relay audit"


@asynccontextmanager
async def open_log(settings: Settings) -> AsyncIterator[AuditLog]:
    url, server = resolve(settings.redis)
    client = async_client(url, settings.redis)
    try:
        yield AuditLog(
            client,
            Keys(settings.redis.prefix),
            settings.audit.journal,
            timeout=settings.redis.timeout,
            retention_days=settings.audit.retention_days,
            address_key=settings.address_key,
        )
    finally:
        await client.aclose()
        if server is not None:
            server.stop()


def run_with_log(args: argparse.Namespace, body: Callable[[AuditLog], Awaitable[int]]) -> int:
    """Settings, log, body; user and store errors become one line on stderr and exit 2."""
    try:
        settings = load_settings(args.config)

        async def main() -> int:
            async with open_log(settings) as audit:
                return await body(audit)

        return asyncio.run(main())
    except (RelayError, RedisError, ValueError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
