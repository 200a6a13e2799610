"""MIME parsing on the raw bytes: locate every header and leaf part, decode the editable text.

Stage: parse (pure). Input: the message bytes exactly as received. Output: a ``ParsedMessage``
whose headers and parts carry byte offsets into those bytes, so that later stages can change a
few bytes and leave every other byte alone.

Rule 1: the raw bytes are never rewritten here; the ``email`` package is not used at all (it
        costs milliseconds and its serialiser changes bytes nobody edited).
Rule 2: the structure is found by walking the boundaries on the raw bytes; each leaf part
        records its header start, body start and body end, its transfer encoding, charset and
        line ending. A body ends before the line ending that precedes the next delimiter
        (RFC 2046: that line ending belongs to the delimiter).
Rule 3: text/html, text/plain and text/x-amp-html parts get ``text``: transfer-decoded, then
        charset-decoded, with every line ending kept as written; see ``transfer`` for the
        latin-1 fallback that keeps re-encoding exact.
Rule 4: parts inside multipart/signed or multipart/encrypted, and application/(x-)pkcs7-mime
        parts, are ``locked``.
Rule 5: what is wrong but can be worked around (missing final boundary, damaged base64, a header
        line without a colon, nesting too deep, no blank line after the headers ...) becomes a
        ``defect`` naming the part; only an empty message raises ``MalformedMessage`` (and
        anything but bytes a TypeError: that is a programming error, not bad mail).
Rule 6: the work is linear in the size: each nesting level scans its own range once, and the
        ``max_depth`` and ``max_parts`` limits bound the rest. What lies past a limit is not
        read: it is a defect and is named in ``unread``, so that it is never forwarded as is.
Rule 7: valid MIME is no defect: a part of header lines only (RFC 2046 5.1.1: body-part :=
        MIME-part-headers [CRLF *OCTET], the line ending before a delimiter is the
        delimiter's), an ``x-`` or other unknown transfer encoding on a part that is never
        decoded (RFC 2045 6.1), a Content-Type without a subtype (read as text/plain, RFC 2045
        5.2; as text/html when it names html, so that nothing a lenient client renders goes
        unread). An unknown encoding on a text part is a defect: that text cannot be read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from relay.core.transfer import KNOWN_CTES, decode_charset, decode_transfer
from relay.errors import MalformedMessage
from relay.model import Header, ParsedMessage, Part

TEXT_TYPES = frozenset({"text/html", "text/plain", "text/x-amp-html"})
LOCKING_MULTIPARTS = frozenset({"multipart/signed", "multipart/encrypted"})
LOCKING_LEAVES = frozenset({"application/pkcs7-mime", "application/x-pkcs7-mime"})
MESSAGE_TYPES = frozenset({"message/rfc822", "message/global"})

_PARAM = re.compile(r"""\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"?|[^;]*)""")
_QUOTED_PAIR = re.compile(r"\\(.)")
_SLASH_SPACE = re.compile(r"\s*/\s*")
_BLANK = re.compile(rb"\r?\n\r?\n")
_FIELD = re.compile(rb"[!-9;-~]+[ \t]*:")


@dataclass(slots=True)
class _Walk:
    """Mutable state of one parse: what was found so far."""

    raw: bytes
    max_depth: int
    max_parts: int
    parts: list[Part] = field(default_factory=list)
    defects: list[str] = field(default_factory=list)
    unread: list[str] = field(default_factory=list)
    entities: int = 0

    def not_read(self, what: str) -> None:
        self.defects.append(what)
        self.unread.append(what)


# ---------------------------------------------------------------------------------------------
# Header blocks


def _decode_value(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _newline_at(raw: bytes, start: int, end: int, default: str) -> str:
    at = raw.find(b"\n", start, end)
    if at == -1:
        return default
    return "\r\n" if at > start and raw[at - 1] == 0x0D else "\n"


def _header_end(raw: bytes, start: int, end: int) -> tuple[int, int] | None:
    """(end of the last header line, start of the body), or None without a blank line."""
    if start >= end:
        return start, start  # an empty part: no header, empty body
    if raw.startswith(b"\r\n", start, end) or raw.startswith(b"\n", start, end):
        # No header at all: the part starts with its blank line (defaults apply).
        return start, start + (2 if raw[start] == 0x0D else 1)
    match = _BLANK.search(raw, start, end)
    if match is None:
        return None
    first_break = match.start() + (2 if raw[match.start()] == 0x0D else 1)
    return first_break, match.end()


def _read_headers(
    walk: _Walk, start: int, end: int, where: str
) -> tuple[tuple[Header, ...], int, int]:
    """Parse the header block starting at ``start``: (headers, header block end, body start)."""
    raw = walk.raw
    located = _header_end(raw, start, end)
    if located is None:
        # Without a blank line, header lines run while they look like headers; the rest is body.
        block_end = body_start = _scan_header_lines(raw, start, end)
        if block_end < end:
            walk.defects.append(f"{where}: no blank line after the header block")
        # else: header lines only, an empty body (Rule 7)
    else:
        block_end, body_start = located
    headers: list[Header] = []
    pos = start
    line_no = 0
    while pos < block_end:
        nl = raw.find(b"\n", pos, block_end)
        line_end = block_end if nl == -1 else nl + 1
        line_no += 1
        first = raw[pos]
        if first in (0x20, 0x09):
            if headers:
                last = headers[-1]
                value = last.value + " " + _decode_value(raw[pos:line_end].strip())
                headers[-1] = Header(last.name, value.strip(), last.start, line_end)
            else:
                walk.defects.append(f"{where}: continuation line {line_no} before any header")
        else:
            colon = raw.find(b":", pos, line_end)
            if colon == -1:
                if not (line_no == 1 and raw.startswith(b"From ", pos)):  # mbox "From " line
                    text = raw[pos:line_end].strip()[:40].decode("latin-1")
                    walk.defects.append(f"{where}: header line {line_no} has no colon: {text!r}")
            else:
                name = raw[pos:colon].strip().decode("latin-1")
                value = _decode_value(raw[colon + 1 : line_end].strip())
                headers.append(Header(name, value, pos, line_end))
        pos = line_end
    return tuple(headers), block_end, body_start


def _scan_header_lines(raw: bytes, start: int, end: int) -> int:
    """End of the run of lines that look like header fields (a field name of printable
    characters without space, then ":", RFC 5322 2.2) or continuations: a line of HTML that
    happens to hold a colon ("<img src=https://...") is not one."""
    pos = start
    while pos < end:
        nl = raw.find(b"\n", pos, end)
        line_end = end if nl == -1 else nl + 1
        if raw[pos : pos + 1] not in (b" ", b"\t") and not _FIELD.match(raw, pos, line_end):
            break
        pos = line_end
    return pos


def _first(headers: tuple[Header, ...], name: str) -> str | None:
    for h in headers:
        if h.name.lower() == name:
            return h.value
    return None


def content_type(value: str | None) -> tuple[str, dict[str, str]]:
    """Split a Content-Type value into (lower-case type, parameters with lower-case names)."""
    if value is None:
        return "", {}
    main, _, rest = value.partition(";")
    # "text / html" is "text/html" (whitespace may surround the "/"); after a forgotten ";"
    # ("text/html charset=utf-8") the type is the first word and the rest a parameter.
    words = _SLASH_SPACE.sub("/", main).split()
    if words:
        main = words[0]
    if len(words) > 1:
        rest = " ".join(words[1:]) + ";" + rest
    params: dict[str, str] = {}
    for match in _PARAM.finditer(rest):
        name, val = match.group(1).lower(), match.group(2).strip()
        if val.startswith('"'):
            val = _QUOTED_PAIR.sub(
                r"\1", val[1:-1] if val.endswith('"') and len(val) > 1 else val[1:]
            )
        if name.endswith("*"):
            # RFC 2231 "charset*=utf-8''..." : the charset is before the first quote.
            name, val = name[:-1], val.split("'", 1)[0] if "'" in val else val
        params.setdefault(name, val)
    return main.strip().lower(), params


# ---------------------------------------------------------------------------------------------
# Entities


def _entity(
    walk: _Walk,
    start: int,
    end: int,
    *,
    depth: int,
    locked: bool,
    default_type: str,
    where: str,
    known: tuple[tuple[Header, ...], int] | None = None,
) -> None:
    """Parse the entity in ``[start, end)`` (header block and body), adding its leaf parts."""
    walk.entities += 1
    if walk.entities > walk.max_parts:
        if walk.entities == walk.max_parts + 1:
            walk.not_read(f"more than {walk.max_parts} MIME parts: the rest is not read")
        return
    if known is None:
        headers, _, body_start = _read_headers(walk, start, end, where)
    else:
        headers, body_start = known
    declared = _first(headers, "content-type")
    ctype, params = content_type(declared)
    if declared is not None and "/" not in ctype:
        # RFC 2045 5.2: an invalid Content-Type is read as text/plain (Rule 7).
        ctype, params = ("text/html" if "html" in ctype else "text/plain"), {}
    ctype = ctype or default_type
    cte = (_first(headers, "content-transfer-encoding") or "7bit").strip().lower()
    locked = locked or ctype in LOCKING_MULTIPARTS or ctype in LOCKING_LEAVES
    if ctype.startswith("multipart/") and "boundary" in params:
        if depth >= walk.max_depth:
            walk.not_read(f"{where}: multipart nesting deeper than {walk.max_depth} not read")
            return
        child_type = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        _multipart(walk, params["boundary"], body_start, end, depth, locked, child_type, where)
        return
    if ctype.startswith("multipart/"):
        walk.defects.append(f"{where}: {ctype} without a boundary parameter")
    if ctype in MESSAGE_TYPES and cte in ("7bit", "8bit", "binary") and depth >= walk.max_depth:
        walk.not_read(f"{where}: message nested deeper than {walk.max_depth} not read")
        return
    if ctype in MESSAGE_TYPES and cte in ("7bit", "8bit", "binary"):
        # A forwarded message: its own parts are fetched by the reader's client too.
        _entity(
            walk,
            body_start,
            end,
            depth=depth + 1,
            locked=locked,
            default_type="text/plain",
            where=f"{where}/message",
        )
        return
    _leaf(walk, ctype, params, cte, start, body_start, end, locked, where)


def _leaf(
    walk: _Walk,
    ctype: str,
    params: dict[str, str],
    cte: str,
    start: int,
    body_start: int,
    end: int,
    locked: bool,
    where: str,
) -> None:
    raw = walk.raw
    charset = params.get("charset", "").strip().lower()
    text: str | None = None
    codec = ""
    if cte not in KNOWN_CTES and ctype in TEXT_TYPES:
        # Text the relay must read but cannot decode (an attachment's x-uuencode is never
        # decoded: no defect, Rule 7).
        walk.defects.append(f"{where}: {ctype} in Content-Transfer-Encoding {cte!r} cannot be read")
    if ctype in TEXT_TYPES:
        data, defect = decode_transfer(raw[body_start:end], cte)
        if defect and cte in KNOWN_CTES:
            walk.defects.append(f"{where}: {defect}")
        text, codec = decode_charset(data, charset)
    newline = _newline_at(raw, body_start, end, _newline_at(raw, start, end, "\r\n"))
    if cte == "base64" and text is not None and "\n" in text:
        # Encoded text has line endings of its own: those are the ones an insertion must use.
        at = text.index("\n")
        newline = "\r\n" if at and text[at - 1] == "\r" else "\n"
    walk.parts.append(
        Part(
            index=len(walk.parts),
            content_type=ctype,
            charset=charset,
            cte=cte,
            header_start=start,
            body_start=body_start,
            body_end=end,
            text=text,
            locked=locked,
            newline=newline,
            codec=codec,
        )
    )


def _delimiter_after(raw: bytes, at: int, end: int) -> tuple[bool, int] | None:
    """At ``at`` the text just past "--boundary": (is closing, start of the next line), or None
    when the line goes on with other text (the boundary was only a prefix of it)."""
    if raw.startswith(b"--", at):
        nl = raw.find(b"\n", at, end)
        return True, end if nl == -1 else nl + 1
    pos = at
    while pos < end and raw[pos] in (0x20, 0x09):  # transport padding
        pos += 1
    if pos == end:
        return False, end
    if raw[pos] == 0x0A:
        return False, pos + 1
    if raw[pos] == 0x0D and pos + 1 < end and raw[pos + 1] == 0x0A:
        return False, pos + 2
    return None


def _multipart(
    walk: _Walk,
    boundary: str,
    start: int,
    end: int,
    depth: int,
    locked: bool,
    child_type: str,
    where: str,
) -> None:
    raw = walk.raw
    delim = b"--" + boundary.encode("latin-1", "replace")
    part_start: int | None = None  # start of the part being read (after a delimiter line)
    number = 0
    pos = start
    while True:
        hit = raw.find(delim, pos, end)
        if hit == -1:
            break
        pos = hit + len(delim)
        if hit != start and raw[hit - 1] != 0x0A:
            continue
        found = _delimiter_after(raw, pos, end)
        if found is None:
            continue
        closing, next_line = found
        if walk.entities > walk.max_parts:
            return  # the limit's defect is recorded; the rest is not read
        if part_start is not None:
            # The line ending before the delimiter belongs to the delimiter (RFC 2046).
            body_end = hit
            if body_end > part_start and raw[body_end - 1] == 0x0A:
                body_end -= 2 if body_end - 1 > part_start and raw[body_end - 2] == 0x0D else 1
            number += 1
            _child(walk, part_start, body_end, depth, locked, child_type, f"{where}.{number}")
        if closing:
            return
        part_start = next_line
        pos = next_line
    if part_start is None:
        walk.defects.append(f"{where}: boundary {boundary[:70]!r} not found")
        return
    walk.defects.append(f"{where}: closing boundary missing")
    number += 1
    _child(walk, part_start, end, depth, locked, child_type, f"{where}.{number}")


def _child(
    walk: _Walk, start: int, end: int, depth: int, locked: bool, child_type: str, where: str
) -> None:
    _entity(walk, start, end, depth=depth + 1, locked=locked, default_type=child_type, where=where)


def parse_message(raw: bytes, *, max_depth: int = 20, max_parts: int = 500) -> ParsedMessage:
    """Locate the headers and leaf parts of ``raw`` (see the module rules)."""
    if not isinstance(raw, bytes):
        raise TypeError(f"parse_message wants bytes, not {type(raw).__name__}")
    if not raw.strip():
        raise MalformedMessage("empty message: no header and no body")
    walk = _Walk(raw, max_depth, max_parts)
    headers, _, header_end = _read_headers(walk, 0, len(raw), "message")
    if not headers:
        walk.defects.append("message: no header field")
    _entity(
        walk,
        0,
        len(raw),
        depth=0,
        locked=False,
        default_type="text/plain",
        where="part 1",
        known=(headers, header_end),
    )
    return ParsedMessage(
        raw=raw,
        headers=headers,
        header_end=header_end,
        parts=tuple(walk.parts),
        defects=tuple(walk.defects),
        unread=tuple(walk.unread),
    )
