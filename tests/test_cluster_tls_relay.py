"""The relay on a Redis Cluster it can reach over TLS only (``rediss+cluster://``).

A real cluster of 3 masters and 3 replicas (Debian's ``redis-server``, built with TLS; the
embedded Valkey has none) whose nodes listen for TLS alone (``--port 0``), cluster bus and
replication over TLS too, with a certificate the relay is told to trust through the URL's
``ssl_ca_certs``. Shown: consent, gateway links, ledger and audit work end to end, and every
write was confirmed by a replica (nothing left in the write journal); a relay that does not
trust the nodes' certificate reads no consent and keeps no tracker for anyone (fail closed),
yet delivers the message once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.support.cluster import ValkeyCluster
from tests.support.harness import HTML_WITH_PIXEL, PIXEL, asend, make_settings, message, start_relay
from tests.support.relay import Relay
from tests.support.smtp_sink import Sink
from tests.support.tls import self_signed

pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("cluster")]

ALICE, BOB = "alice@example.org", "bob@example.org"


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    binary = require_tool("redis-server")
    folder = tmp_path_factory.mktemp("tls-cluster")
    cluster = ValkeyCluster(folder / "nodes", binary=binary, tls=self_signed(folder / "tls"))
    yield cluster.start()
    cluster.stop()


async def test_consent_links_ledger_and_audit_over_a_tls_only_cluster(
    tls_cluster: ValkeyCluster, tmp_path: Path, sink: Sink
) -> None:
    url = tls_cluster.url
    assert url.startswith("rediss+cluster://")
    settings = make_settings(tmp_path, url, sink.url, redis={"url": url, "timeout": 2.0})
    running = await start_relay(settings, url)
    try:
        await Relay(running, settings, url).grant(ALICE)
        code, reply = await asend(running.smtp_port, message(HTML_WITH_PIXEL), [ALICE, BOB])
        assert code == 250, reply
        alice = sink.handler.copies_for(ALICE)[0].data
        bob = sink.handler.copies_for(BOB)[0].data
        assert b"/g/" in alice and PIXEL.encode() not in alice  # consent read: the gateway
        assert PIXEL.encode() not in bob and b"/g/" not in bob  # none: nothing fetched
        records = await running.pipeline.audit.by_message("<m1@shop.example>")
        assert sorted(r.rcpt for r in records) == [ALICE, BOB]
        assert not running.writeback or not running.writeback.pending()  # replicas confirmed
    finally:
        await running.stop()


async def test_a_relay_that_does_not_trust_the_nodes_keeps_no_tracker(
    tls_cluster: ValkeyCluster, tmp_path: Path, sink: Sink
) -> None:
    good = tls_cluster.url
    granting = make_settings(tmp_path / "a", good, sink.url, redis={"url": good})
    (tmp_path / "a").mkdir()
    running = await start_relay(granting, good)
    await Relay(running, granting, good).grant(ALICE)
    await running.stop()
    stranger = self_signed(tmp_path / "other", "stranger.test")
    bad = good.partition("?")[0] + f"?ssl_ca_certs={stranger.cert}"
    (tmp_path / "b").mkdir()
    settings = make_settings(tmp_path / "b", bad, sink.url, redis={"url": bad, "timeout": 1.0})
    running = await start_relay(settings, bad)
    try:
        code, reply = await asend(running.smtp_port, message(HTML_WITH_PIXEL), [ALICE])
    finally:
        await running.stop()
    assert code == 250, reply  # delivered, decided fail closed
    (copy,) = sink.handler.copies_for(ALICE)
    assert PIXEL.encode() not in copy.data and b"/g/" not in copy.data
