"""Line length: no edit of the relay may make a line longer than SMTP allows.

Stage: helper of rewrite (pure). Input: a 7bit/8bit/binary part's body, the splices that
carry out its edits (body offsets), the parsed message. Output: either the same splices, or
splices that re-encode the part quoted-printable and say so in its header.

Rule 1: RFC 5321 4.5.3.1.6: a line is at most 998 octets before its CRLF; an upstream answers
        a longer one with "500 Line too long" and the sender's client gets a permanent
        failure. The relay's edits (a gateway URL longer than the original, a footer put on
        the ``</body>`` line) must never produce one.
Rule 2: only the lines an edit touches are measured: a long line the sender wrote and the
        relay did not touch is the sender's, passed on as received (fidelity, SPEC 4).
Rule 3: when an edited line would be too long, the part is re-encoded quoted-printable
        (RFC 2045 6.7: lines of at most 76 characters): its decoded content is exactly the
        edited content, each line break of the part stays a hard line break with its own
        ending, and its ``Content-Transfer-Encoding`` field says ``quoted-printable`` (added
        when the part had none). Every other byte of the message, other parts and headers
        included, is as received.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from relay.core.transfer import qp_encode
from relay.model import ParsedMessage, Part

Splice = tuple[int, int, bytes]

MAX_LINE = 998  # octets before the line ending (RFC 5321 4.5.3.1.6)
_CTE = re.compile(
    rb"^content-transfer-encoding[ \t]*:([^\r\n]*(?:\r?\n[ \t][^\r\n]*)*)", re.IGNORECASE | re.M
)


def _longest(data: bytes) -> int:
    """The longest line of ``data``, line endings excluded."""
    return max((len(line) - line.endswith(b"\r") for line in data.split(b"\n")), default=0)


def too_long(body: bytes, splices: Sequence[Splice]) -> bool:
    """Whether applying ``splices`` (sorted, body offsets) makes a touched line too long.
    Only the stretches of lines holding splices are rebuilt and measured (Rule 2)."""
    i = 0
    while i < len(splices):
        start = body.rfind(b"\n", 0, splices[i][0]) + 1
        j = i
        stop = body.find(b"\n", splices[j][1])
        end = len(body) if stop == -1 else stop
        while j + 1 < len(splices) and splices[j + 1][0] <= end:
            j += 1
            stop = body.find(b"\n", splices[j][1])
            end = max(end, len(body) if stop == -1 else stop)
        pieces, pos = [], start
        for s, e, rep in splices[i : j + 1]:
            pieces += [body[pos:s], rep]
            pos = e
        pieces.append(body[pos:end])
        if _longest(b"".join(pieces)) > MAX_LINE:
            return True
        i = j + 1
    return False


def requoted(
    message: ParsedMessage, part: Part, body: bytes, splices: Sequence[Splice]
) -> list[Splice]:
    """Splices (raw-message offsets) that replace the part's body by the quoted-printable
    encoding of the edited body and mark the part's header (Rule 3)."""
    pieces: list[bytes] = []
    pos = 0
    for start, end, rep in splices:
        pieces += [body[pos:start], rep]
        pos = end
    pieces.append(body[pos:])
    newline = part.newline.encode()
    encoded = qp_encode(b"".join(pieces), soft_end=False, newline=newline)
    out = [(part.body_start, part.body_end, encoded)]
    head = message.raw[part.header_start : part.body_start]
    found = _CTE.search(head)
    if found is not None:
        start, end = part.header_start + found.start(1), part.header_start + found.end(1)
        out.append((start, end, b" quoted-printable"))
    else:
        field = b"Content-Transfer-Encoding: quoted-printable" + newline
        if part.header_start == 0 and message.header("MIME-Version") is None:
            field = b"MIME-Version: 1.0" + newline + field
        out.append((part.header_start, part.header_start, field))
    return out
