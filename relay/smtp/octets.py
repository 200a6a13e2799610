"""What every message's bytes go through at the edges: its line facts (a lone CR, a lone LF, a
NUL, the longest line) and the transparency dots of DATA, removed on the way in and added on the
way out.

Stage: SMTP vocabulary (pure). Input: the bytes of a message. Output: ``facts(data)``, the
tuple (bare CR, bare LF, NUL, longest line without its LF), read by ``canonical`` (inbound),
``command.body_defect`` (outbound) and ``inbound.data.has_long_line``; ``unstuff(data)`` (the
DATA reader) and ``payload(data)`` (``command.data_payload``); ``qp_length`` (Rule 4).

Rule 1: a CR is bare when no LF follows it, an LF when no CR precedes it (RFC 5321 2.3.8); a
        line is what lies between two LFs, counted as ``bytes.split(b"\\n")`` counts it.
Rule 2: ``python_facts`` is the definition: four C-speed counts and a split, about 140 us for
        a 67 KB newsletter. ``facts`` is the compiled ``_octets.facts`` (memchr passes, about
        10 us) when ``make install`` built it, else ``python_facts``;
        tests/smtp/test_octets.py compares the two.
Rule 3: a line that starts with a dot gets a second one on the wire (RFC 5321 4.5.2): a dot at
        the start of the data or after a CRLF (the message is canonical by then, so no lone LF
        ends a line). ``python_unstuff`` and ``python_payload`` are the definitions (two
        ``replace`` calls and two copies, about 80 us for 67 KB); the compiled ones find the
        lines with memchr and copy once.
Rule 4: ``qp_length(data, start, end)`` is ``len(binascii.a2b_qp(data[start:end]))``
        (``python_qp_length``) for offsets within the data, counted in C without the copy and
        the decoding: the renderer's line search (``core.transfer.QPLines``) measures every
        quoted-printable span it crosses, about 45 us per 67 KB message through ``a2b_qp``.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable

Facts = tuple[bool, bool, bool, int]


def python_facts(data: bytes) -> Facts:
    """(bare CR, bare LF, NUL, longest line) by counting (Rule 2)."""
    crlf = data.count(b"\r\n")
    longest = max(map(len, data.split(b"\n")))
    return data.count(b"\r") != crlf, data.count(b"\n") != crlf, b"\0" in data, longest


END_OF_DATA = b".\r\n"


def python_unstuff(data: bytes) -> bytes:
    """The first dot of every line that starts with one removed (Rule 3)."""
    data = data.replace(b"\r\n.", b"\r\n")
    return data[1:] if data.startswith(b".") else data


def python_payload(data: bytes) -> bytes:
    """The message dot-stuffed, ended with a CRLF, then the end-of-data line (Rule 3)."""
    stuffed = data.replace(b"\r\n.", b"\r\n..")
    if stuffed.startswith(b"."):
        stuffed = b"." + stuffed
    if stuffed and not stuffed.endswith(b"\r\n"):
        stuffed += b"\r\n"
    return stuffed + END_OF_DATA


def python_qp_length(data: bytes, start: int, end: int) -> int:
    """The decoded length of a quoted-printable span (Rule 4)."""
    return len(binascii.a2b_qp(data[start:end]))


facts: Callable[[bytes], Facts]
unstuff: Callable[[bytes], bytes]
payload: Callable[[bytes], bytes]
qp_length: Callable[[bytes, int, int], int]
try:
    from relay.smtp._octets import facts, payload, qp_length, unstuff
except ImportError:  # not compiled: the definitions themselves
    facts, unstuff, payload = python_facts, python_unstuff, python_payload
    qp_length = python_qp_length
