"""The worked example of deploy/cluster/: its files are valid, and its HAProxy backend (PROXY v2
to every relay, checks that send one too) really carries mail to relays sharing a cluster.

The relay settings load as they are (secrets from the environment); HAProxy checks its own
file; then the example's SMTP backend lines run on loopback in front of two relays with
``proxy_protocol = true`` on the worker's Valkey Cluster: a relay that got no PROXY header would
drop the connection, so delivered mail and passing health checks show the pair works.
"""

from __future__ import annotations

import asyncio
import csv
import re
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from relay.service import Running
from relay.settings import load_settings
from relay.store.embedded import free_port
from tests.conftest import require_tool
from tests.support.cluster import ValkeyCluster
from tests.support.harness import asend, make_settings, message, start_relay
from tests.support.smtp_sink import Sink

pytestmark = [pytest.mark.timeout(90), pytest.mark.xdist_group("cluster")]

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "cluster"


def test_the_example_relay_settings_load(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RELAY_LINK_KEY", "example-link-key-0123456789")
    settings = load_settings(str(DEPLOY / "relay.toml"))
    assert settings.redis.url.startswith("redis+cluster://")
    assert settings.smtp.proxy_protocol and settings.redis.wait_replicas == 1
    # The web side trusts the same HAProxy hosts, which forward the visitor's address.
    assert settings.web.trusted_proxies == settings.smtp.proxy_from
    web = (DEPLOY / "haproxy.cfg").read_text().split("backend relays_web", 1)[1]
    assert "option forwardfor" in web and settings.web.client_header == "x-forwarded-for"


def test_the_example_haproxy_file_is_valid() -> None:
    haproxy = require_tool("haproxy")
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _loopback_config(example: str, listen: int, relays: list[int], stats: Path) -> str:
    """The example's SMTP frontend and backend, with loopback addresses and a stats socket."""
    smtp = example[example.index("frontend smtp_in") : example.index("frontend web_in")]
    smtp = smtp.replace("bind :25", f"bind 127.0.0.1:{listen}")
    servers = [line for line in smtp.splitlines() if line.strip().startswith("server ")]
    for line, port in zip(servers, relays, strict=False):
        smtp = smtp.replace(line, re.sub(r"\S+:2525", f"127.0.0.1:{port}", line))
    for line in servers[len(relays) :]:
        smtp = smtp.replace(line + "\n", "")
    return (
        f"global\n    stats socket {stats} level admin\n"
        "defaults\n    timeout connect 5s\n    timeout client 1m\n    timeout server 1m\n" + smtp
    )


@pytest.fixture
def haproxy_binary() -> str:
    return require_tool("haproxy")


@pytest.fixture
async def relays(
    cluster: ValkeyCluster, sink: Sink, tmp_path: Path
) -> AsyncIterator[list[Running]]:
    started = []
    for n in range(2):
        home = tmp_path / f"relay{n}"
        home.mkdir()
        settings = make_settings(
            home, cluster.url, sink.url,
            smtp={"proxy_protocol": True, "proxy_from": ["127.0.0.1/32"],
                  "allowed_clients": ["127.0.0.1/32"]},
        )  # fmt: skip
        started.append(await start_relay(settings, cluster.url))
    yield started
    for running in started:
        await running.stop()


def _stats(socket_path: Path) -> list[dict[str, str]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(socket_path))
        s.sendall(b"show stat\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    lines = data.decode().lstrip("# ").splitlines()
    return list(csv.DictReader(line for line in lines if line))


@pytest.fixture
async def balancer(
    haproxy_binary: str, relays: list[Running], tmp_path: Path
) -> AsyncIterator[int]:
    """HAProxy in front of the relays, once its checks passed (the relays answer from this
    test's event loop: waiting must not block it)."""
    listen, stats = free_port(), tmp_path / "haproxy.sock"
    config = tmp_path / "haproxy.cfg"
    ports = [r.smtp_port for r in relays]
    config.write_text(_loopback_config((DEPLOY / "haproxy.cfg").read_text(), listen, ports, stats))
    process = subprocess.Popen([haproxy_binary, "-db", "-f", str(config)])
    try:
        deadline = time.monotonic() + 30
        rows: list[dict[str, str]] = []
        while time.monotonic() < deadline:  # both servers checked (EHLO after a PROXY header)
            try:
                found = await asyncio.to_thread(_stats, stats)
                rows = [r for r in found if r.get("svname", "").startswith("relay")]
                if len(rows) == 2 and all(r["check_status"] == "L7OK" for r in rows):
                    break
            except OSError:
                pass
            await asyncio.sleep(0.2)
        else:
            status = [(r["svname"], r["check_status"], r["check_desc"]) for r in rows]
            raise AssertionError(f"HAProxy's checks never passed: {status}")
        yield listen
    finally:
        process.terminate()
        process.wait(timeout=10)


async def test_mail_through_the_example_balancer_reaches_the_relays(
    balancer: int, relays: list[Running], sink: Sink
) -> None:
    for n in range(6):
        data = message("<html><body>hi</body></html>", message_id=f"<lb{n}@shop.example>")
        code, text = await asend(balancer, data, [f"user{n}@example.org"])
        assert code == 250, text
    assert len(sink.handler.received) == 6
