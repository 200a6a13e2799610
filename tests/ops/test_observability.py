"""/metrics and /readyz on a running relay, after real traffic."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from relay.store.embedded import EmbeddedRedis
from tests.support.harness import HTML_WITH_PIXEL, asend, make_settings, message, start_relay
from tests.support.smtp_sink import Sink


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_metrics_count_messages_and_decisions_without_addresses(
    tmp_path: Path, redis_url: str
) -> None:
    sink = await Sink().start()
    settings = make_settings(tmp_path, redis_url, sink.url)
    running = await start_relay(settings, redis_url)
    try:
        code, _ = await asend(running.smtp_port, message(HTML_WITH_PIXEL), ["alice@example.org"])
        assert code == 250
        status, text = await asyncio.to_thread(_get, settings.web.public_url + "/metrics")
    finally:
        await running.stop()
        await sink.stop()
    assert status == 200
    assert 'relay_messages_total{result="accepted"}' in text
    assert "relay_smtp_sessions_total" in text and "relay_smtp_sessions_total 0.0" not in text
    assert 'relay_trackers_total{action="neutralise",purpose="campaign_performance"}' in text
    assert 'relay_upstream_replies_total{class="2xx"}' in text
    assert "relay_processing_seconds_bucket" in text
    assert "alice" not in text and "example.org" not in text


async def test_readyz_names_what_is_not_ready(
    tmp_path: Path, private_redis: Callable[[], EmbeddedRedis]
) -> None:
    server = private_redis()
    sink = await Sink().start()
    settings = make_settings(tmp_path, server.url, sink.url)
    running = await start_relay(settings, server.url)
    try:
        status, body = await asyncio.to_thread(_get, settings.web.public_url + "/readyz")
        assert status == 200, body
        await sink.stop()
        server.stop()
        status, body = await asyncio.to_thread(_get, settings.web.public_url + "/readyz")
        assert status == 503
        assert "redis" in body and "upstream" in body
        status, _ = await asyncio.to_thread(_get, settings.web.public_url + "/healthz")
        assert status == 200  # liveness does not depend on Redis or the upstream
    finally:
        await running.stop()
