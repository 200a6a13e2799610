"""Web-side Redis records the pipeline writes when it mints links, and the pages read back.

Stage: async edge (Redis), called by the pipeline after filtering and by the web endpoints.
Input: gateway links minted for a message; recipient key -> address of linked recipients.
Output: ``gw:<link id>`` -> original tracker URL; ``rcpt:addr:<rkey>`` -> address.

Rule 1: links carry only the recipient key; the address a withdrawal must be recorded with
        (the proof names the address, SPEC section 1) is kept server-side, in a value, never in
        a key or a URL. It expires with the longest-lived link that needs it and is refreshed
        at every message, so an address no longer written to disappears by itself.
Rule 2: the deliverability minimisation keeps one number per recipient: the day of the last
        open, overwritten (``ZADD`` replaces the score). No time, IP or user agent, ever.
Rule 3: writes are idempotent (``SET`` with expiry, ``ZADD``, ``SET NX``): a retried message
        or a re-opened email writes the same thing again.
Rule 4: the wording each page showed is kept by its hash (``notice:<hash>``), never expiring:
        it is what a proof's ``notice.hash`` refers to.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from redis.asyncio import Redis

from relay.core.links import PAGE_TTL
from relay.model import GatewayLink
from relay.store.redis_keys import Keys

ADDRESS_TTL_DAYS = PAGE_TTL.days + 30  # outlives the withdrawal links of the last message
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def day_number(now: datetime) -> int:
    """Days since 1970-01-01 (UTC): the only trace a minimised open leaves."""
    return (now.astimezone(UTC) - _EPOCH).days


async def store_gateway_links(
    client: Redis, keys: Keys, links: Sequence[GatewayLink], ttl_days: int
) -> None:
    """Store each link's original tracker URL under its id (kept ``ttl_days``)."""
    if not links:
        return
    async with client.pipeline(transaction=False) as pipe:
        for link in links:
            pipe.set(keys.gateway_link(link.link_id), link.target, ex=ttl_days * 86400)
        await pipe.execute()


async def remember_recipients(
    client: Redis, keys: Keys, addresses: Mapping[str, str], ttl_days: int = ADDRESS_TTL_DAYS
) -> None:
    """Keep recipient key -> address for every recipient whose message carries our links."""
    if not addresses:
        return
    async with client.pipeline(transaction=False) as pipe:
        for rkey, address in addresses.items():
            pipe.set(keys.recipient_address(rkey), address, ex=ttl_days * 86400)
        await pipe.execute()


async def remember_recipient(client: Redis, keys: Keys, rkey: str, address: str) -> None:
    await remember_recipients(client, keys, {rkey: address})


async def recipient_address(client: Redis, keys: Keys, rkey: str) -> str | None:
    value = await client.get(keys.recipient_address(rkey))
    return _text(value)


async def remember_notice(client: Redis, keys: Keys, notice_hash: str, text: str) -> None:
    """Keep the wording behind a proof's notice hash (once; the same hash is the same text)."""
    await client.set(keys.notice_text(notice_hash), text, nx=True)


async def notice_text(client: Redis, keys: Keys, notice_hash: str) -> str | None:
    return _text(await client.get(keys.notice_text(notice_hash)))


async def note_open_day(client: Redis, keys: Keys, rkey: str, now: datetime) -> None:
    await client.zadd(keys.last_open(), {rkey: day_number(now)})


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)
