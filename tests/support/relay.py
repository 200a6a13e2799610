"""A running relay for tests: its port, settings and a way to record consent (real Redis)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from relay.model import ConsentEvent, EventType, Purpose
from relay.service import Running
from relay.settings import Settings
from relay.store.consent import RedisConsentStore
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
