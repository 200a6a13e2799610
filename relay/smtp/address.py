"""The argument of MAIL FROM and RCPT TO: a path (RFC 5321 4.1.2, RFC 6531 3.3) and parameters.

Input: the text after ``FROM:`` or ``TO:`` as aiosmtpd decoded it (UTF-8, with the bytes that
are not UTF-8 kept as lone surrogates). Output: ``Argument``: the mailbox exactly as written
between the angle brackets (a source route dropped, as RFC 5321 4.1.1.3 says to), whether it
is non-ASCII, and the ESMTP parameters as written; or ``AddressError`` saying what is wrong.

Rule 1: the mailbox decided on, audited and sent upstream is this one string: a relay that
        accepted ``(x)user@d`` or a quoted string with a CR and then let a library re-parse it
        would send something else. So anything outside the grammar is refused: control
        characters (NUL, CR, LF, VT, DEL...) even inside a quoted string, bytes that are not
        UTF-8, comments, unbalanced quotes or brackets, empty labels, text after the ``>``
        that is not a parameter.
Rule 2: valid input is never refused: quoted local parts, address literals (``[192.0.2.1]``,
        ``[IPv6:...]``), UTF-8 local parts and U-labels (RFC 6531), a source route, a space
        after the colon and a missing pair of angle brackets (as Postfix and aiosmtpd take
        them) are accepted.
Rule 3: ``<local@domain>`` made of plain ASCII takes a fast path (one regular expression);
        aiosmtpd's own parsing through ``email._header_value_parser`` cost about 13 % of a
        worker's CPU (issue 15). Every other form goes through the full grammar, in linear time.
Rule 4: pure: no I/O, no reply text; ``inbound/smtpd.py`` maps the errors to replies.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

# RFC 5322 atext, ASCII part; RFC 6531 adds every non-ASCII UTF-8 character.
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_FAST = re.compile(
    rf"<([{_ATEXT}]+(?:\.[{_ATEXT}]+)*@{_LABEL}(?:\.{_LABEL})*)>(?: +(.*))?\Z", re.DOTALL
)
_ATOM = re.compile(rf"[{_ATEXT}\u0080-\U0010ffff]+")
_ULABEL = re.compile(
    r"[A-Za-z0-9\u0080-\U0010ffff](?:[A-Za-z0-9\u0080-\U0010ffff-]*[A-Za-z0-9\u0080-\U0010ffff])?"
)
_KEYWORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
# esmtp-value: printable ASCII but "=" and SP (RFC 5321 4.1.2), or UTF-8 (RFC 6531 3.3).
_VALUE = re.compile(r"[!-<>-~\u0080-\U0010ffff]+\Z")
_GENERAL_LITERAL = re.compile(r"[A-Za-z0-9-]*[A-Za-z0-9]:[!-Z^-~]+\Z")

MAX_DOMAIN = 255


class AddressError(ValueError):
    """The argument is not valid; ``kind`` is "address", "utf8" (non-ASCII where it may not
    be) or "parameter"; the message says what is wrong, for the reply."""

    def __init__(self, kind: str, what: str) -> None:
        super().__init__(what)
        self.kind = kind


@dataclass(frozen=True, slots=True)
class Argument:
    address: str  # the mailbox as written, "" for the null reverse-path <>
    utf8: bool  # the address holds non-ASCII characters
    params: tuple[str, ...]  # the ESMTP parameters as written, e.g. ("ENVID=Ab+2B", "RET=HDRS")


def parse(arg: str, *, null_allowed: bool) -> Argument:
    """MAIL FROM's (``null_allowed``) or RCPT TO's argument -> ``Argument``; AddressError."""
    text = arg.lstrip(" ")
    fast = _FAST.match(text)
    if fast is not None:
        return Argument(fast.group(1), False, _params(fast.group(2) or ""))
    _check_characters(text)
    if text.startswith("<"):
        end = _path_end(text)
        inner, rest = text[1:end], text[end + 1 :]
        if rest and not rest.startswith(" "):
            raise AddressError("address", "text after the closing '>'")
        if inner == "":
            if not null_allowed:
                raise AddressError("address", "empty address")
            return Argument("", False, _params(rest))
        address = _drop_route(inner)
    else:
        # No angle brackets: the address is everything up to the first space.
        address, _, rest = text.partition(" ")
        if not address:
            raise AddressError("address", "no address")
    mailbox(address)
    return Argument(address, not address.isascii(), _params(rest))


def fold(address: str) -> str:
    """The form two RCPTs naming one mailbox share: the domain is case-insensitive (RFC 5321
    2.4), the local part is kept as written (it may be case-sensitive at its server)."""
    local, at, domain = address.rpartition("@")
    return f"{local}@{domain.lower()}" if at else address.lower()


def mailbox(address: str) -> None:
    """Check ``local@domain`` (RFC 5321 Mailbox, RFC 6531); AddressError says what is wrong."""
    _check_characters(address)
    if address.lower() == "postmaster":
        return  # RFC 5321 4.1.1.3: <Postmaster> without a domain is a valid forward-path
    local, at, domain = _split(address)
    if not at:
        raise AddressError("address", "no @domain")
    _local_part(local)
    _domain(domain)


def _check_characters(text: str) -> None:
    for ch in text:
        code = ord(ch)
        if code < 32 or 127 <= code < 160:  # C0, DEL and C1 (U+0085 is a line break to some)
            raise AddressError("address", f"control character U+{code:04X}")
        if 0xD800 <= code <= 0xDFFF:
            raise AddressError("address", "bytes that are not UTF-8")


def _path_end(text: str) -> int:
    """Index of the '>' closing the path that starts at text[0] ('<'), quotes respected."""
    quoted = escaped = False
    for index in range(1, len(text)):
        ch = text[index]
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == ">" and not quoted:
            return index
        elif ch == "<" and not quoted:
            raise AddressError("address", "'<' inside the address")
    raise AddressError("address", "no closing '>'")


def _drop_route(inner: str) -> str:
    """``@a,@b:user@c`` -> ``user@c`` (RFC 5321 4.1.1.3: a source route is ignored)."""
    if not inner.startswith("@"):
        return inner
    route, colon, rest = inner.partition(":")
    if not colon:
        raise AddressError("address", "source route without ':'")
    for hop in route.split(","):
        if not hop.startswith("@"):
            raise AddressError("address", "bad source route")
        _domain(hop[1:])
    return rest


def _split(address: str) -> tuple[str, str, str]:
    """Split at the '@' that ends the local part (a quoted local part may hold '@')."""
    if address.startswith('"'):
        index, escaped = 1, False
        while index < len(address):
            ch = address[index]
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                break
            index += 1
        else:
            raise AddressError("address", "unterminated quoted string")
        local, rest = address[: index + 1], address[index + 1 :]
        if not rest.startswith("@"):
            raise AddressError("address", "text after a quoted local part")
        return local, "@", rest[1:]
    return address.rpartition("@")


def _local_part(local: str) -> None:
    if not local:
        raise AddressError("address", "empty local part")
    if local.startswith('"'):
        body, escaped = local[1:-1], False
        for ch in body:
            if escaped:
                escaped = False  # quoted-pairSMTP: backslash and any printable (no controls)
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                raise AddressError("address", "unescaped '\"' in a quoted local part")
        if escaped:
            raise AddressError("address", "quoted local part ends with a backslash")
        return
    for atom in local.split("."):
        if not atom:
            raise AddressError("address", "leading, trailing or double dot in the local part")
        if not _ATOM.fullmatch(atom):
            bad = next(c for c in atom if not _ATOM.fullmatch(c))
            raise AddressError("address", f"character {bad!r} not allowed in a local part")


def _domain(domain: str) -> None:
    if not domain:
        raise AddressError("address", "empty domain")
    if domain.startswith("["):
        _address_literal(domain)
        return
    if len(domain.encode("utf-8", "surrogatepass")) > MAX_DOMAIN:
        raise AddressError("address", "domain longer than 255 octets")
    for label in domain.split("."):
        if not label:
            raise AddressError("address", "empty label in the domain")
        if not _ULABEL.fullmatch(label):
            raise AddressError("address", f"label {label[:20]!r} is not a domain label")


def _address_literal(domain: str) -> None:
    if not domain.endswith("]"):
        raise AddressError("address", "unterminated address literal")
    inner = domain[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            ipaddress.IPv6Address(inner[5:])
            return
        if inner[:1].isdigit():
            ipaddress.IPv4Address(inner)
            return
    except ValueError:
        raise AddressError("address", f"bad address literal {domain[:50]!r}") from None
    if not _GENERAL_LITERAL.match(inner):
        raise AddressError("address", f"bad address literal {domain[:50]!r}")


def _params(rest: str) -> tuple[str, ...]:
    _check_characters(rest)
    words = rest.split(" ")
    params = tuple(w for w in words if w)
    for param in params:
        keyword, eq, value = param.partition("=")
        if not _KEYWORD.match(keyword):
            raise AddressError("parameter", f"bad parameter keyword {keyword[:30]!r}")
        if eq and not _VALUE.match(value):
            raise AddressError("parameter", f"bad value for {keyword.upper()}")
    return params
