"""The ESMTP parameters of MAIL and RCPT the relay accepts, checked (RFC 1870, 6152, 6531, 3461).

Input: the parameters as the client wrote them (``address.Argument.params``). Output: the
same strings, kept as written for the upstream (an ENVID is case-sensitive xtext; aiosmtpd
upper-cases every parameter), plus what the relay itself needs (the declared size, SMTPUTF8,
and for its own failure notices RET, ENVID, NOTIFY and ORCPT, decoded); or ``ParamError``.

MAIL: ``SIZE=n`` (RFC 1870), ``BODY=7BIT|8BITMIME`` (RFC 6152), ``SMTPUTF8`` (RFC 6531),
``RET=FULL|HDRS`` and ``ENVID=xtext`` (RFC 3461, at most 100 characters), ``AUTH=xtext``
(RFC 4954, accepted and not passed on). RCPT: ``NOTIFY=NEVER`` or a list of ``SUCCESS``,
``FAILURE``, ``DELAY`` and ``ORCPT=addr-type;xtext`` (RFC 3461; RFC 6533 ``utf-8`` type).

Rule 1: a keyword the relay does not announce is refused with 555 (RFC 5321 4.1.1.11), a
        known one with a bad value or given twice with 501; keywords are case-insensitive,
        values are kept exactly as written.
Rule 2: pure: no I/O, no reply text.
"""

from __future__ import annotations

from dataclasses import dataclass

from relay.smtp import xtext

MAX_ENVID = 100  # RFC 3461 4.4
MAX_ORCPT = 500  # RFC 3461 4.2: the whole parameter fits in a 512-octet line anyway
NOTIFY_WORDS = frozenset({"SUCCESS", "FAILURE", "DELAY"})


class ParamError(ValueError):
    """``unknown`` is True for a keyword not implemented (555), False for a bad value (501)."""

    def __init__(self, what: str, *, unknown: bool = False) -> None:
        super().__init__(what)
        self.unknown = unknown


@dataclass(frozen=True, slots=True)
class MailParams:
    written: tuple[str, ...]  # as written, AUTH left out
    size: int | None = None
    smtputf8: bool = False
    ret: str | None = None  # "FULL" or "HDRS"
    envid: str | None = None  # decoded


@dataclass(frozen=True, slots=True)
class RcptParams:
    written: tuple[str, ...]
    notify: frozenset[str] | None = None  # None: not given; {"NEVER"} or words of NOTIFY_WORDS
    orcpt: tuple[str, str] | None = None  # (addr-type lower-cased, decoded address)


def _split(params: tuple[str, ...]) -> list[tuple[str, str | None, str]]:
    seen: set[str] = set()
    out = []
    for param in params:
        keyword, eq, value = param.partition("=")
        upper = keyword.upper()
        if upper in seen:
            raise ParamError(f"{upper} given twice")
        seen.add(upper)
        out.append((upper, value if eq else None, param))
    return out


def mail(params: tuple[str, ...]) -> MailParams:
    written: list[str] = []
    size: int | None = None
    smtputf8 = False
    ret = envid = None
    for keyword, value, param in _split(params):
        if keyword == "AUTH":
            if value is None or not (value == "<>" or xtext.valid(value)):
                raise ParamError("AUTH needs an xtext value or <>")
            continue  # RFC 4954 5: never passed on from an unauthenticated hop
        if keyword == "SIZE":
            if value is None or not value.isascii() or not value.isdigit() or len(value) > 20:
                raise ParamError("SIZE needs a number of octets")
            size = int(value)
        elif keyword == "BODY":
            if value is None or value.upper() not in ("7BIT", "8BITMIME"):
                raise ParamError("BODY must be 7BIT or 8BITMIME")
        elif keyword == "SMTPUTF8":
            if value is not None:
                raise ParamError("SMTPUTF8 takes no value")
            smtputf8 = True
        elif keyword == "RET":
            if value is None or value.upper() not in ("FULL", "HDRS"):
                raise ParamError("RET must be FULL or HDRS")
            ret = value.upper()
        elif keyword == "ENVID":
            if value is None or not xtext.valid(value) or len(value) > MAX_ENVID:
                raise ParamError("ENVID must be xtext of at most 100 characters")
            envid = xtext.decode(value)
        else:
            raise ParamError(f"MAIL parameter {keyword} not implemented", unknown=True)
        written.append(param)
    return MailParams(tuple(written), size, smtputf8, ret, envid)


def rcpt(params: tuple[str, ...], *, smtputf8: bool = False) -> RcptParams:
    notify: frozenset[str] | None = None
    orcpt: tuple[str, str] | None = None
    for keyword, value, _param in _split(params):
        if keyword == "NOTIFY":
            words = frozenset((value or "").upper().split(","))
            if not (words == {"NEVER"} or (words and words <= NOTIFY_WORDS)):
                raise ParamError("NOTIFY must be NEVER or a list of SUCCESS, FAILURE, DELAY")
            notify = words
        elif keyword == "ORCPT":
            orcpt = _orcpt(value, smtputf8)
        else:
            raise ParamError(f"RCPT parameter {keyword} not implemented", unknown=True)
    return RcptParams(params, notify, orcpt)


def _orcpt(value: str | None, smtputf8: bool) -> tuple[str, str]:
    kind, semi, raw = (value or "").partition(";")
    if not semi or not kind or not raw or len(raw) > MAX_ORCPT:
        raise ParamError("ORCPT must be addr-type;address")
    if not kind.isascii() or not all(c.isalnum() or c in "-" for c in kind):
        raise ParamError("ORCPT address type must be an atom such as rfc822")
    if kind.lower() == "utf-8" and smtputf8:
        # RFC 6533 3: utf-8-addr-xtext, with \x{HEX} escapes and non-ASCII kept as is.
        return kind.lower(), raw
    if not xtext.valid(raw):
        raise ParamError("ORCPT address must be xtext")
    return kind.lower(), xtext.decode(raw)
