"""xtext (RFC 3461 4): the encoding of DSN's ENVID and ORCPT values and of XFORWARD's.

    xtext = *( xchar / hexchar ),  xchar = "!".."~" except "+" and "=",  hexchar = "+" 2HEX

Rule 1: pure. Decoding refuses a "+" not followed by two upper-case hex digits, and any
        character outside xchar (a space, a control, "="); encoding escapes exactly the
        characters xchar excludes, so ``decode(encode(s)) == s`` for every string of code
        points below 256.
Rule 2: values are case-sensitive (an ENVID is the sender's own identifier): nothing here
        changes case.
"""

from __future__ import annotations

import re

_HEX = re.compile(r"\+([0-9A-F]{2})")
_XTEXT = re.compile(r"(?:[!-*,-<>-~]|\+[0-9A-F]{2})*\Z")


def valid(value: str) -> bool:
    return _XTEXT.match(value) is not None


def decode(value: str) -> str:
    """``Ab+2Bc`` -> ``Ab+c``; ValueError when ``value`` is not xtext."""
    if "+" in _HEX.sub("", value):
        raise ValueError("bad xtext escape")
    return _HEX.sub(lambda m: chr(int(m.group(1), 16)), value)


def encode(value: str) -> str:
    out = []
    for ch in value:
        code = ord(ch)
        out.append(ch if 33 <= code <= 126 and ch not in "+=" else f"+{code:02X}")
    return "".join(out)
