"""A running relay for tests: its port, settings and a way to record consent (real Redis)."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from relay.core.controllers import build_controllers
from relay.model import ConsentEvent, EventType, Purpose
from relay.service import Running
from relay.settings import Settings
from relay.store.consent import RedisConsentStore
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys
from tests.support.redis import async_client


class Relay:
    def __init__(self, running: Running, settings: Settings, redis_url: str) -> None:
        self.running = running
        self.settings = settings
        self.redis_url = redis_url

    @property
    def port(self) -> int:
        return self.running.smtp_port

    async def grant(self, address: str, *purposes: Purpose) -> None:
        client = async_client(self.redis_url)
        store = RedisConsentStore(
            client, Keys(self.settings.redis.prefix), self.settings.address_key,
            self.settings.consent,
        )  # fmt: skip
        await store.record(
            ConsentEvent(
                event=EventType.GRANTED,
                purposes=purposes or (Purpose.CAMPAIGN_PERFORMANCE,),
                address=address,
                occurred_at=datetime.now(UTC),
                actor="admin",
                method="admin",
            )
        )
        await client.aclose()


class RelayFactory(Protocol):
    async def __call__(self, redis_url: str = ..., **sections: dict[str, object]) -> Relay: ...


class OutboxRelay:
    """A running relay whose upstream is a ``file:`` outbox, with its consent store (every
    controller of its settings): what the controller journeys send and read back."""

    def __init__(self, running: Running, settings: Settings, outbox: Path, redis_url: str) -> None:
        self.running, self.settings, self.outbox = running, settings, outbox
        self.client: AsyncRedis = async_client(redis_url)
        self.store = RedisConsentStore(
            self.client, Keys(settings.redis.prefix), settings.address_key, settings.consent,
            controllers=build_controllers(settings.controllers),
        )  # fmt: skip
        self.seen: set[Path] = set()

    def next_delivered(self) -> EmailMessage:
        """The one message the outbox received since the last call."""
        new = [p for p in sorted(self.outbox.glob("*.eml")) if p not in self.seen]
        assert len(new) == 1, new
        self.seen.add(new[0])
        parsed = email.message_from_bytes(new[0].read_bytes(), policy=email.policy.default)
        return parsed
