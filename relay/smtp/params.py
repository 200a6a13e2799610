"""Which ESMTP parameters go to the upstream, and what a message needs from it.

Input: the MAIL and RCPT parameters as the client wrote them (``Envelope.mail_options``,
``Envelope.rcpt_options``), the upstream's ``Extensions`` and the bytes to send. Output: the
parameters to write, and whether the message needs 8BITMIME or SMTPUTF8.

Rule 1: a parameter goes on only when the upstream announced its extension: BODY=8BITMIME
        with 8BITMIME, SMTPUTF8 with SMTPUTF8, RET/ENVID (MAIL) and NOTIFY/ORCPT (RCPT) with DSN
        (RFC 3461 5.2.1: passed on unchanged, ENVID and ORCPT case and xtext kept as written),
        SIZE (the relay's own count of the bytes it sends) with SIZE. Anything else the client
        gave (AUTH=, an unknown extension) is the client's business with the relay, not the
        upstream's, and is dropped.
Rule 2: to an upstream without DSN no DSN parameter is sent (RFC 3461 5.2.2 a); a recipient
        whose NOTIFY asks for SUCCESS is then owed a "relayed" notice by the relay
        (``wants_success_notice``), one that asked for NEVER or no SUCCESS is owed none.
Rule 3: BODY=8BITMIME is declared when the data has 8-bit bytes or the client declared it;
        7-bit data needs no declaration (RFC 6152 3).
Rule 4: a message needs SMTPUTF8 when an envelope address is not ASCII, or when the client asked
        for SMTPUTF8 and a header is not ASCII (RFC 6531 3.4; RFC 6532 headers). The client's
        SMTPUTF8 request is passed on to an upstream that offers the extension even when the
        message happens not to need it, as Postfix does.
"""

from __future__ import annotations

from collections.abc import Sequence

from relay.smtp import param_syntax
from relay.smtp.reply import Extensions

MAIL_DSN = frozenset({"RET", "ENVID"})
RCPT_DSN = frozenset({"NOTIFY", "ORCPT"})


def keyword(param: str) -> str:
    return param.partition("=")[0].upper()


def value_of(options: Sequence[str], name: str) -> str | None:
    for option in options:
        key, sep, value = option.partition("=")
        if key.upper() == name and sep:
            return value
    return None


def declared(options: Sequence[str], name: str) -> bool:
    return any(keyword(o) == name for o in options)


def header_section(data: bytes) -> bytes:
    end = data.find(b"\r\n\r\n")
    return data if end == -1 else data[:end]


def needs_smtputf8(
    mail_from: str, rcpts: Sequence[str], data: bytes, options: Sequence[str]
) -> bool:
    """Rule 4."""
    if not mail_from.isascii() or not all(r.isascii() for r in rcpts):
        return True
    return declared(options, "SMTPUTF8") and not header_section(data).isascii()


def mail_params(
    options: Sequence[str],
    extensions: Extensions,
    *,
    size: int,
    eight_bit: bool,
    smtputf8: bool,
) -> list[str]:
    """MAIL parameters for this upstream (Rules 1, 3); the caller checked 8BITMIME/SMTPUTF8."""
    out: list[str] = []
    body = (value_of(options, "BODY") or "").upper()
    if extensions.has("8BITMIME") and (eight_bit or body == "8BITMIME"):
        out.append("BODY=8BITMIME")
    if extensions.has("SMTPUTF8") and (smtputf8 or declared(options, "SMTPUTF8")):
        out.append("SMTPUTF8")
    if extensions.has("SIZE"):
        out.append(f"SIZE={size}")
    if extensions.has("DSN"):
        out += [o for o in options if keyword(o) in MAIL_DSN]
    return out


def rcpt_params(options: Sequence[str], extensions: Extensions) -> list[str]:
    """RCPT parameters for this upstream (Rules 1, 2)."""
    if not extensions.has("DSN"):
        return []
    return [o for o in options if keyword(o) in RCPT_DSN]


def wants_success_notice(options: Sequence[str]) -> bool:
    """Rule 2: NOTIFY (as parsed at RCPT, ``param_syntax``) includes SUCCESS."""
    try:
        notify = param_syntax.rcpt(tuple(options), smtputf8=True).notify
    except param_syntax.ParamError:
        return False  # checked at RCPT already; a notice is never owed on a doubt
    return notify is not None and "SUCCESS" in notify
