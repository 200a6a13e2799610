"""The PROXY protocol header (HAProxy's, versions 1 and 2) at the start of a web connection.

Stage: pure (no I/O), used by ``relay.web.limits`` before a byte reaches the HTTP parser.
Input: the first bytes a trusted proxy sent. Output: ``None`` while the header is incomplete,
else a ``ProxyHeader`` (its length, the client's address and port or ``None``); ``ValueError``
naming what is wrong when the bytes are no valid header.

Rule 1: the format is HAProxy's "The PROXY protocol" (doc/proxy-protocol.txt, versions 1 and
        2): v1 is one text line of at most 107 bytes ending in CRLF; v2 starts with the 12-byte
        signature, then version/command, family/transport and a 16-bit length.
Rule 2: ``LOCAL`` (v2, the proxy's own health checks), ``UNKNOWN`` (v1) and the families
        without an IP address (v2 ``AF_UNSPEC``, ``AF_UNIX``) leave the TCP peer as the client,
        as that document says a receiver must.
Rule 3: memory is bounded: a v1 line over 107 bytes, or a v2 header announcing more than
        ``MAX_V2_LENGTH`` bytes of addresses and TLVs, is refused before more is read.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "
V1_MAX = 107
MAX_V2_LENGTH = 4096


@dataclass(frozen=True)
class ProxyHeader:
    length: int  # bytes of the connection the header took
    source: tuple[str, int] | None  # the client's address and port; None: the peer is the client


def looks_like_proxy(data: bytes) -> bool:
    """Whether ``data`` starts with a PROXY header's first bytes: to tell an untrusted sender.
    Fewer bytes say nothing (an HTTP client may send "P" alone); the HTTP parser refuses them."""
    return data[:12] == V2_SIGNATURE or data[:6] == V1_PREFIX


def parse(buffer: bytes) -> ProxyHeader | None:
    """Rule 1: the header at the start of ``buffer``, ``None`` if more bytes are needed."""
    if buffer[:1] == V2_SIGNATURE[:1]:
        return _v2(buffer)
    if buffer[:1] == V1_PREFIX[:1]:
        return _v1(buffer)
    if not buffer:
        return None
    raise ValueError("the connection does not start with a PROXY protocol header")


def _v1(buffer: bytes) -> ProxyHeader | None:
    if not V1_PREFIX.startswith(buffer[:6]):
        raise ValueError("the connection does not start with a PROXY protocol header")
    end = buffer.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(buffer) >= V1_MAX:
            raise ValueError("PROXY v1: no CRLF within 107 bytes")
        return None
    fields = buffer[:end].split(b" ")
    if len(fields) >= 2 and fields[1] == b"UNKNOWN":
        return ProxyHeader(end + 2, None)
    if len(fields) != 6 or fields[1] not in (b"TCP4", b"TCP6"):
        raise ValueError("PROXY v1: not 'PROXY TCP4|TCP6 source destination sport dport'")
    version = 4 if fields[1] == b"TCP4" else 6
    try:
        source = ipaddress.ip_address(fields[2].decode("ascii"))
        ipaddress.ip_address(fields[3].decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError("PROXY v1: an address that is not one") from None
    if source.version != version:
        raise ValueError(f"PROXY v1: a source address that is not IPv{version}")
    ports = fields[4:6]
    if not all(p.isdigit() and len(p) <= 5 and int(p) <= 65535 for p in ports):
        raise ValueError("PROXY v1: a port that is not 0-65535")
    return ProxyHeader(end + 2, (str(source), int(ports[0])))


def _v2(buffer: bytes) -> ProxyHeader | None:
    if len(buffer) < 16:
        if not V2_SIGNATURE.startswith(buffer[:12]):
            raise ValueError("the connection does not start with a PROXY protocol header")
        return None
    if buffer[:12] != V2_SIGNATURE:
        raise ValueError("the connection does not start with a PROXY protocol header")
    version, command = buffer[12] >> 4, buffer[12] & 0x0F
    if version != 2 or command > 1:
        raise ValueError("PROXY v2: an unknown version or command")
    family = buffer[13] >> 4
    length = int.from_bytes(buffer[14:16], "big")
    if length > MAX_V2_LENGTH:
        raise ValueError(f"PROXY v2: more than {MAX_V2_LENGTH} bytes announced")
    total = 16 + length
    if len(buffer) < total:
        return None
    if command == 0 or family not in (1, 2):  # Rule 2: LOCAL, AF_UNSPEC, AF_UNIX
        return ProxyHeader(total, None)
    size = 4 if family == 1 else 16
    if length < 2 * size + 4:
        raise ValueError("PROXY v2: addresses shorter than their family needs")
    raw = buffer[16 : 16 + size]
    source = ipaddress.IPv4Address(raw) if family == 1 else ipaddress.IPv6Address(raw)
    port = int.from_bytes(buffer[16 + 2 * size : 18 + 2 * size], "big")
    return ProxyHeader(total, (str(source), port))


__all__ = ["MAX_V2_LENGTH", "V2_SIGNATURE", "ProxyHeader", "looks_like_proxy", "parse"]
