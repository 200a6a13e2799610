"""SMTP commands a client writes: rendered byte for byte, never re-parsed, never unsafe.

Input: addresses exactly as the relay decided and audited them, ESMTP parameters, the message.
Output: the bytes of each command line, and the DATA payload (dot-stuffed, with its end line).

Rule 1: an address is written between ``<`` and ``>`` as it was given: no parsing, quoting,
        comment removal or case change, so that what the upstream receives is what consent and
        audit were decided for (an address library that re-parses can turn
        ``(x)victim@example`` into ``victim@example``).
Rule 2: no control character (C0 or DEL: CR, LF, NUL ...) and no invalid UTF-8 ever reaches
        the wire inside a command, whatever the caller passes: ``UnsafeCommand`` is raised
        instead. This is defence in depth; the inbound side refuses such addresses at MAIL and
        RCPT already.
Rule 3: ESMTP parameters are ``keyword[=value]`` (RFC 5321 4.1.2): a keyword of letters,
        digits and "-", a value without space, "=" or control characters.
Rule 4: the message is sent as given: dot-stuffing (RFC 5321 4.5.2) is the only change, and a
        final CRLF is added only when the data does not end with one (the end line needs it).
        There is no line-ending normalisation here: data with a bare CR or LF, or with NUL, is
        reported by ``body_defect`` and must not be sent (RFC 5321 2.3.8, 4.1.1.4).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence

from relay.smtp import octets
from relay.smtp.octets import facts, payload

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")
_VALUE_BAD = re.compile(r"[\x00-\x20=\x7f]")

DATA = b"DATA\r\n"
RSET = b"RSET\r\n"
QUIT = b"QUIT\r\n"
NOOP = b"NOOP\r\n"
STARTTLS = b"STARTTLS\r\n"
END_OF_DATA = octets.END_OF_DATA


class UnsafeCommand(ValueError):
    """A command argument that would change the command on the wire (Rules 2, 3)."""


def _encoded(text: str, what: str) -> bytes:
    if _CONTROL.search(text):
        raise UnsafeCommand(f"{what} contains a control character")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafeCommand(f"{what} is not valid UTF-8") from None


def _params(params: Sequence[str]) -> bytes:
    out = b""
    for param in params:
        keyword, sep, value = param.partition("=")
        if not _KEYWORD.fullmatch(keyword) or (sep and (not value or _VALUE_BAD.search(value))):
            raise UnsafeCommand(f"ESMTP parameter {param[:40]!r} is malformed")
        out += b" " + _encoded(param, "ESMTP parameter")
    return out


def mail_from(address: str, params: Sequence[str] = ()) -> bytes:
    """``MAIL FROM:<address> params``; the null reverse-path is ``""``."""
    return b"MAIL FROM:<" + _encoded(address, "sender address") + b">" + _params(params) + b"\r\n"


def rcpt_to(address: str, params: Sequence[str] = ()) -> bytes:
    if not address:
        raise UnsafeCommand("empty recipient address")
    return b"RCPT TO:<" + _encoded(address, "recipient address") + b">" + _params(params) + b"\r\n"


def ehlo(name: str) -> bytes:
    return b"EHLO " + _encoded(name or "localhost", "EHLO name") + b"\r\n"


def helo(name: str) -> bytes:
    return b"HELO " + _encoded(name or "localhost", "HELO name") + b"\r\n"


def xforward(arguments: str) -> bytes:
    return b"XFORWARD " + _encoded(arguments, "XFORWARD attributes") + b"\r\n"


def auth(mechanism: str, initial: bytes | None = None) -> bytes:
    """``AUTH mechanism [initial-response]``; an empty initial response is ``=`` (RFC 4954)."""
    line = b"AUTH " + _encoded(mechanism, "AUTH mechanism")
    if initial is not None:
        line += b" " + (base64.b64encode(initial) or b"=")
    return line + b"\r\n"


def auth_response(data: bytes) -> bytes:
    return base64.b64encode(data) + b"\r\n"


def body_defect(data: bytes) -> str | None:
    """What makes ``data`` unfit for DATA as it is (Rule 4), or None (``octets.facts``)."""
    bare_cr, bare_lf, nul, _ = facts(data)
    if nul:
        return "NUL byte"
    if bare_cr:
        return "bare CR"
    if bare_lf:
        return "bare LF"
    return None


def data_payload(data: bytes) -> bytes:
    """The message dot-stuffed and followed by the end-of-data line (Rule 4; ``octets``)."""
    return payload(data)
