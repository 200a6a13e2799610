"""Transfer encodings and charsets: decode a part's body, re-encode only an edited region.

Stage: helpers of parse (decoding) and rewrite (re-encoding); pure. Input: a part's raw body
bytes, its Content-Transfer-Encoding and charset. Output: decoded bytes and text, and for the
rewrite stage the encoded bytes of an edited region.

Rule 1: decoding never loses a byte. Where the declared charset is unknown, fails to decode, or
        does not give back the same bytes when encoded again, the bytes are read as latin-1
        (one char per byte), so that re-encoding is always exact.
Rule 2: quoted-printable edits are spliced into the encoded text (``qp_splice``): every
        encoded byte outside an edit stays as the sender wrote it, an "=0A" stays "=0A", and
        only soft line breaks are added around the new text, which is encoded in lines of at
        most 76 characters. ``qp_encode`` (whole-region re-encoding) is the fallback for input
        whose escapes cannot be located exactly, and the encoder for re-encoded 8bit parts.
Rule 3: base64 keeps the original line length and line ending; the lines before the first
        change are kept as they were when the original wrapping is regular.
Rule 4: nothing here touches ``email``: its serialiser rewrites bytes nobody edited.
"""

from __future__ import annotations

import binascii
import codecs
import re
import unicodedata
from dataclasses import dataclass

from relay.smtp.octets import qp_length

IDENTITY_CTES = frozenset({"7bit", "8bit", "binary"})
KNOWN_CTES = IDENTITY_CTES | {"quoted-printable", "base64"}

# Codecs whose encoding of a string is not the concatenation of the encodings of its pieces
# (escape sequences, byte order marks, shift states): text in them is re-encoded whole.
_STATEFUL = frozenset(
    {
        "utf-16",
        "utf-32",
        "utf-7",
        "hz",
        "iso2022_jp",
        "iso2022_jp_1",
        "iso2022_jp_2",
        "iso2022_jp_2004",
        "iso2022_jp_3",
        "iso2022_jp_ext",
        "iso2022_kr",
    }
)
# Codecs for which strict decoding followed by encoding always gives the input back.
_EXACT = frozenset({"utf-8", "ascii", "latin-1", "iso8859-1"})

QP_MAX_LINE = 76
LINE_BREAK = re.compile(rb"(\r\n|\n)")
_B64_ALPHABET = re.compile(rb"[^A-Za-z0-9+/]")


def _qp_token(byte: int) -> bytes:
    # Printable ASCII except "=" stands for itself; space and tab too (trailing ones are
    # escaped by the encoder, which knows where lines end).
    if (33 <= byte <= 126 and byte != 61) or byte in (9, 32):
        return bytes([byte])
    return b"=%02X" % byte


QP_TOKENS = tuple(_qp_token(b) for b in range(256))


# ---------------------------------------------------------------------------------------------
# Decoding


def decode_transfer(body: bytes, cte: str) -> tuple[bytes, str]:
    """Undo the transfer encoding. Returns the bytes and a defect description ("" if none)."""
    if cte == "quoted-printable":
        return binascii.a2b_qp(body), ""
    if cte == "base64":
        try:
            return binascii.a2b_base64(body), ""
        except binascii.Error as exc:
            # Keep what can be read: the alphabet characters, cut to whole 4-character groups.
            letters = _B64_ALPHABET.sub(b"", body.split(b"=", 1)[0])
            usable = letters[: len(letters) - len(letters) % 4]
            return binascii.a2b_base64(usable), f"damaged base64 ({exc})"
    if cte in IDENTITY_CTES:
        return body, ""
    return body, f"unknown Content-Transfer-Encoding {cte!r}, read as 8bit"


def codec_name(charset: str) -> str | None:
    """The normalised Python codec name of a MIME charset, or None when Python has none."""
    try:
        return codecs.lookup(charset).name
    except (LookupError, ValueError):
        return None


def decode_charset(data: bytes, charset: str) -> tuple[str, str]:
    """Decode transfer-decoded bytes to text. Returns (text, codec) following Rule 1."""
    if not charset:
        # MIME's default is us-ascii; undeclared 8-bit text is most often utf-8 today.
        if data.isascii():
            return data.decode("ascii"), "ascii"
        charset = "utf-8"
    codec = codec_name(charset)
    if codec is not None:
        try:
            text = data.decode(codec)
        except (UnicodeDecodeError, LookupError):
            pass
        else:
            if codec in _EXACT or text.encode(codec) == data:
                return text, codec
    return data.decode("latin-1"), "latin-1"


def is_stateful(codec: str) -> bool:
    return codec in _STATEFUL


def insertion_codec(codec: str, charset: str) -> str:
    """The codec for text inserted into a part decoded with ``codec``. Text read as latin-1 in
    place of its declared charset (Rule 1) gets new text in that charset, or in ASCII when the
    charset is unknown, undeclared or stateful: an insertion never makes a part worse."""
    if codec != "latin-1":
        return codec
    declared = codec_name(charset) if charset else None
    if declared in ("latin-1", "iso8859-1"):
        return "latin-1"
    if declared is None or declared in _STATEFUL:
        return "ascii"
    return declared


def _plain_fallback(text: str) -> str:
    # Letters with accents lose them (é -> e) rather than becoming "?" where the charset lacks
    # them; what is left unencodable becomes "?" in the caller.
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def encode_text(text: str, codec: str, *, html: bool, ascii_only: bool = False) -> bytes:
    """Encode inserted text in a part's codec; characters it lacks become HTML character
    references in HTML, or lose their accents (then "?") in plain text. ``ascii_only`` is for
    7bit parts, which may carry no 8-bit byte whatever their charset."""
    target = "ascii" if ascii_only and not is_stateful(codec) else codec
    try:
        return text.encode(target)
    except UnicodeEncodeError:
        if html:
            return text.encode(target, "xmlcharrefreplace")
        return _plain_fallback(text).encode(target, "replace")


# ---------------------------------------------------------------------------------------------
# Quoted-printable


def _decoded_span(body: bytes, start: int, end: int) -> int:
    """Decoded length of whole lines ``body[start:end]``: exact, because every
    quoted-printable construct (escape, soft break, odd "=" kept literally) ends in its line.
    Counted by ``smtp.octets.qp_length``, which decodes nothing."""
    return qp_length(body, start, end)


class QPLines:
    """Finds the physical line of a quoted-printable body that holds a decoded offset.

    Work is done lazily and remembered: a first rendering decodes the lines up to its edits only
    (in a few large C-level steps), later recipients reuse the lines found.
    """

    __slots__ = ("body", "known")

    def __init__(self, body: bytes) -> None:
        self.body = body
        # Lines already located, by decoded offset: the next recipients' edits sit at the same
        # offsets, so their renderings skip the search.
        self.known: dict[int, tuple[int, int, int, int]] = {}

    def line_at(self, decoded: int, anchor: tuple[int, int]) -> tuple[int, int, int, int]:
        """(raw start, decoded start, raw end, decoded end) of the line holding ``decoded``,
        searched from ``anchor``, a (raw, decoded) line start at or before it."""
        found = self.known.get(decoded)
        if found is None:
            found = self.known[decoded] = self._search(decoded, anchor)
        return found

    def _search(self, decoded: int, anchor: tuple[int, int]) -> tuple[int, int, int, int]:
        body, size = self.body, len(self.body)
        rs, ds = anchor
        while True:
            # Jump: decoded text is never longer than its encoding, so the line holding raw
            # offset rs + (decoded - ds) starts at or before the line we want.
            ls = body.rfind(b"\n", rs, min(rs + decoded - ds, size)) + 1
            if ls <= rs:
                break
            ds, rs = ds + _decoded_span(body, rs, ls), ls
        while True:
            nl = body.find(b"\n", rs)
            re = size if nl == -1 else nl + 1
            de = ds + _decoded_span(body, rs, re)
            if decoded < de or re == size:
                return rs, ds, re, de
            rs, ds = re, de


def qp_is_soft(body: bytes, line_end: int) -> bool:
    """Whether the physical line ending at ``line_end`` (just past its "\\n") is a soft break."""
    if line_end == 0 or body[line_end - 1] != 0x0A:
        return False
    stop = line_end - 1
    if stop and body[stop - 1] == 0x0D:
        stop -= 1
    return stop > 0 and body[stop - 1] == 0x3D


def _qp_lines(content: bytes, *, last_soft: bool, max_line: int) -> list[bytes]:
    """Encode one hard line's content into physical lines (without their line endings); every
    line but the last ends with a soft break "=", the last one too when ``last_soft``."""
    encoded = b"".join(map(QP_TOKENS.__getitem__, content))
    if not last_soft and encoded[-1:] in (b" ", b"\t"):
        # Trailing white space before a line break would be lost in transport.
        encoded = encoded[:-1] + b"=%02X" % encoded[-1]
    limit = max_line - 1  # room for the "=" of a soft break
    out: list[bytes] = []
    start = 0
    while len(encoded) - start > (limit if last_soft else max_line):
        cut = start + limit
        # Never split an "=XX" escape ("=" only ever starts one in encoded text).
        if encoded[cut - 1] == 0x3D:
            cut -= 1
        elif encoded[cut - 2] == 0x3D:
            cut -= 2
        out.append(encoded[start:cut] + b"=")
        start = cut
    out.append(encoded[start:] + (b"=" if last_soft else b""))
    return out


def qp_encode(data: bytes, *, soft_end: bool, newline: bytes, max_line: int = QP_MAX_LINE) -> bytes:
    """Quoted-printable encoding of ``data``. Hard line breaks keep their own ending; soft
    breaks use ``newline``. With ``soft_end`` the result ends with a soft break, so that it
    joins the unchanged line that follows."""
    pieces = LINE_BREAK.split(data)
    out: list[bytes] = []
    for i in range(0, len(pieces) - 1, 2):
        lines = _qp_lines(pieces[i], last_soft=False, max_line=max_line)
        out.extend(line + newline for line in lines[:-1])
        out.append(lines[-1] + pieces[i + 1])
    tail = pieces[-1]
    if tail or soft_end:
        lines = _qp_lines(tail, last_soft=soft_end, max_line=max_line)
        out.extend(line + newline for line in lines[:-1])
        out.append(lines[-1] + (newline if soft_end else b""))
    return b"".join(out)


# ---------------------------------------------------------------------------------------------
# Base64


@dataclass(frozen=True, slots=True)
class B64Layout:
    """How a base64 body is wrapped. ``regular``: the body is exactly the canonical wrapping of
    its data at ``line_len`` with ``newline``, so unchanged leading lines can be kept."""

    content_end: int  # end of the last base64 line; what follows (blank lines) is kept
    line_len: int
    newline: bytes
    regular: bool


def b64_layout(body: bytes, data: bytes, newline: bytes) -> B64Layout:
    content_end = len(body.rstrip(b" \t\r\n"))
    first = body.find(b"\n", 0, content_end)
    if first == -1:
        # One line says nothing about the wrapping unless it is longer than the usual 76.
        line_len = max(content_end, QP_MAX_LINE)
    else:
        line_len = first - 1 if body[first - 1 : first] == b"\r" else first
        newline = b"\r\n" if line_len != first else b"\n"
    if line_len <= 0 or line_len % 4:
        line_len = QP_MAX_LINE
    regular = b64_wrap(data, line_len, newline) == body[:content_end]
    return B64Layout(content_end, line_len, newline, regular)


def b64_wrap(data: bytes, line_len: int, newline: bytes) -> bytes:
    encoded = binascii.b2a_base64(data, newline=False)
    if len(encoded) <= line_len:
        return encoded
    return newline.join([encoded[i : i + line_len] for i in range(0, len(encoded), line_len)])


def b64_reencode(body: bytes, layout: B64Layout, data: bytes, first_change: int) -> bytes:
    """The new body for new decoded ``data`` whose bytes before ``first_change`` are unchanged."""
    keep_lines = 0
    per_line = layout.line_len * 3 // 4
    if layout.regular:
        # Each full line carries line_len * 3 / 4 data bytes, so the lines wholly before the
        # change encode the same bytes as before. The original's last line is never kept: it
        # may be short, and it has no line ending of its own.
        last_line = body.count(b"\n", 0, layout.content_end)
        keep_lines = min(first_change // per_line, last_line)
    kept = body[: keep_lines * (layout.line_len + len(layout.newline))]
    rest = b64_wrap(data[keep_lines * per_line :], layout.line_len, layout.newline)
    if not rest and kept:
        kept = kept[: -len(layout.newline)]
    return kept + rest + body[layout.content_end :]
