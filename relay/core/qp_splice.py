"""Quoted-printable splicing: edits of a part's decoded bytes -> edits of its encoded bytes that
leave every encoded byte outside the edit as the sender wrote it.

Stage: helper of rewrite (pure). Input: a quoted-printable body (``QPLines``), edits in decoded
byte offsets (sorted, not overlapping) with their replacements already in the part's charset,
and the part's line ending. Output: splices in encoded offsets of the body.

Rule 1: fidelity. The encoded bytes before and after each edit are kept as they are: an "=0A"
        stays an "=0A" (a decoded line feed the sender escaped is never turned into a real
        line break), an escape the sender chose for a character that needed none stays. Only
        soft line breaks ("=" and a line ending, which decode to nothing) are added, where the
        new text needs room.
Rule 2: line length. New text is encoded in lines of at most 76 characters (RFC 2045 6.7,
        rule 5), counting the kept encoded bytes that share its line; when a kept prefix
        leaves no room for the soft break, the prefix's last tokens are moved, byte for byte,
        to the new line.
Rule 3: the new text's own line breaks become hard line breaks (the footer's lines are real
        lines); white space the new text leaves at the end of a line is escaped, and a kept
        prefix ending in white space before a hard line break gets a soft break, so that no
        decoder drops it (RFC 2045 6.7, rule 3).
Rule 4: a lone "=" (kept literally by decoders) just before an edit, or one hex digit
        after it, is taken into the edit and written "=3D", since new text after it could
        make an escape of it. ``splice``
        returns None only when a line's escapes cannot be located exactly (a token read
        differently from ``binascii.a2b_qp``); the caller then re-encodes the touched lines
        whole (``transfer.qp_encode``).
"""

from __future__ import annotations

from collections.abc import Sequence

from relay.core.transfer import LINE_BREAK, QP_MAX_LINE, QP_TOKENS, QPLines

Splice = tuple[int, int, bytes]

_EQ, _CR, _LF = 0x3D, 0x0D, 0x0A
_HEX = frozenset(b"0123456789ABCDEFabcdef")
_WHITE = frozenset(b" \t")
_ROOM = QP_MAX_LINE - 1  # characters before a soft break's "="


def token_starts(line: bytes) -> list[int]:
    """Offsets in ``line`` of the token that produces each decoded byte, exactly as
    ``binascii.a2b_qp`` reads it (CPython's ``binascii_a2b_qp_impl``): a soft break and a
    final "=" produce nothing, "==" produces "=", "=XX" one byte, a lone "=" itself. Runs
    without "=" are added in one step (most of a line)."""
    starts: list[int] = []
    i, n = 0, len(line)
    while i < n:
        eq = line.find(b"=", i)
        if eq == -1:
            starts.extend(range(i, n))
            break
        starts.extend(range(i, eq))
        j = eq + 1
        if j >= n:
            break  # a final "=" is dropped
        nxt = line[j]
        if nxt in (_LF, _CR):
            if nxt != _LF:
                while j < n and line[j] != _LF:
                    j += 1
            i = j + 1 if j < n else j
        elif nxt == _EQ:
            starts.append(eq)
            i = j + 1
        elif j + 1 < n and nxt in _HEX and line[j + 1] in _HEX:
            starts.append(eq)
            i = j + 2
        else:
            starts.append(eq)  # a lone "=" is kept, the next byte is read on its own
            i = j
    return starts


class _Locator:
    """Decoded offset -> encoded offset of the token producing that byte (end: body end)."""

    def __init__(self, lines: QPLines) -> None:
        self.lines = lines
        self.anchor = (0, 0)
        self.cache: dict[int, list[int]] = {}

    def raw(self, decoded: int) -> int | None:
        body = self.lines.body
        rs, ds, re, de = self.lines.line_at(decoded, self.anchor)
        self.anchor = (rs, ds)
        starts = self.cache.get(rs)
        if starts is None:
            starts = self.cache[rs] = token_starts(body[rs:re])
            if len(starts) != de - ds:
                return None  # Rule 4: not read the way a2b_qp reads it
        index = decoded - ds
        if index < len(starts):
            return rs + starts[index]
        if index == len(starts) and re == len(body):
            return len(body)
        return None


def _lone_equals_before(body: bytes, at: int, floor: int) -> int:
    """How many kept bytes before ``at`` (not before ``floor``) a lone "=" and a hex digit
    after it take (1: "=", 2: "=" and one digit, 0: none), which new text after them could
    turn into an escape (Rule 4)."""
    for back in (1, 2):
        start = at - back
        if start < floor or body[start] != _EQ:
            continue
        if back == 2 and body[at - 1] not in _HEX:
            return 0
        line_start = body.rfind(b"\n", 0, start) + 1
        nl = body.find(b"\n", at)
        line = body[line_start : len(body) if nl == -1 else nl + 1]
        if (start - line_start) in token_starts(line):
            return back
    return 0


def _line_end(body: bytes, at: int) -> tuple[int, bool]:
    """(characters from ``at`` to the end of its line, line endings excluded; whether that
    line ends with a hard line break or the body's end rather than a soft break)."""
    nl = body.find(b"\n", at)
    end = len(body) if nl == -1 else nl
    stop = end - 1 if end > at and body[end - 1 : end] == b"\r" else end
    soft = stop > at and body[stop - 1] == _EQ
    return stop - at, not soft


class _Writer:
    """Encoded output of one edit, tracking the column of the line being written."""

    def __init__(self, col: int, newline: bytes) -> None:
        self.out = bytearray()
        self.col = col
        self.newline = newline

    def soft_break(self) -> None:
        self.out += b"=" + self.newline
        self.col = 0

    def token(self, token: bytes) -> None:
        if self.col + len(token) > _ROOM:
            self.soft_break()
        self.out += token
        self.col += len(token)

    def encoded(self, data: bytes) -> None:
        """Already encoded ``data`` (no line break), cut into lines that fit, never inside an
        "=XX" escape ("=" only ever starts one in encoded text)."""
        pos = 0
        while pos < len(data):
            room = _ROOM - self.col
            if room <= 0:
                self.soft_break()
                continue
            if len(data) - pos <= room:
                self.out += data[pos:]
                self.col += len(data) - pos
                return
            cut = pos + room
            if cut > pos and data[cut - 1] == _EQ:
                cut -= 1
            elif cut - 1 > pos and data[cut - 2] == _EQ:
                cut -= 2
            if cut > pos:
                self.out += data[pos:cut]
            pos = cut
            self.soft_break()

    def text(self, data: bytes, *, hard_after: bool) -> None:
        """Encode ``data``; its line breaks are hard (Rule 3). ``hard_after``: a hard line
        break (or the body's end) follows, so trailing white space must be escaped."""
        pieces = LINE_BREAK.split(data)
        for index, piece in enumerate(pieces):
            if index % 2:
                self.out += piece
                self.col = 0
                continue
            encoded = b"".join(map(QP_TOKENS.__getitem__, piece))
            last_hard = index < len(pieces) - 1 or hard_after
            if last_hard and encoded[-1:] in (b" ", b"\t"):
                encoded = encoded[:-1] + b"=%02X" % encoded[-1]
            self.encoded(encoded)


def _column(body: bytes, at: int, base: tuple[int, int]) -> int:
    """Output column of kept byte ``at``: counted from its line's start, or from the end of
    the previous edit when that edit left this line open (``base`` = (position, column))."""
    line_start = body.rfind(b"\n", 0, at) + 1
    if line_start > base[0]:
        return at - line_start
    return base[1] + at - base[0]


def _back_up(body: bytes, start: int, col: int, floor: int) -> tuple[int, int]:
    """Move ``start`` back over whole tokens, not before ``floor``, until a soft break fits
    after ``col`` (Rule 2)."""
    line_start = body.rfind(b"\n", 0, start) + 1
    starts = token_starts(body[line_start:start])
    while col > _ROOM and starts and line_start + starts[-1] >= floor:
        previous = line_start + starts.pop()
        col -= start - previous
        start = previous
    return start, col


def _write(
    body: bytes, rs: int, re: int, rep: bytes, col: int, last: bytes, newline: bytes
) -> _Writer:
    """The encoded bytes replacing ``body[rs:re]``; ``col`` is the column at ``rs`` and
    ``last`` the output byte just before it (b"" at a line start)."""
    writer = _Writer(col, newline)
    rest, hard = _line_end(body, re)
    ends_line = hard and rest == 0  # a hard break (or the body's end) follows the edit
    if last in (b" ", b"\t") and (rep[:1] in (b"\r", b"\n") or (not rep and ends_line)):
        writer.soft_break()  # kept white space must not end a line (Rule 3)
    writer.text(rep, hard_after=ends_line)
    at_line_start = re < len(body) and (re == 0 or body[re - 1] == _LF)
    if writer.col and (at_line_start or writer.col + rest > QP_MAX_LINE):
        # Keep the next kept line a line of its own, or make room for the kept rest.
        writer.soft_break()
    return writer


def splice(lines: QPLines, edits: Sequence[Splice], newline: bytes) -> list[Splice] | None:
    """Encoded splices for decoded ``edits`` (module rules), or None (Rule 4)."""
    body = lines.body
    locator = _Locator(lines)
    out: list[Splice] = []
    base = (0, 0)  # where the previous edit ended, and the output column there
    emitted = b""  # the last output byte before ``base[0]``
    for start, end, new_text in edits:
        rs = locator.raw(start)
        re = rs if end == start else locator.raw(end)
        if rs is None or re is None:
            return None
        rep = new_text
        lone = _lone_equals_before(body, rs, base[0])
        if lone:
            # A lone "=" kept before new text could become an escape with it ("=4" + "1"):
            # it is taken into the edit and written as "=3D", which decodes the same.
            rep = b"=" + body[rs - lone + 1 : rs] + rep
            rs -= lone
        col = _column(body, rs, base)
        prefix = b""
        if col > _ROOM:
            # No room left for a soft break's "=": move the last kept tokens to a new line.
            moved, col = _back_up(body, rs, col, base[0])
            kept = body[moved:rs]
            prefix, rs, col = b"=" + newline + kept, moved, len(kept)
        if prefix:
            last = prefix[-1:]
        elif out and rs == base[0]:
            last = emitted
        else:
            last = body[rs - 1 : rs] if col else b""
        writer = _write(body, rs, re, rep, col, last, newline)
        data = prefix + bytes(writer.out)
        out.append((rs, re, data))
        base = (re, writer.col)
        emitted = data[-1:] if data else last
    return out
