"""Fixtures of the inbound tests: an aiosmtpd sink, a raw-bytes sink, a whole relay in front."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.service import Running
from tests.support.harness import make_settings, start_relay
from tests.support.raw_sink import RawSink
from tests.support.relay import Relay, RelayFactory
from tests.support.smtp_sink import Sink


@pytest.fixture
async def raw_sink() -> AsyncIterator[RawSink]:
    s = await RawSink().start()
    yield s
    await s.stop()


def _factory(tmp_path: Path, redis_url: str, upstream: str, started: list[Running]) -> RelayFactory:
    async def make(redis_url: str = redis_url, **sections: dict[str, object]) -> Relay:
        settings = make_settings(tmp_path, redis_url, upstream, **sections)
        running = await start_relay(settings, redis_url)
        started.append(running)
        return Relay(running, settings, redis_url)

    return make


@pytest.fixture
async def relay_factory(tmp_path: Path, redis_url: str, sink: Sink) -> AsyncIterator[RelayFactory]:
    """Relays whose upstream is the aiosmtpd ``sink``."""
    started: list[Running] = []
    yield _factory(tmp_path, redis_url, sink.url, started)
    for running in started:
        await running.stop()


@pytest.fixture
async def raw_relay_factory(
    tmp_path: Path, redis_url: str, raw_sink: RawSink
) -> AsyncIterator[RelayFactory]:
    """Relays whose upstream is the ``raw_sink`` (it records the wire bytes)."""
    started: list[Running] = []
    yield _factory(tmp_path, redis_url, raw_sink.url, started)
    for running in started:
        await running.stop()
