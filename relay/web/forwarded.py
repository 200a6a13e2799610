"""Who the visitor is behind reverse proxies: ``Forwarded`` and ``X-Forwarded-For``, read only
when the TCP peer is a trusted proxy.

Stage: pure (no I/O), used by ``relay.web.real_client`` for every HTTP request.
Input: the peer's address, the request's header lines of one kind, the trusted networks.
Output: a ``Resolved`` client: an IP address, or an identifier the proxy gave instead (RFC 7239
``unknown`` or an obfuscated ``_name``), or the peer itself with the reason a header was refused.

Rule 1: headers count only when the peer is in ``[web] trusted_proxies``; the default, an empty
        list, trusts nobody, so a visitor's own header never reaches the evidence.
Rule 2: only the header the proxies write (``[web] client_header``) is read: a proxy that
        appends ``X-Forwarded-For`` passes a visitor's forged ``Forwarded`` through untouched.
Rule 3: the list is walked from the right (the hop the nearest proxy appended), skipping hops
        that are themselves trusted proxies; the first other hop is the client, as nginx's
        ``real_ip_recursive on`` does (ngx_http_realip_module: "the original client address
        that matches one of the trusted addresses is replaced by the last non-trusted address
        sent in the request header field", https://nginx.org/en/docs/http/
        ngx_http_realip_module.html#real_ip_recursive). Every hop trusted: the leftmost one.
Rule 4: ``Forwarded`` follows RFC 7239 section 4 and 6: ``for=`` is an IPv4 address, a quoted
        ``"[IPv6]"``, either with ``:port`` (quoted), ``unknown``, or an obfuscated identifier
        ``_...`` (the client is then unknown: no IP in the evidence). Several header lines are
        one list, in order (RFC 9110 section 5.3).
Rule 5: anything else (a value that is no address, an element without ``for=``, bad quoting,
        more than ``MAX_HOPS`` hops or ``MAX_BYTES`` bytes) is malformed: the peer's address
        is used and the reason says what was wrong, without the header's content.
Linear in the header's length: one pass with anchored regular expressions, no backtracking.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

FORWARDED = "forwarded"
X_FORWARDED_FOR = "x-forwarded-for"
CLIENT_HEADERS = (X_FORWARDED_FOR, FORWARDED)
MAX_HOPS = 64
MAX_BYTES = 8192

_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\\x00-\x08\x0a-\x1f\x7f]|\\[\x09\x20-\x7e\x80-\xff])*"'
_PAIR = re.compile(rf"[ \t]*({_TOKEN})=({_TOKEN}|{_QUOTED})[ \t]*")
_OBF = r"_[A-Za-z0-9._-]+"
_NODE = re.compile(
    rf"(?:(?P<v4>[0-9.]+)|\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<unknown>unknown)|(?P<obf>{_OBF}))"
    rf"(?::(?:(?P<port>[0-9]{{1,5}})|{_OBF}))?",
    re.IGNORECASE,
)
_XFF_NODE = re.compile(
    r"(?:(?P<v4>[0-9.]+)(?::(?P<port4>[0-9]{1,5}))?|(?P<bare6>[0-9A-Fa-f:.]+)"
    r"|\[(?P<v6>[0-9A-Fa-f:.]+)\](?::(?P<port6>[0-9]{1,5}))?)"
)


@dataclass(frozen=True)
class Hop:
    """One ``for=`` (or ``X-Forwarded-For`` entry): an address, or what the proxy said instead."""

    address: IpAddress | None
    port: int = 0
    name: str = ""  # "unknown" or an obfuscated identifier when ``address`` is None


@dataclass(frozen=True)
class Resolved:
    """The client of one request: ``host`` is an IP address, or an identifier (no IP known)."""

    host: str
    port: int
    forwarded: bool  # True when a header from a trusted proxy named it
    problem: str = ""  # why a trusted proxy's header was not used (Rule 5)


def networks(values: Iterable[str]) -> tuple[IpNetwork, ...]:
    """``["10.0.0.0/8", "::1"]`` -> networks; ``ValueError`` naming the value that is none."""
    found = []
    for value in values:
        try:
            found.append(ipaddress.ip_network(value, strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {value!r}") from None
    return tuple(found)


def trusted(address: IpAddress | None, nets: Sequence[IpNetwork]) -> bool:
    if address is None:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # a dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d
    return any(address in net for net in nets)


def ip_of(text: str) -> IpAddress | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _port(text: str | None) -> int:
    if text is None:
        return 0
    if int(text) > 65535:
        raise ValueError("a port above 65535")
    return int(text)


def _address(text: str, version: int) -> IpAddress:
    found = ip_of(text)
    if found is None or found.version != version:
        raise ValueError(f"an IPv{version} address that is not one")
    return found


def _unquote(value: str) -> str:
    if not value.startswith('"'):
        return value
    return re.sub(r"\\(.)", r"\1", value[1:-1])


def forwarded_hops(lines: Sequence[str]) -> list[Hop]:
    """The ``for=`` of every element of ``Forwarded`` lines, in order (Rule 4); ValueError."""
    hops: list[Hop] = []
    for line in lines:
        for element in _split(line, ","):
            if not element.strip():
                continue  # RFC 9110 5.6.1: empty list elements are ignored
            node = None
            for pair in _split(element, ";"):
                match = _PAIR.fullmatch(pair)
                if match is None:
                    raise ValueError("Forwarded: an element that is not token=value pairs")
                if match.group(1).lower() == "for":
                    if node is not None:
                        raise ValueError("Forwarded: two for= in one element")
                    node = _unquote(match.group(2))
            if node is None:
                raise ValueError("Forwarded: an element without for=")
            hops.append(_forwarded_node(node))
            if len(hops) > MAX_HOPS:
                raise ValueError(f"Forwarded: more than {MAX_HOPS} hops")
    return hops


def _forwarded_node(node: str) -> Hop:
    match = _NODE.fullmatch(node)
    if match is None:
        raise ValueError("Forwarded: a for= that is no address, unknown or _identifier")
    port = _port(match.group("port"))
    if match.group("v4"):
        return Hop(_address(match.group("v4"), 4), port)
    if match.group("v6"):
        return Hop(_address(match.group("v6"), 6), port)
    return Hop(None, port, (match.group("unknown") or match.group("obf")).lower())


def _split(text: str, separator: str) -> list[str]:
    """``text`` cut at ``separator`` outside quoted strings (one pass)."""
    parts, start, quoted, escaped = [], 0, False, False
    for i, char in enumerate(text):
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append(text[start:i])
            start = i + 1
    if quoted:
        raise ValueError("Forwarded: an unterminated quoted string")
    parts.append(text[start:])
    return parts


def x_forwarded_for_hops(lines: Sequence[str]) -> list[Hop]:
    """The entries of ``X-Forwarded-For`` lines, in order; ``[v6]`` and ``:port`` allowed."""
    hops = []
    for line in lines:
        for raw in line.split(","):
            entry = raw.strip(" \t")
            if not entry:
                continue
            match = _XFF_NODE.fullmatch(entry)
            if match is None:
                raise ValueError("X-Forwarded-For: an entry that is not an IP address")
            if match.group("v4"):
                hops.append(Hop(_address(match.group("v4"), 4), _port(match.group("port4"))))
            else:
                text = match.group("bare6") or match.group("v6")
                hops.append(Hop(_address(text, 6), _port(match.group("port6"))))
            if len(hops) > MAX_HOPS:
                raise ValueError(f"X-Forwarded-For: more than {MAX_HOPS} hops")
    return hops


def resolve(
    peer: tuple[str, int] | None,
    lines: Sequence[str],
    header: str,
    nets: Sequence[IpNetwork],
) -> Resolved:
    """The client of a request from ``peer`` carrying ``lines`` of ``header`` (Rules 1-5)."""
    host, port = peer if peer else ("", 0)
    plain = Resolved(host, port, False)
    if not lines or not trusted(ip_of(host), nets):
        return plain
    if sum(len(line) for line in lines) > MAX_BYTES:
        return Resolved(host, port, False, f"{header}: longer than {MAX_BYTES} bytes")
    try:
        hops = forwarded_hops(lines) if header == FORWARDED else x_forwarded_for_hops(lines)
    except ValueError as exc:
        return Resolved(host, port, False, str(exc))
    if not hops:
        return plain
    chosen = hops[0]
    for hop in reversed(hops):
        if not trusted(hop.address, nets):
            chosen = hop
            break
    if chosen.address is None:
        return Resolved(chosen.name, chosen.port, True)
    address = chosen.address
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return Resolved(str(address), chosen.port, True)


__all__ = [
    "CLIENT_HEADERS",
    "FORWARDED",
    "X_FORWARDED_FOR",
    "Hop",
    "Resolved",
    "forwarded_hops",
    "networks",
    "resolve",
    "trusted",
    "x_forwarded_for_hops",
]
