"""The one view of a message's bytes: decided once, at the end of DATA, then filtered and sent.

Input: the DATA body as received, dot-unstuffed after every CRLF. Output: the bytes the filter
reads and the upstream receives, or a ``ValueError`` naming why the message cannot be taken.

Rule 1: every line ends in CRLF. A lone LF and a lone CR are each made a CRLF, exactly as
        aiosmtplib, Python's universal newlines and most MTAs read them, so that no program
        downstream can see a line break the filter did not see (``Subject: x<CR>Bcc: ...``
        is two header lines here too, and ``--b1<CR>Content-Type: text/html`` a real part).
        A dot after a lone LF is transparency stuffing, removed with the LF: Postfix and Exim
        read LF as the end of a line and unstuff the line after it, and Python's smtplib,
        given bytes with LF line endings, stuffs such lines (``<LF>..hero {`` on the wire is
        the line ``.hero {``). A lone CR ends no line for them, and no client stuffs after it.
Rule 2: a dot line written with a lone CR or LF on either side (``<LF>.<LF>``,
        ``<CR><LF>.<LF>``, ``<CR>.<CR>``...) is refused, not normalised: it is the SMTP
        smuggling family (CVE-2023-51764 and relatives), and normalising it would end the
        message early for us or for a lenient upstream.
Rule 3: a NUL octet is refused. RFC 5321 (4.1.1.4 via RFC 5322 2.3) and RFC 2045/6152 allow
        none outside BINARYMIME, which the relay does not announce; an upstream that drops
        NULs, as some do, would read ``<CRLF><NUL>.<CRLF>`` as the end of the message and the
        bytes after it as commands.
Rule 4: linear time, and nearly free for the common case: a message with only CRLF line
        endings and no NUL is returned as it is after one look at its line facts (``octets``).
"""

from __future__ import annotations

import re

from relay.smtp.octets import facts

# <LF>.<LF>, <LF>.<CR><LF>, <CR><LF>.<LF>, <CR>.<CR> ...: the dot line written with a lone CR
# or LF on either side.
_SMUGGLING = re.compile(rb"(?:(?<!\r)\n|\r(?!\n))\.(?:\r\n|\n|\r)|\r\n\.(?:(?<!\r)\n|\r(?!\n))")
# A lone CR (not before LF) or a lone LF (not after CR): each is one line break; the dot a
# client stuffed after a lone LF goes with it (Rule 1).
_BARE = re.compile(rb"\r(?!\n)|(?<!\r)\n\.?")

SMUGGLING = "a dot line written with a lone CR or LF (SMTP smuggling)"
NUL = "a NUL octet in the message data"


def canonical(data: bytes) -> bytes:
    """The message with CRLF line endings (Rule 1); ValueError for Rules 2 and 3."""
    bare_cr, bare_lf, nul, _ = facts(data)
    if nul:
        raise ValueError(NUL)
    if not (bare_cr or bare_lf):
        return data
    if _SMUGGLING.search(data):
        raise ValueError(SMUGGLING)
    return _BARE.sub(b"\r\n", data)
