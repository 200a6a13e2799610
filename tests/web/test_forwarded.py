"""Who the visitor is, from the headers and PROXY header a trusted proxy sends (pure parts).

Header shapes follow RFC 7239 sections 4, 6 and 7.4 (its own examples: quoted IPv6 with a port,
``for=unknown``, obfuscated ``_hidden``) and HAProxy's doc/proxy-protocol.txt (v1 lines, the v2
signature and address blocks); the recursive choice is nginx's ``real_ip_recursive on``.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

import pytest

from relay.web import proxy_header
from relay.web.forwarded import (
    FORWARDED,
    X_FORWARDED_FOR,
    forwarded_hops,
    networks,
    resolve,
)

PROXY = ("10.0.0.5", 40000)
TRUSTED = networks(["10.0.0.0/24", "2001:db8:cafe::/48"])


def xff(*lines: str, peer: tuple[str, int] = PROXY) -> tuple[str, int, bool, str]:
    found = resolve(peer, lines, X_FORWARDED_FOR, TRUSTED)
    return found.host, found.port, found.forwarded, found.problem


def fwd(*lines: str, peer: tuple[str, int] = PROXY) -> tuple[str, int, bool, str]:
    found = resolve(peer, lines, FORWARDED, TRUSTED)
    return found.host, found.port, found.forwarded, found.problem


def test_an_untrusted_peer_is_the_client_whatever_it_says() -> None:
    assert xff("203.0.113.9", peer=("198.51.100.1", 5)) == ("198.51.100.1", 5, False, "")
    assert fwd("for=203.0.113.9", peer=("198.51.100.1", 5)) == ("198.51.100.1", 5, False, "")
    nobody = resolve(PROXY, ["203.0.113.9"], X_FORWARDED_FOR, ())
    assert (nobody.host, nobody.forwarded) == ("10.0.0.5", False)


def test_x_forwarded_for_takes_the_rightmost_address_that_is_no_trusted_proxy() -> None:
    # A visitor's forged entry sits left of what the proxies appended: it is never reached.
    assert xff("6.6.6.6, 203.0.113.9, 10.0.0.7")[:3] == ("203.0.113.9", 0, True)
    # Several header lines are one list, in order.
    assert xff("6.6.6.6", "203.0.113.9", "10.0.0.7, 10.0.0.8")[0] == "203.0.113.9"
    assert xff("2001:db8::1")[0] == "2001:db8::1"
    assert xff("[2001:db8::1]:4711")[:2] == ("2001:db8::1", 4711)
    assert xff("203.0.113.9:61000")[:2] == ("203.0.113.9", 61000)
    assert xff("::ffff:203.0.113.9")[0] == "203.0.113.9"
    # Every hop a trusted proxy: the leftmost one.
    assert xff("10.0.0.9, 10.0.0.7")[0] == "10.0.0.9"


def test_forwarded_follows_rfc_7239() -> None:
    assert fwd('for="[2001:db8:cafe::17]:4711"', peer=("2001:db8:cafe::1", 1))[:3] == (
        "2001:db8:cafe::17", 4711, True
    )  # fmt: skip
    assert fwd("for=192.0.2.60;proto=http;by=203.0.113.43")[:3] == ("192.0.2.60", 0, True)
    assert fwd("for=192.0.2.43, for=198.51.100.17")[0] == "198.51.100.17"
    assert fwd("For=192.0.2.43,for=10.0.0.9")[0] == "192.0.2.43"
    assert fwd('for="192.0.2.43:8080";by="_proxy"')[:2] == ("192.0.2.43", 8080)
    assert fwd("for=192.0.2.43", "for=10.0.0.9;proto=https")[0] == "192.0.2.43"
    assert fwd("for=192.0.2.43, , for=10.0.0.9")[0] == "192.0.2.43"


def test_obfuscated_and_unknown_clients_have_no_address() -> None:
    assert fwd("for=_hidden, for=10.0.0.9")[:3] == ("_hidden", 0, True)
    assert fwd('for="_gazonk:_port"')[:3] == ("_gazonk", 0, True)
    assert fwd("for=unknown")[:3] == ("unknown", 0, True)
    # A trusted proxy that does not know the client is not the client either.
    assert fwd("for=192.0.2.43, for=unknown, for=10.0.0.9")[0] == "unknown"


@pytest.mark.parametrize(
    ("header", "lines", "problem"),
    [
        (X_FORWARDED_FOR, ["unknown"], "not an IP address"),
        (X_FORWARDED_FOR, ["203.0.113.9 198.51.100.1"], "not an IP address"),
        (X_FORWARDED_FOR, ["999.1.1.1"], "IPv4"),
        (X_FORWARDED_FOR, ["203.0.113.9:99999"], "port"),
        (X_FORWARDED_FOR, ["1.2.3.4, " * 70], "hops"),
        (X_FORWARDED_FOR, ["1" * 9000], "bytes"),
        (FORWARDED, ["for=[2001:db8::1]"], "token=value"),  # IPv6 must be quoted
        (FORWARDED, ["for=192.0.2.1:80"], "token=value"),  # so must a port
        (FORWARDED, ['for="192.0.2.1'], "unterminated"),
        (FORWARDED, ["proto=https"], "without for="),
        (FORWARDED, ["for=192.0.2.1;for=192.0.2.2"], "two for="),
        (FORWARDED, ["for=hidden"], "no address"),
        (FORWARDED, ['for="[192.0.2.1]"'], "IPv6"),
    ],
)
def test_a_malformed_header_leaves_the_proxy_and_says_why(
    header: str, lines: list[str], problem: str
) -> None:
    found = resolve(PROXY, lines, header, TRUSTED)
    assert (found.host, found.forwarded) == ("10.0.0.5", False)
    assert problem in found.problem
    assert "203.0.113.9" not in found.problem  # the reason names no visitor's address


def test_forwarded_parsing_is_linear() -> None:
    hops = forwarded_hops(['for="_' + "a" * 8000 + '"', "for=_" + "b" * 8000])
    assert hops[0].name.startswith("_a")
    found = resolve(PROXY, [":" * 8000 + "x"], X_FORWARDED_FOR, TRUSTED)
    assert found.problem


def v2(command: int, family: int, addresses: bytes, tlvs: bytes = b"") -> bytes:
    body = addresses + tlvs
    return proxy_header.V2_SIGNATURE + bytes([0x20 | command, family]) + struct.pack(
        "!H", len(body)
    ) + body  # fmt: skip


def test_proxy_header_v1_and_v2() -> None:
    line = b"PROXY TCP4 203.0.113.9 10.0.0.1 56324 8025\r\nGET / HTTP/1.1\r\n"
    found = proxy_header.parse(line)
    assert found is not None and found.source == ("203.0.113.9", 56324)
    assert line[found.length :].startswith(b"GET /")
    six = proxy_header.parse(b"PROXY TCP6 2001:db8::9 2001:db8::1 4711 80\r\n")
    assert six is not None and six.source == ("2001:db8::9", 4711)
    unknown = proxy_header.parse(b"PROXY UNKNOWN\r\n")
    assert unknown is not None and unknown.source is None
    v4 = socket.inet_aton("203.0.113.9") + socket.inet_aton("10.0.0.1")
    data = v2(1, 0x11, v4 + struct.pack("!HH", 56324, 8025), b"\x04\x00\x01x")
    found = proxy_header.parse(data + b"GET")
    assert found is not None and found.source == ("203.0.113.9", 56324)
    assert found.length == len(data)
    a6 = ipaddress.IPv6Address("2001:db8::9").packed + ipaddress.IPv6Address("::1").packed
    found = proxy_header.parse(v2(1, 0x21, a6 + struct.pack("!HH", 4711, 80)))
    assert found is not None and found.source == ("2001:db8::9", 4711)
    local = proxy_header.parse(v2(0, 0x00, b""))  # HAProxy's health check
    assert local is not None and local.source is None


def test_proxy_header_incomplete_then_complete() -> None:
    data = b"PROXY TCP4 203.0.113.9 10.0.0.1 56324 8025\r\n"
    assert all(proxy_header.parse(data[:n]) is None for n in range(len(data)))
    v4 = socket.inet_aton("203.0.113.9") * 2 + struct.pack("!HH", 1, 2)
    whole = v2(1, 0x11, v4)
    assert all(proxy_header.parse(whole[:n]) is None for n in range(len(whole)))


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"GET / HTTP/1.1\r\n", "does not start"),
        (b"PROXY TCP4 203.0.113.9 10.0.0.1 56324\r\n", "PROXY v1"),
        (b"PROXY TCP4 2001:db8::1 10.0.0.1 1 2\r\n", "IPv4"),
        (b"PROXY TCP4 203.0.113.9 10.0.0.1 1 99999\r\n", "port"),
        (b"PROXY TCP4 " + b"1" * 120, "107 bytes"),
        (proxy_header.V2_SIGNATURE + b"\x31\x11\x00\x0c", "version"),
        (proxy_header.V2_SIGNATURE + b"\x21\x11\xff\xff", "announced"),
        (v2(1, 0x11, b"\x01\x02\x03\x04"), "shorter"),
    ],
)
def test_an_invalid_proxy_header_is_refused(data: bytes, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        proxy_header.parse(data)


def test_what_an_untrusted_peer_sends_is_told_apart() -> None:
    assert proxy_header.looks_like_proxy(b"PROXY TCP4 ")
    assert proxy_header.looks_like_proxy(proxy_header.V2_SIGNATURE + b"\x21")
    assert not proxy_header.looks_like_proxy(b"P")  # a slow "POST" may begin so
    assert not proxy_header.looks_like_proxy(b"POST /c/x HTTP/1.1\r\n")
    assert not proxy_header.looks_like_proxy(b"PUT / HTTP/1.1\r\n")
