"""Several relays on one Valkey Cluster, end to end: real SMTP in and out, real web endpoints,
a real cluster of 3 masters and 3 replicas on loopback, and a master killed mid-stream.

What is shown: any relay serves any retry or click (consent, ledger, links and the audit trail
live in the cluster); while a master fails over the relays keep relaying and decide fail
closed for the recipients whose slots it served; afterwards every message was delivered once
per recipient, every delivery has exactly one decision record, nothing journalled is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.service import Running
from relay.settings import Settings
from relay.store.audit import AuditLog
from relay.store.consent import RedisConsentStore
from relay.store.redis_keys import Keys
from tests.support.cluster import ValkeyCluster
from tests.support.harness import HTML_WITH_PIXEL, PIXEL, asend, make_settings, message, start_relay
from tests.support.redis import async_client
from tests.support.smtp_sink import Sink

pytestmark = [pytest.mark.timeout(180), pytest.mark.xdist_group("cluster")]

API_TOKEN = "test-api-token"
StartRelay = Callable[[str], Awaitable[Running]]


@pytest.fixture
async def relays(tmp_path: Path, sink: Sink) -> AsyncIterator[StartRelay]:
    started: list[Running] = []

    async def start(url: str) -> Running:
        home = tmp_path / f"relay{len(started)}"
        home.mkdir()
        settings = make_settings(home, url, sink.url, redis={"url": url, "timeout": 0.5})
        running = await start_relay(settings, url)
        started.append(running)
        return running

    yield start
    for running in started:
        await running.stop()


def _grant_through_api(settings: Settings, address: str) -> None:
    body = json.dumps(
        {
            "address": address,
            "event": "granted",
            "purposes": ["campaign_performance"],
            "method": "checkbox",
            "source": {"form_id": "signup", "page": "https://shop.example/signup"},
            "notice": {"version": "v3"},
        }
    ).encode()
    request = urllib.request.Request(
        settings.web.public_url + "/api/v1/consent",
        data=body,
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status in (200, 201), reply.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _gateway(url: str) -> tuple[int, str]:
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(url, timeout=10) as reply:
            return reply.status, reply.headers.get("Location", "")
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("Location", "")


async def test_two_relays_share_consent_ledger_links_and_audit(
    cluster: ValkeyCluster, relays: StartRelay, sink: Sink
) -> None:
    one, two = await relays(cluster.url), await relays(cluster.url)
    await asyncio.to_thread(_grant_through_api, one.settings, "carol@example.org")
    rcpts = ["alice@example.org", "carol@example.org"]
    data = message(HTML_WITH_PIXEL, message_id="<shared1@shop.example>")
    # Relay one delivers alice, carol's group is deferred: the client retries through two.
    sink.handler.faults.fail_data_for["carol@example.org"] = "451 4.3.0 try later"
    code, _ = await asend(one.smtp_port, data, rcpts)
    assert code == 451
    code, _ = await asend(two.smtp_port, data, rcpts)
    assert code == 250
    assert len(sink.handler.copies_for("alice@example.org")) == 1  # not again: shared ledger
    (carol,) = sink.handler.copies_for("carol@example.org")
    # Consent recorded through relay one's API decided relay two's copy: kept via the gateway,
    # and the link minted by relay two is served by relay one's web side.
    assert PIXEL.encode() not in carol.data
    found = re.search(rb"(http://127\.0\.0\.1:\d+)/g/([A-Za-z0-9_.~-]+)", carol.data)
    assert found is not None
    token = found.group(2).decode()
    status, location = await asyncio.to_thread(_gateway, f"{one.settings.web.public_url}/g/{token}")
    assert (status, location) == (302, PIXEL)
    # Either relay's audit trail: both attempts, one record per recipient and attempt.
    client = async_client(cluster.url)
    log = AuditLog(client, Keys(one.settings.redis.prefix), "/nonexistent", timeout=5,
                   retention_days=30)  # fmt: skip
    records = await log.by_message("<shared1@shop.example>")
    await client.aclose()
    replies = sorted((r.rcpt, r.upstream_reply[:3]) for r in records)
    assert replies == [
        ("alice@example.org", "(de"),  # "(delivered earlier) 250 ..." on the retry
        ("alice@example.org", "250"),
        ("carol@example.org", "250"),
        ("carol@example.org", "451"),
    ]


def _address_on(cluster: ValkeyCluster, store: RedisConsentStore, master_port: int) -> str:
    keys = store.keys
    for n in range(10_000):
        address = f"reader{n}@example.org"
        if cluster.master_of(keys.consent_state(store.rkey(address))).port == master_port:
            return address
    raise AssertionError("no recipient on that master")


async def _send_until_accepted(
    running: list[Running], n: int, data: bytes, rcpts: list[str]
) -> int:
    """Like an MTA: a 4xx is retried (through the next relay) until 250; the attempts."""
    for attempt in range(1, 60):
        relay = running[(n + attempt) % len(running)]
        code, text = await asend(relay.smtp_port, data, rcpts)
        if code == 250:
            return attempt
        assert 400 <= code < 500, text
        await asyncio.sleep(0.25)
    raise AssertionError(f"message {n} was never accepted")


async def test_a_master_killed_mid_stream_loses_and_doubles_nothing(
    private_cluster: ValkeyCluster, relays: StartRelay, sink: Sink
) -> None:
    cluster = private_cluster
    running = [await relays(cluster.url), await relays(cluster.url)]
    prefix = running[0].settings.redis.prefix
    client = async_client(cluster.url, 2.0)
    store = RedisConsentStore(client, Keys(prefix), running[0].settings.address_key,
                              running[0].settings.consent)  # fmt: skip
    victim = cluster.primaries()[0]
    reader = _address_on(cluster, store, victim.port)  # consented; their slot dies
    survivor = cluster.primaries()[1]
    writer = _address_on(cluster, store, survivor.port)  # consented; their slot lives
    for address in (reader, writer):
        await asyncio.to_thread(_grant_through_api, running[1].settings, address)
    rcpts = ["alice@example.org", reader, writer]
    total, killed_after = 48, 14
    done = 0
    attempts: list[int] = []

    async def sender(first: int) -> None:
        nonlocal done
        for n in range(first, total, 4):
            data = message(HTML_WITH_PIXEL, message_id=f"<s{n}@shop.example>")
            attempts.append(await _send_until_accepted(running, n, data, rcpts))
            done += 1
            if done == killed_after:
                cluster.kill(victim)  # SIGKILL: no goodbye to clients or replicas

    await asyncio.gather(*(sender(k) for k in range(4)))
    await asyncio.to_thread(cluster.wait_healthy, 60)
    # The operator restarts the dead node: it rejoins as the replica of the promoted one, so
    # the replayed writes can be confirmed again (until then they stay journalled).
    await asyncio.to_thread(cluster.restart, victim)
    # After the failover: the consent survived (it was WAITed for), links are served again.
    after = message(HTML_WITH_PIXEL, message_id="<after@shop.example>")
    assert await _send_until_accepted(running, 0, after, rcpts) >= 1
    for relay in running:  # what the upkeep task does every few seconds
        assert relay.writeback is not None
        for _round in range(40):
            with contextlib.suppress(Exception):  # the first rounds may meet the old slot map
                await relay.replay_journals()
            if not relay.writeback.pending() and not relay.pipeline.audit.journal.pending():
                break
            await asyncio.sleep(0.25)
        assert not relay.writeback.pending(), relay.writeback.journal.claimed.read_text()[:2000]
        assert not relay.pipeline.audit.journal.pending()

    ids = [f"<s{n}@shop.example>" for n in range(total)] + ["<after@shop.example>"]
    # Delivered exactly once per recipient.
    copies = Counter(
        (re.search(rb"Message-ID: (<[^>]+>)", r.data).group(1).decode(), rcpt)  # type: ignore[union-attr]
        for r in sink.handler.received
        for rcpt in r.rcpt_tos
    )
    assert copies == Counter({(mid, rcpt): 1 for mid in ids for rcpt in rcpts})
    # Exactly one decision record per delivery (and none lost in the failover).
    log = AuditLog(client, Keys(prefix), "/nonexistent", timeout=5, retention_days=30,
                   address_key=running[0].settings.address_key)  # fmt: skip
    for mid in ids:
        records = await log.by_message(mid)
        delivered = Counter(r.rcpt for r in records if r.upstream_reply.startswith("250"))
        assert delivered == Counter(rcpts), (mid, records)
        assert len({r.record_id for r in records}) == len(records)
    # Fail closed while the reader's slot had no master: no gateway link, no pixel; before the
    # kill and after the failover the consent held.
    reader_copies = [r.data for r in sink.handler.received if reader in r.rcpt_tos]
    assert all(PIXEL.encode() not in data for data in reader_copies)
    with_link = [b"/g/" in data for data in reader_copies]
    assert with_link[0] and with_link[-1]
    assert not all(with_link), "no message was decided while the master was down"
    # The writer kept consent throughout: every copy links through the gateway, and every
    # link, minted while a third of the link keys had no master, is served (journalled, then
    # replayed): the gateway redirects, the withdrawal page knows the address.
    writer_copies = [r.data for r in sink.handler.received if writer in r.rcpt_tos]
    assert all(b"/g/" in data for data in writer_copies)
    web = running[0].settings.web.public_url
    tokens = {
        (kind.decode(), token.decode())
        for data in writer_copies
        for kind, token in re.findall(rb"http://127\.0\.0\.1:\d+/([gw])/([A-Za-z0-9_.~-]+)", data)
    }
    assert {kind for kind, _token in tokens} == {"g", "w"}
    for kind, token in sorted(tokens):
        status, location = await asyncio.to_thread(_gateway, f"{web}/{kind}/{token}")
        assert (status, location) == ((302, PIXEL) if kind == "g" else (200, "")), kind
    since = datetime.now(UTC) - timedelta(hours=1)
    assert len(await log.search(reader, since, None, 1000)) >= total + 1
    await client.aclose()
