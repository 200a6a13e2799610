"""The visitor behind a reverse proxy, on the real web server and a real HAProxy (issue: the web
listener took the proxy's address as every visitor's).

Raw HTTP over sockets, so that the forwarding headers go exactly as written; visitors are
distinct loopback addresses (127.0.0.2, 127.0.0.3), HAProxy reaches the relay from 127.0.0.9
(``tests.support.haproxy``). The evidence checked is the one stored in Redis with the consent
event; the limits are the listener's own.
"""

from __future__ import annotations

import logging
import socket
import time
import urllib.parse
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.model import Purpose
from relay.web.proxy_header import V2_SIGNATURE
from tests.conftest import require_tool
from tests.support.auditui import audit_users, basic
from tests.support.haproxy import (
    PROXY_SOURCE,
    connect,
    exchange,
    free_port,
    get,
    haproxy,
    http_mode,
    post,
    read_answer,
    tcp_mode,
)
from tests.support.web import API_TOKEN, WebServer, nonce_of

pytestmark = pytest.mark.timeout(60)

ALICE_AT, MALLORY_AT = "127.0.0.2", "127.0.0.3"
FORGED = ("X-Forwarded-For: 203.0.113.66", "Forwarded: for=203.0.113.66", "X-Real-IP: 203.0.113.66")


@pytest.fixture
def haproxy_binary() -> str:
    return require_tool("haproxy")


def serve(redis_url: str, **web: object) -> WebServer:
    return WebServer(redis_url, web=web).start()


@pytest.fixture
def servers() -> Iterator[list[WebServer]]:
    started: list[WebServer] = []
    yield started
    for server in started:
        server.stop()


def withdraw(web: WebServer, port: int, source: str, *headers: str) -> str | None:
    """Alice's withdrawal through ``port`` from ``source``; the evidence IP stored in Redis."""
    rkey = web.remember()
    web.grant((Purpose.CAMPAIGN_PERFORMANCE,))
    path = urllib.parse.urlsplit(
        web.minter.withdraw_url(rkey, "<m1@shop.example>", datetime.now(UTC))
    ).path
    page = exchange(port, source, get(path, *headers))
    assert page.status == 200, page.body[:300]
    body = urllib.parse.urlencode({"nonce": nonce_of(page.body.decode()), "lang": "en"})
    done = exchange(port, source, post(path, body, "User-Agent: Visitor/1.0", *headers))
    assert done.status == 200, done.body[:300]
    event = web.history()[-1]
    assert event.evidence["user_agent"] == "Visitor/1.0"
    return event.evidence.get("ip")


def test_a_header_from_an_untrusted_peer_never_reaches_the_evidence(
    redis_url: str, servers: list[WebServer]
) -> None:
    web = serve(redis_url)  # trusted_proxies = []: nobody, not even the loopback
    servers.append(web)
    assert withdraw(web, web.port, "127.0.0.1", *FORGED) == "127.0.0.1"


def test_a_trusted_peer_says_who_the_visitor_is_with_forwarded(
    redis_url: str, servers: list[WebServer]
) -> None:
    web = serve(redis_url, trusted_proxies=(PROXY_SOURCE,), client_header="forwarded")
    servers.append(web)
    header = 'Forwarded: for="[2001:db8::17]:4711";proto=https, for=' + PROXY_SOURCE
    # The X-Forwarded-For this proxy does not write is not read, even from the proxy.
    assert withdraw(web, web.port, PROXY_SOURCE, header, "X-Forwarded-For: 203.0.113.66") == (
        "2001:db8::17"
    )
    # The same header from a visitor's own address is ignored.
    assert withdraw(web, web.port, ALICE_AT, header) == ALICE_AT
    # An obfuscated client: its address is unknown, so the evidence has none (not the proxy's).
    assert withdraw(web, web.port, PROXY_SOURCE, "Forwarded: for=_hidden") is None


def test_a_malformed_header_from_a_trusted_proxy_counts_as_the_proxy_and_is_logged_once(
    redis_url: str, servers: list[WebServer], caplog: pytest.LogCaptureFixture
) -> None:
    web = serve(redis_url, trusted_proxies=("127.0.0.0/29", "127.0.0.9"))
    servers.append(web)
    caplog.set_level(logging.WARNING, "relay.web.client")
    bad = "X-Forwarded-For: 198.51.100.23 unknown"
    assert withdraw(web, web.port, PROXY_SOURCE, bad) == PROXY_SOURCE
    assert withdraw(web, web.port, PROXY_SOURCE, "X-Forwarded-For: 198.51.100.24, 999.0.0.1") == (
        PROXY_SOURCE
    )
    lines = [r.getMessage() for r in caplog.records if r.name == "relay.web.client"]
    assert len(lines) == 1 and "not an IP address" in lines[0], lines
    assert "198.51.100" not in lines[0] and not caplog.records[-1].exc_info
    # Trusted proxies skipped from the right (nginx real_ip_recursive): the visitor remains.
    xff = f"X-Forwarded-For: 6.6.6.6, 198.51.100.25, 127.0.0.4, {PROXY_SOURCE}"
    assert withdraw(web, web.port, PROXY_SOURCE, xff) == "198.51.100.25"


def test_through_haproxy_the_evidence_is_the_visitors_and_forgeries_are_ignored(
    redis_url: str, servers: list[WebServer], haproxy_binary: str, tmp_path: Path
) -> None:
    web = serve(redis_url, trusted_proxies=(PROXY_SOURCE,))
    servers.append(web)
    listen = free_port()
    with haproxy(haproxy_binary, tmp_path, http_mode(listen, web.port), listen):
        # HAProxy appends the address it saw to the forged list: the rightmost one is Alice.
        assert withdraw(web, listen, ALICE_AT, *FORGED) == ALICE_AT
        assert withdraw(web, listen, MALLORY_AT) == MALLORY_AT
    # Straight to the relay, the same forgery is nobody's word.
    assert withdraw(web, web.port, ALICE_AT, *FORGED) == ALICE_AT


def _hold(port: int, source: str, path: str) -> socket.socket:
    """A request in progress: its headers sent, its body not (the handler is waiting)."""
    sock = connect(port, source)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: links.example\r\nAuthorization: Bearer {API_TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 200\r\n"
        "Connection: close\r\n\r\n{".encode()
    )
    return sock


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(what)
        time.sleep(0.02)


def test_behind_haproxy_the_per_address_cap_counts_each_visitor(
    redis_url: str, servers: list[WebServer], haproxy_binary: str, tmp_path: Path
) -> None:
    web = serve(redis_url, trusted_proxies=(PROXY_SOURCE,), max_connections_per_client=2)
    servers.append(web)
    listen = free_port()
    with haproxy(haproxy_binary, tmp_path, http_mode(listen, web.port), listen):
        assert exchange(listen, ALICE_AT, get("/healthz")).status == 200  # the app is built
        active = _find_active(web.server.config.loaded_app if web.server else None)
        held = [_hold(listen, MALLORY_AT, "/api/v1/consent") for _ in range(2)]
        try:
            _wait_for(lambda: active.get(MALLORY_AT) == 2, f"requests not in progress: {active}")
            third = exchange(listen, MALLORY_AT, get("/healthz"))
            assert third.status == 503 and third.headers["retry-after"] == "5"
            # Alice, through the same proxy and its connections, is not Mallory.
            assert exchange(listen, ALICE_AT, get("/healthz")).status == 200
        finally:
            for sock in held:
                sock.close()
        _wait_for(lambda: MALLORY_AT not in active, "the count was not released")
        assert exchange(listen, MALLORY_AT, get("/healthz")).status == 200


def _find_active(app: object) -> dict[str, int]:
    """The per-visitor counts of the running application's ``RealClient`` middleware."""
    from relay.web.real_client import RealClient

    seen = 0
    while app is not None and seen < 20:
        if isinstance(app, RealClient):
            return app.active
        app = getattr(app, "middleware_stack", None) or getattr(app, "app", None)
        seen += 1
    raise AssertionError("no RealClient in the application")


def test_one_visitors_failed_logins_behind_haproxy_do_not_lock_out_the_auditor(
    redis_url: str, servers: list[WebServer], haproxy_binary: str, tmp_path: Path
) -> None:
    web = WebServer(redis_url, audit_users=audit_users(), web={"trusted_proxies": (PROXY_SOURCE,)})
    servers.append(web.start())
    listen = free_port()
    wrong = basic("nobody", "guess")["Authorization"]
    right = basic()["Authorization"]
    with haproxy(haproxy_binary, tmp_path, http_mode(listen, web.port), listen):
        for _ in range(10):
            assert (
                exchange(listen, MALLORY_AT, get("/audit/", f"Authorization: {wrong}")).status
                == 401
            )
        assert exchange(listen, MALLORY_AT, get("/audit/", f"Authorization: {right}")).status == 429
        assert exchange(listen, ALICE_AT, get("/audit/", f"Authorization: {right}")).status == 200


def test_proxy_protocol_v2_through_haproxy_gives_evidence_and_per_visitor_caps(
    redis_url: str, servers: list[WebServer], haproxy_binary: str, tmp_path: Path
) -> None:
    web = serve(
        redis_url, trusted_proxies=(PROXY_SOURCE,), proxy_protocol=True,
        max_connections_per_client=2, header_timeout=20.0,
    )  # fmt: skip
    servers.append(web)
    listen = free_port()
    with haproxy(haproxy_binary, tmp_path, tcp_mode(listen, web.port), listen):
        # Headers are not read in this mode: the PROXY header alone says who connected.
        assert withdraw(web, listen, ALICE_AT, *FORGED) == ALICE_AT
        held = [connect(listen, MALLORY_AT) for _ in range(2)]
        try:
            for sock in held:  # each connection is open at the relay, its request yet unsent
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            assert web.server is not None
            limits = web.server.config.http.limits  # type: ignore[union-attr]
            _wait_for(lambda: limits.by_client.get(MALLORY_AT) == 2, f"{limits.by_client}")
            third = exchange(listen, MALLORY_AT, get("/healthz"))
            assert third.status == 503, third
            assert exchange(listen, ALICE_AT, get("/healthz")).status == 200
            for sock in held:
                sock.sendall(b"Connection: close\r\n\r\n")
                assert read_answer(sock).status == 200
        finally:
            for sock in held:
                sock.close()


def test_proxy_protocol_is_required_from_trusted_peers_and_refused_from_others(
    redis_url: str, servers: list[WebServer]
) -> None:
    web = serve(redis_url, trusted_proxies=(PROXY_SOURCE,), proxy_protocol=True)
    servers.append(web)
    # A trusted peer without a header: the connection is refused, nothing is parsed as HTTP.
    missing = exchange(web.port, PROXY_SOURCE, get("/healthz"))
    assert missing.status == 400 and b"PROXY protocol header" in missing.body
    v1 = f"PROXY TCP4 {ALICE_AT} 127.0.0.1 4000 {web.port}\r\n".encode()
    # From anyone else a PROXY header would be a forgery.
    forged = exchange(web.port, ALICE_AT, v1 + get("/healthz"))
    assert forged.status == 400 and b"trusted_proxies" in forged.body
    # Others are served as themselves; the trusted proxy with its header (v1 here) too.
    assert exchange(web.port, ALICE_AT, get("/healthz")).status == 200
    with connect(web.port, ALICE_AT) as sock:  # a request trickled from its first byte is one
        sock.sendall(b"P")
        time.sleep(0.1)
        sock.sendall(post("/healthz", "")[1:])
        assert read_answer(sock).status == 405
    assert exchange(web.port, PROXY_SOURCE, v1 + get("/healthz")).status == 200
    local = V2_SIGNATURE + b"\x20\x00\x00\x00"  # LOCAL: the proxy's own health check
    assert exchange(web.port, PROXY_SOURCE, local + get("/healthz")).status == 200
