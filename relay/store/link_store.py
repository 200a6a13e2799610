"""Web-side Redis records the pipeline writes when it mints links, and the pages read back.

Stage: async edge (Redis), called by the pipeline after filtering and by the web endpoints.
Input: gateway links minted for a message; recipient key -> address of linked recipients.
Output: ``gw:<link id>`` -> original tracker URL; ``rcpt:{<rkey>}:addr`` -> address.

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
Rule 5: ``LinkStore.store`` keeps links and addresses in Redis or, when Redis does not take
        them or no replica confirms them (cluster, Sentinel), in the write journal
        (``writeback``) with their absolute expiry; the replay sets them again without ever
        shortening an expiry a later message set (``SET_LUA``). Until then a gateway link
        answers the blank GIF (fail closed) and a page link says "unavailable"; nothing is
        lost. When Redis refuses them (an error reply: an ACL, out of memory) or neither
        Redis nor the disk took them it answers False: the message waits, since a page link
        without its address would answer "unknown".
Rule 6: the last-open days are kept in ``OPEN_BUCKETS`` sorted sets, a recipient in the one of
        its bucket (``Keys.last_open``), so that no single key holds every recipient and
        ``relay inactive`` reads the buckets one by one.
Rule 7: a last open is the controller's own: the member is the recipient key for the controller
        owning the consent stored without a controller (``Controller.scope`` ""), and
        ``<scope>|<recipient key>`` for any other, so an open of one controller's email never
        counts as activity for another's list (``open_member`` / ``member_owner``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from redis.exceptions import ResponseError

from relay.core.links import PAGE_TTL
from relay.model import GatewayLink
from relay.store import replicated
from relay.store.redis_conn import AsyncRedis, bounded
from relay.store.redis_keys import Keys
from relay.store.replicated import Command, Durability
from relay.store.writeback import Entry, WriteBack

log = logging.getLogger("relay.store.links")

ADDRESS_TTL_DAYS = PAGE_TTL.days + 30  # outlives the withdrawal links of the last message
LINK_TTL_DAYS = 400  # gateway and minimise targets
ERRORS = (Exception,)  # as in ledger: any failure of the client means "not stored"

# KEYS[1]: a link or address key. ARGV: value, expiry (unix ms). The value is set; the expiry
# only when it is later than the current one (Rule 4: a replay never shortens a newer expiry).
SET_LUA = """
redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL')
local current = redis.call('PEXPIRETIME', KEYS[1])
if current < 0 or current < tonumber(ARGV[2]) then
  redis.call('PEXPIREAT', KEYS[1], ARGV[2])
end
return 1
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def day_number(now: datetime) -> int:
    """Days since 1970-01-01 (UTC): the only trace a minimised open leaves."""
    return (now.astimezone(UTC) - _EPOCH).days


class LinkStore:
    """The pipeline's writes of links and addresses (Rule 4)."""

    def __init__(
        self,
        client: AsyncRedis,
        keys: Keys,
        *,
        timeout: float = 2.0,
        durability: Durability | None = None,
        writeback: WriteBack | None = None,
    ) -> None:
        self.client = client
        self.keys = keys
        self.timeout = timeout
        self.durability = durability or Durability.off()
        self.writeback = writeback

    async def store(
        self, links: Sequence[GatewayLink], addresses: Mapping[str, str], ttl_days: int
    ) -> bool:
        """Rule 5: True when Redis or the write journal holds them."""
        if not links and not addresses:
            return True
        now_ms = int(time.time() * 1000)
        link_rows = [(k.link_id, k.target, now_ms + ttl_days * 86_400_000) for k in links]
        address_rows = [
            (rkey, address, now_ms + ADDRESS_TTL_DAYS * 86_400_000)
            for rkey, address in addresses.items()
        ]
        commands = [
            Command(("SET", self.keys.gateway_link(i), v, "PXAT", t), self.keys.gateway_link(i))
            for i, v, t in link_rows
        ] + [
            Command(
                ("SET", self.keys.recipient_address(r), v, "PXAT", t),
                self.keys.recipient_address(r),
            )
            for r, v, t in address_rows
        ]
        try:
            _replies, confirmed = await bounded(
                replicated.execute(self.client, commands, self.durability),
                self.timeout + self.durability.timeout_ms / 1000,
            )
        except ResponseError as exc:
            # Redis refused them (an ACL, out of memory): a replay would be refused too.
            log.warning("Redis refused %d link(s) and address(es): %s", len(commands), exc)
            return False
        except ERRORS as exc:
            log.warning("could not store %d link(s) and address(es): %s", len(commands), exc)
            confirmed = False
        if confirmed:
            return True
        if self.writeback is None:
            return False
        try:
            await self.writeback.add("links", links=link_rows, addresses=address_rows)
        except OSError as exc:
            log.error("links not journalled (%s): %d link(s) not kept", exc, len(commands))
            return False
        return True

    async def replay(self, entries: Sequence[Entry]) -> list[bool]:
        """Handler of the write journal's ``links`` entries."""
        commands: list[Command] = []
        for entry in entries:
            for link_id, target, expires in entry["links"]:
                key = self.keys.gateway_link(str(link_id))
                commands.append(replicated.script(SET_LUA, [key], [target, int(expires)]))
            for rkey, address, expires in entry["addresses"]:
                key = self.keys.recipient_address(str(rkey))
                commands.append(replicated.script(SET_LUA, [key], [address, int(expires)]))
        _replies, confirmed = await replicated.execute(self.client, commands, self.durability)
        return [confirmed] * len(entries)


async def store_gateway_links(
    client: AsyncRedis, keys: Keys, links: Sequence[GatewayLink], ttl_days: int
) -> None:
    """Store each link's original tracker URL under its id (kept ``ttl_days``)."""
    if not links:
        return
    async with client.pipeline(transaction=False) as pipe:
        for link in links:
            pipe.set(keys.gateway_link(link.link_id), link.target, ex=ttl_days * 86400)
        await pipe.execute()


async def remember_recipients(
    client: AsyncRedis, keys: Keys, addresses: Mapping[str, str], ttl_days: int = ADDRESS_TTL_DAYS
) -> None:
    """Keep recipient key -> address for every recipient whose message carries our links."""
    if not addresses:
        return
    async with client.pipeline(transaction=False) as pipe:
        for rkey, address in addresses.items():
            pipe.set(keys.recipient_address(rkey), address, ex=ttl_days * 86400)
        await pipe.execute()


async def remember_recipient(client: AsyncRedis, keys: Keys, rkey: str, address: str) -> None:
    await remember_recipients(client, keys, {rkey: address})


async def recipient_address(client: AsyncRedis, keys: Keys, rkey: str) -> str | None:
    value = await client.get(keys.recipient_address(rkey))
    return _text(value)


async def remember_notice(client: AsyncRedis, keys: Keys, notice_hash: str, text: str) -> None:
    """Keep the wording behind a proof's notice hash (once; the same hash is the same text)."""
    await client.set(keys.notice_text(notice_hash), text, nx=True)


async def notice_text(client: AsyncRedis, keys: Keys, notice_hash: str) -> str | None:
    return _text(await client.get(keys.notice_text(notice_hash)))


def open_member(rkey: str, scope: str = "") -> str:
    """The member of a last-open day: whose open, for which controller (Rule 7)."""
    return f"{scope}|{rkey}" if scope else rkey


def member_owner(member: str) -> tuple[str, str]:
    """(controller scope, recipient key) of a last-open member (Rule 7)."""
    scope, _, rkey = member.rpartition("|")
    return scope, rkey


async def note_open_day(
    client: AsyncRedis, keys: Keys, rkey: str, now: datetime, scope: str = ""
) -> None:
    await client.zadd(keys.last_open(rkey), {open_member(rkey, scope): day_number(now)})


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return str(value)
