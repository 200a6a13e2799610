"""Line facts of a message's bytes, asked of every message at the edges: a lone CR, a lone LF,
a NUL, the longest line.

Stage: SMTP vocabulary (pure). Input: the bytes of a message. Output: ``facts(data)``, the
tuple (bare CR, bare LF, NUL, longest line without its LF), read by ``canonical`` (inbound),
``command.body_defect`` (outbound) and ``inbound.data.has_long_line``.

Rule 1: a CR is bare when no LF follows it, an LF when no CR precedes it (RFC 5321 2.3.8); a
        line is what lies between two LFs, counted as ``bytes.split(b"\\n")`` counts it.
Rule 2: ``python_facts`` is the definition: four C-speed counts and a split, about 140 us for
        a 67 KB newsletter. ``facts`` is the compiled ``_octets.facts`` (memchr passes, about
        10 us) when ``make install`` built it, else ``python_facts``;
        tests/smtp/test_octets.py compares the two.
"""

from __future__ import annotations

from collections.abc import Callable

Facts = tuple[bool, bool, bool, int]


def python_facts(data: bytes) -> Facts:
    """(bare CR, bare LF, NUL, longest line) by counting (Rule 2)."""
    crlf = data.count(b"\r\n")
    longest = max(map(len, data.split(b"\n")))
    return data.count(b"\r") != crlf, data.count(b"\n") != crlf, b"\0" in data, longest


facts: Callable[[bytes], Facts]
try:
    from relay.smtp._octets import facts
except ImportError:  # not compiled: the definition itself
    facts = python_facts
