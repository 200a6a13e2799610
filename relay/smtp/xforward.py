"""Postfix XFORWARD (https://www.postfix.org/XFORWARD_README.html): parse it in, render it out.

Input: the argument of an ``XFORWARD`` command (``NAME=mx.example ADDR=192.0.2.7 ...``).
Output: ``(NAME, value)`` pairs with xtext-decoded values; and, for the upstream, the
``XFORWARD`` command arguments restricted to the attribute names it announced.

Rule 1: pure: no I/O; ``receive.py`` decides who may send XFORWARD, ``forward.py`` sends it.
Rule 2: only the attributes of the README are accepted (NAME ADDR PORT PROTO HELO IDENT
        SOURCE); an unknown name or a malformed value refuses the whole command, as Postfix's
        smtpd does, so nothing half-parsed reaches the upstream's log.
Rule 3: values travel xtext-encoded (RFC 3461) on the wire and decoded in ``Envelope``; the
        special values ``[UNAVAILABLE]`` and ``[TEMPUNAVAIL]`` are kept as they are.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from relay.smtp import xtext

ATTRIBUTES = ("NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE")
ANNOUNCEMENT = "XFORWARD " + " ".join(ATTRIBUTES)
SPECIAL = ("[UNAVAILABLE]", "[TEMPUNAVAIL]")
MAX_VALUE = 255
# RFC 5321 4.5.3.1.4: a command line is at most 512 octets with CRLF.
MAX_LINE = 510


def _valid(name: str, value: str) -> bool:
    if value in SPECIAL:
        return True
    if len(value) > MAX_VALUE or any(ord(c) < 32 or ord(c) > 126 for c in value):
        return False
    if name == "ADDR":
        try:
            ipaddress.ip_address(value.removeprefix("IPV6:").removeprefix("ipv6:"))
        except ValueError:
            return False
    elif name == "PORT":
        return value.isdigit() and int(value) < 65536
    return bool(value)


def parse(arg: str) -> list[tuple[str, str]]:
    """``NAME=a ADDR=b`` -> ``[("NAME", "a"), ("ADDR", "b")]``; ValueError if malformed."""
    pairs: list[tuple[str, str]] = []
    words = arg.split()
    if not words:
        raise ValueError("no attribute")
    for word in words:
        name, sep, raw = word.partition("=")
        name = name.upper()
        if not sep or name not in ATTRIBUTES:
            raise ValueError(f"unknown attribute {name!r}")
        value = xtext.decode(raw)
        if not _valid(name, value):
            raise ValueError(f"bad value for {name}")
        pairs.append((name, value))
    return pairs


def commands(pairs: Iterable[tuple[str, str]], announced: Sequence[str]) -> list[str]:
    """XFORWARD arguments for an upstream that announced ``announced`` names, each short enough
    for one command line (Postfix splits the same way)."""
    allowed = {a.upper() for a in announced}
    words = [f"{n}={xtext.encode(v)}" for n, v in pairs if n in allowed]
    lines: list[str] = []
    current = ""
    for word in words:
        if current and len("XFORWARD ") + len(current) + 1 + len(word) > MAX_LINE:
            lines.append(current)
            current = ""
        current = f"{current} {word}" if current else word
    if current:
        lines.append(current)
    return lines
