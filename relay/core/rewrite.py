"""Byte-faithful rewriting: decisions -> text edits -> the bytes of one recipient's variant.

Stage: rewrite (pure). Input: the parsed message, the tracker candidates with their decisions
(and the footer's edits). Output: the message bytes for one recipient group.

Rule 1: the output equals the input except inside the edited spans: headers, boundaries, other
        parts and the HTML around an edit are copied from the raw bytes, never re-serialised.
Rule 2: an edited part keeps its charset and transfer encoding: quoted-printable edits are
        spliced into the encoded text with every other encoded byte kept (``qp_splice``;
        whole touched lines are re-encoded only for input whose escapes cannot be located),
        base64 is re-encoded from the first changed line on, 7bit/8bit bytes are spliced in
        place (see ``transfer``).
Rule 3: locked parts (signed, encrypted) are never modified: an edit aimed at one is a
        ValueError, as the pipeline must not ask for it.
Rule 4: the ``data-relay-purpose`` attribute never goes out, whatever the action.
Rule 5: overlapping edits are resolved the same way every time: an edit inside another is
        dropped (the outer one wins), partly overlapping edits become one edit over their
        union, insertions at the same point keep their order.
Rule 6: analyse once, render many: per-part layouts (the quoted-printable lines found holding
        edits, the base64 wrapping) are worked out on a message's first rendering and reused
        for the next recipients (a small cache keyed on the raw bytes object, kept alive).
Rule 7: rewriting never fetches anything and never adds a URL except the ones it is given.
Rule 8: no edit makes a line longer than 998 octets (RFC 5321): a 7bit/8bit part whose edited
        line would be is re-encoded quoted-printable, its header saying so (``longlines``).
"""

from __future__ import annotations

import binascii
import html
import threading
from collections import OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

from relay.core.longlines import requoted, too_long
from relay.core.qp_splice import splice as qp_splice
from relay.core.transfer import (
    B64Layout,
    QPLines,
    b64_layout,
    b64_reencode,
    encode_text,
    insertion_codec,
    is_stateful,
    qp_encode,
    qp_is_soft,
)
from relay.model import (
    Action,
    Candidate,
    Decision,
    Edit,
    ElementKind,
    Header,
    ParsedMessage,
    Part,
    Span,
)

# A 43-byte transparent 1x1 GIF (GIF89a, transparency index 0): no request, no pixel shown.
TRANSPARENT_GIF = (
    "data:image/gif;base64,R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw=="
)
_SRCSET_KINDS = frozenset({ElementKind.IMG_SRCSET, ElementKind.SOURCE_SRCSET})
_CSS_UNSAFE = str.maketrans({c: f"%{ord(c):02X}" for c in "\"'() \t\r\n\\"})
_HTML_TYPES = frozenset({"text/html", "text/x-amp-html"})

Splice = tuple[int, int, bytes]  # replace raw[start:end] by the bytes


# ---------------------------------------------------------------------------------------------
# Decisions -> edits


def strip_url(url: str, params: Sequence[str]) -> str:
    """``url`` without the identifying parts named in ``params``.

    Notation: a plain name drops every query parameter of that name (compared as written and
    percent-decoded); ``path:N`` drops the N-th path segment (1 = first, -1 = last). Fragment,
    other parameters and their order are kept as written.
    """
    names = {p for p in params if not p.startswith("path:")}
    segments = {int(p[5:]) for p in params if p.startswith("path:") and _is_int(p[5:])}
    base, hash_mark, fragment = url.partition("#")
    base, question, query = base.partition("?")
    if segments:
        scheme, sep, rest = base.partition("://")
        host, slash, path = rest.partition("/") if sep else ("", "", base)
        parts = path.split("/")
        drop = {n - 1 if n > 0 else len(parts) + n for n in segments}
        path = "/".join(p for i, p in enumerate(parts) if i not in drop)
        base = f"{scheme}{sep}{host}{slash}{path}" if sep else path
    if question and names:
        kept = [
            item
            for item in query.split("&")
            if (name := item.partition("=")[0]) not in names and unquote(name) not in names
        ]
        query = "&".join(kept)
        question = "?" if query else ""
    return f"{base}{question}{query}{hash_mark}{fragment}"


def _is_int(text: str) -> bool:
    return text.lstrip("-").isdigit() and text not in ("0", "-0")


def _written(url: str, kind: ElementKind) -> str:
    """A URL as it must be written where the candidate's URL was."""
    if kind is ElementKind.STYLE_BLOCK:
        # Raw CSS: no entities, but quotes, brackets and spaces would end the url().
        return url.translate(_CSS_UNSAFE)
    # In an HTML attribute "&" must be "&amp;" and quotes must not end the value; in an inline
    # style the CSS rules apply as well.
    written = html.escape(url, quote=True)
    return written.translate(_CSS_UNSAFE) if kind is ElementKind.STYLE_ATTR else written


def _action_edits(c: Candidate, action: Action, urls: Mapping[int, str]) -> list[Edit]:
    if action is Action.KEEP:
        return []
    if action in (Action.GATEWAY, Action.MINIMISE):
        if c.id not in urls:
            raise ValueError(f"no {action} URL given for candidate {c.id}")
        return [Edit(c.part_index, c.url_span, _written(urls[c.id], c.element))]
    if action is Action.STRIP_PARAMS:
        stripped = strip_url(c.url, c.identifying_params)
        if stripped == c.url:
            return []
        return [Edit(c.part_index, c.url_span, _written(stripped, c.element))]
    if action is Action.NEUTRALISE and c.element not in _SRCSET_KINDS:
        # The element and its size attributes stay, so the layout does not move.
        return [Edit(c.part_index, c.url_span, TRANSPARENT_GIF)]
    # remove, and neutralise inside a srcset (a data: candidate there would still be chosen).
    return [Edit(c.part_index, c.removal_span, "")]


def edits_for(
    candidates: Sequence[Candidate], decisions: Sequence[Decision], urls: Mapping[int, str]
) -> list[Edit]:
    """The text edits that carry out ``decisions``, normalised (Rule 5) and sorted."""
    by_id = {c.id: c for c in candidates}
    edits: list[Edit] = []
    for decision in decisions:
        candidate = by_id.get(decision.candidate_id)
        if candidate is None:
            raise ValueError(f"decision for unknown candidate {decision.candidate_id}")
        edits += _action_edits(candidate, decision.action, urls)
    for candidate in candidates:
        if candidate.purpose_attr_span is not None:
            edits.append(Edit(candidate.part_index, candidate.purpose_attr_span, ""))
    return normalise(edits)


def normalise(edits: Sequence[Edit]) -> list[Edit]:
    """Sort edits and resolve overlaps (Rule 5)."""

    def key(item: tuple[int, Edit]) -> tuple[int, int, int, int, int]:
        seq, e = item
        width = e.span.end - e.span.start
        return (e.part_index, e.span.start, 1 if width else 0, -e.span.end, seq)

    out: list[Edit] = []
    for _, edit in sorted(enumerate(edits), key=key):
        prev = out[-1] if out else None
        if prev is None or prev.part_index != edit.part_index or edit.span.start >= prev.span.end:
            if edit.span.start != edit.span.end or edit.replacement:
                out.append(edit)
        elif edit.span.end > prev.span.end:
            out[-1] = Edit(
                prev.part_index,
                Span(prev.span.start, edit.span.end),
                prev.replacement + edit.replacement,
            )
        # else: inside the previous edit, which wins.
    return out


# ---------------------------------------------------------------------------------------------
# Per-part layouts, computed once per message (Rule 6)


@dataclass(slots=True)
class _Layout:
    raw: bytes  # the message the layout belongs to (kept alive, so its id stays unique)
    ascii: bool
    qp: QPLines | None = None
    b64: B64Layout | None = None
    data: bytes = b""  # base64 only: the decoded body


_CACHE: OrderedDict[tuple[int, int, int, int], _Layout] = OrderedDict()
_CACHE_SIZE = 8
# Renderings may run in threads (a thread pool executor): the cache is shared between them.
_CACHE_LOCK = threading.Lock()


def _layout(message: ParsedMessage, part: Part) -> _Layout:
    key = (id(message.raw), part.index, part.body_start, part.body_end)
    with _CACHE_LOCK:
        found = _CACHE.get(key)
        if found is not None and found.raw is message.raw:
            _CACHE.move_to_end(key)
            return found
    text = part.text or ""
    layout = _Layout(message.raw, text.isascii() or part.codec == "latin-1")
    body = message.raw[part.body_start : part.body_end]
    if part.cte == "quoted-printable":
        layout.qp = QPLines(body)
    elif part.cte == "base64":
        layout.data = text.encode(part.codec)
        # The newline after the part's blank line is the one its encoded lines use.
        newline = (
            b"\r\n" if message.raw[part.body_start - 2 : part.body_start] == b"\r\n" else b"\n"
        )
        layout.b64 = b64_layout(body, layout.data, newline)
    with _CACHE_LOCK:
        _CACHE[key] = layout
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return layout


def _encoded_len(text: str, codec: str, ascii: bool) -> int:
    return len(text) if ascii else len(text.encode(codec))


# ---------------------------------------------------------------------------------------------
# Edits -> bytes


def _byte_edits(part: Part, edits: Sequence[Edit], layout: _Layout) -> list[Splice]:
    """Edits in decoded-byte offsets of the part, with their replacements encoded."""
    text = part.text or ""
    html_part = part.content_type in _HTML_TYPES
    ascii_only = part.cte == "7bit"
    if is_stateful(part.codec):
        # Pieces of such text do not encode independently: re-encode it whole.
        pieces, pos = [], 0
        for e in edits:
            pieces += [text[pos : e.span.start], e.replacement]
            pos = e.span.end
        new = "".join([*pieces, text[pos:]])
        old_len = len(text.encode(part.codec))
        return [(0, old_len, encode_text(new, part.codec, html=html_part, ascii_only=ascii_only))]
    target = insertion_codec(part.codec, part.charset)
    out: list[Splice] = []
    char, byte = 0, 0
    for e in edits:
        start = byte + _encoded_len(text[char : e.span.start], part.codec, layout.ascii)
        end = start + _encoded_len(text[e.span.start : e.span.end], part.codec, layout.ascii)
        rep = encode_text(e.replacement, target, html=html_part, ascii_only=ascii_only)
        out.append((start, end, rep))
        char, byte = e.span.end, end
    return out


def _apply(data: bytes, offset: int, edits: Sequence[Splice]) -> bytes:
    pieces: list[bytes] = []
    pos = 0
    for start, end, rep in edits:
        pieces += [data[pos : start - offset], rep]
        pos = end - offset
    pieces.append(data[pos:])
    return b"".join(pieces)


def _qp_splices(lines: QPLines, edits: list[Splice], newline: bytes) -> list[Splice]:
    """Re-encode the physical lines holding each group of edits (Rule 2)."""
    body = lines.body
    groups: list[tuple[int, int, int, list[Splice]]] = []  # raw start, decoded start, raw end
    anchor = (0, 0)
    for edit in edits:
        rs, ds, re, _ = lines.line_at(edit[0], anchor)
        re = max(re, lines.line_at(max(edit[1] - 1, edit[0]), (rs, ds))[2])
        # Edits sharing a line are re-encoded together (an empty last line included).
        if groups and (rs < groups[-1][2] or rs == groups[-1][0]):
            prev = groups[-1]
            groups[-1] = (prev[0], prev[1], max(re, prev[2]), [*prev[3], edit])
        else:
            groups.append((rs, ds, re, [edit]))
        anchor = (rs, ds)
    out: list[Splice] = []
    for rs, ds, re, group in groups:
        new = _apply(binascii.a2b_qp(body[rs:re]), ds, group)
        soft = qp_is_soft(body, re)
        if not soft and body[re - 1 : re] == b"\n" and not new.endswith(b"\n"):
            # The edit took out the hard line break that ended the region: end it with a soft
            # break instead, so the unchanged line after it stays a line of its own (joining
            # them would make a line longer than 76 characters).
            soft = True
        out.append((rs, re, qp_encode(new, soft_end=soft, newline=newline)))
    return out


def _part_splices(message: ParsedMessage, part: Part, edits: Sequence[Edit]) -> list[Splice]:
    """Splices in raw-message offsets that apply ``edits`` to ``part``."""
    layout = _layout(message, part)
    byte_edits = _byte_edits(part, edits, layout)
    body = message.raw[part.body_start : part.body_end]
    newline = part.newline.encode()
    if part.cte == "quoted-printable":
        lines = layout.qp or QPLines(body)
        found = qp_splice(lines, byte_edits, newline)
        splices = found if found is not None else _qp_splices(lines, byte_edits, newline)
    elif part.cte == "base64" and layout.b64 is not None:
        new = _apply(layout.data, 0, byte_edits)
        first = byte_edits[0][0] if byte_edits else 0
        splices = [(0, len(body), b64_reencode(body, layout.b64, new, first))]
    else:
        # 7bit, 8bit, binary and unknown encodings were decoded as identity.
        splices = byte_edits
        if too_long(body, splices):
            return requoted(message, part, body, splices)  # Rule 8
    return [(s + part.body_start, e + part.body_start, rep) for s, e, rep in splices]


def _check(message: ParsedMessage, index: int, edits: Sequence[Edit]) -> Part:
    if not 0 <= index < len(message.parts):
        raise ValueError(f"edit for part {index}, but the message has {len(message.parts)} parts")
    part = message.parts[index]
    if part.locked:
        raise ValueError(f"part {index} ({part.content_type}) is signed or encrypted: not editable")
    if part.text is None:
        raise ValueError(f"part {index} ({part.content_type}) has no editable text")
    for e in edits:
        if not 0 <= e.span.start <= e.span.end <= len(part.text):
            raise ValueError(
                f"edit span {e.span.start}..{e.span.end} is outside part {index} "
                f"(text of {len(part.text)} characters)"
            )
    return part


def _header_block(message: ParsedMessage, add_headers: Sequence[tuple[str, str]]) -> bytes:
    nl = "\r\n" if message.raw[: message.header_end].find(b"\r\n") != -1 else "\n"
    lines: list[str] = []
    for name, value in add_headers:
        if not name or any(c in name for c in ": \t\r\n") or not name.isascii():
            raise ValueError(f"invalid header name {name!r}")
        # A folded value keeps its folding (in the message's line ending); a line break not
        # followed by white space would start a new, injected header.
        folded = value.replace("\r\n", "\n").split("\n")
        if any(not line[:1].isspace() for line in folded[1:]):
            raise ValueError(f"header {name}: line break not followed by white space")
        lines.append(f"{name}: {nl.join(folded)}{nl}")
    return "".join(lines).encode("utf-8")


def render(
    message: ParsedMessage,
    edits: Sequence[Edit],
    *,
    remove_headers: Sequence[Header] = (),
    add_headers: Sequence[tuple[str, str]] = (),
) -> bytes:
    """The message with ``edits`` applied, ``remove_headers`` cut out and ``add_headers`` put
    at the top of the header block, every other byte as received."""
    raw = message.raw
    by_part: defaultdict[int, list[Edit]] = defaultdict(list)
    for edit in normalise(edits):
        by_part[edit.part_index].append(edit)
    splices: list[Splice] = []
    for index, part_edits in by_part.items():
        part = _check(message, index, part_edits)
        splices += _part_splices(message, part, part_edits)
    for header in dict.fromkeys(remove_headers):
        if not 0 <= header.start < header.end <= message.header_end:
            raise ValueError(f"header {header.name} is not in the message's header block")
        splices.append((header.start, header.end, b""))
    if add_headers:
        top = message.headers[0].start if message.headers else 0
        splices.append((top, top, _header_block(message, add_headers)))
    if not splices:
        return raw
    splices.sort(key=lambda s: (s[0], s[1]))
    pieces: list[bytes] = []
    pos = 0
    for start, end, rep in splices:
        if start < pos:
            raise ValueError(f"overlapping changes at byte {start}")
        pieces += [raw[pos:start], rep]
        pos = end
    pieces.append(raw[pos:])
    return b"".join(pieces)
