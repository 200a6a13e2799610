"""8-bit to 7-bit, for an upstream that does not announce 8BITMIME (RFC 6152 3).

Stage: after rendering, only when the upstream needs it. Input: one recipient group's bytes.
Output: the same message with every leaf part whose body holds 8-bit bytes re-encoded
quoted-printable and its Content-Transfer-Encoding field changed to say so; every other byte
is as it was.

Rule 1: what a reader sees does not change: the quoted-printable body decodes to exactly the
        8-bit body, each hard line break with its own line ending (``transfer.qp_encode``).
Rule 2: refused (``DowngradeRefused``, answered 554 5.6.3) when that cannot hold: 8-bit bytes
        in a header field, a preamble or anywhere outside a leaf body (that would need RFC 2047
        words in a charset nobody declared), in a signed or encrypted part (its signature
        covers those bytes), or in a body declared base64 or with an unknown encoding.
Rule 3: a DKIM signature the conversion breaks is treated as the filtering treats one
        (``dkim_sign``): ``[dkim] mode = "resign"`` with a key for the From domain signs anew,
        "upstream" removes the broken signature, "off" leaves the message as converted.
Rule 4: pure and linear in the size of the message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from relay.core.dkim_sign import DkimKey, key_for, needs_resign, resign
from relay.core.filtering import FilterContext
from relay.core.parse import parse_message
from relay.core.transfer import qp_encode
from relay.errors import DowngradeRefused
from relay.model import Part

_CTE_FIELD = re.compile(rb"content-transfer-encoding[ \t]*:", re.IGNORECASE)
_QP_8BIT = re.compile(rb"[\x80-\xff]")
MAX_LINE = 998  # RFC 5321 4.5.3.1.6, without the CRLF


def _field_span(data: bytes, start: int, end: int) -> tuple[int, int] | None:
    """The Content-Transfer-Encoding field in the header block ``[start, end)``, continuation
    lines and line ending included."""
    pos = start
    found: int | None = None
    while pos < end:
        nl = data.find(b"\n", pos, end)
        stop = end if nl == -1 else nl + 1
        folded = data[pos : pos + 1] in (b" ", b"\t")
        if found is not None and not folded:
            return found, pos
        if found is None and not folded and _CTE_FIELD.match(data, pos, stop):
            found = pos
        pos = stop
    if found is not None:
        raise DowngradeRefused("a header block without its empty line")
    return None


def _blank_line(data: bytes, part: Part) -> int:
    """Where the empty line ending the part's header block starts."""
    body = part.body_start
    width = 2 if data[body - 2 : body] == b"\r\n" else 1 if data[body - 1 : body] == b"\n" else 0
    blank = body - width
    if width and (blank == part.header_start or data[blank - 1 : blank] == b"\n"):
        return blank
    raise DowngradeRefused(f"part {part.index + 1} ({part.content_type}): no header end found")


def _part_edits(data: bytes, part: Part) -> list[tuple[int, int, bytes]]:
    body = data[part.body_start : part.body_end]
    where = f"part {part.index + 1} ({part.content_type})"
    if part.locked:
        raise DowngradeRefused(f"{where} is signed or encrypted and holds 8-bit bytes")
    if part.cte == "quoted-printable":
        # Raw 8-bit bytes in quoted-printable are read literally by decoders: escaping them
        # keeps what is read.
        escaped = _QP_8BIT.sub(lambda m: b"=%02X" % m.group(0)[0], body)
        if max(map(len, escaped.split(b"\n"))) > MAX_LINE + 1:
            raise DowngradeRefused(f"{where}: quoted-printable line too long once escaped")
        return [(part.body_start, part.body_end, escaped)]
    if part.cte not in ("7bit", "8bit", "binary"):
        raise DowngradeRefused(f"{where}: 8-bit bytes in a {part.cte} body")
    newline = part.newline.encode()
    encoded = qp_encode(body, soft_end=False, newline=newline)
    field = b"Content-Transfer-Encoding: quoted-printable" + newline
    span = _field_span(data, part.header_start, part.body_start)
    if span is not None:
        header_edit = (span[0], span[1], field)
    else:
        blank = _blank_line(data, part)
        header_edit = (blank, blank, field)
    return [header_edit, (part.body_start, part.body_end, encoded)]


def to_seven_bit(data: bytes) -> bytes:
    """Rules 1, 2: ``data`` unchanged when already 7-bit, else converted or refused."""
    if data.isascii():
        return data
    message = parse_message(data)
    edits: list[tuple[int, int, bytes]] = []
    for part in message.parts:
        if not data[part.body_start : part.body_end].isascii():
            edits += _part_edits(data, part)
    out = bytearray()
    pos = 0
    for start, end, replacement in sorted(edits):
        out += data[pos:start]
        out += replacement
        pos = end
    out += data[pos:]
    if not out.isascii():
        raise DowngradeRefused("8-bit bytes in a header or outside any part body")
    return bytes(out)


def downgrade(
    data: bytes, *, dkim_mode: str, keys: Mapping[str, DkimKey], replace_all: bool
) -> bytes:
    """``to_seven_bit`` and the DKIM treatment of Rule 3."""
    converted = to_seven_bit(data)
    if dkim_mode == "off" or converted is data or not needs_resign(data, converted):
        return converted
    key = key_for(data, keys) if dkim_mode == "resign" else None
    return resign(converted, key, original=data, replace_all=replace_all)


def downgrade_in_context(context: FilterContext, data: bytes) -> bytes:
    """``downgrade`` with the DKIM settings the filtering uses."""
    return downgrade(
        data,
        dkim_mode=context.dkim_mode,
        keys=context.dkim_keys,
        replace_all=context.dkim_replace_all,
    )
