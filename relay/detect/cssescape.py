"""CSS escapes for the trackers stage: names written with escapes, and escaped URL text.

Stage: detection (pure). Input: nothing (patterns) or a CSS fragment as written. Output: regex
sources that read a CSS name however it is escaped, and the text a browser reads once escapes
are resolved. CSS Syntax Level 3, section 4.3.7 ("consume an escaped code point"): a backslash
followed by one to six hex digits (and one optional whitespace, CR LF counting as one) is that
code point; followed by any other character but a newline, it is that character. So
``u\\72l(``, ``\\75 rl(`` and ``\\55RL(`` all open a ``url(`` token.

Rule 1: a hex escape of zero, of a surrogate or past U+10FFFF is U+FFFD; a backslash at the end
        of the text is U+FFFD too; a backslash before a newline is dropped with the newline
        (a string's line continuation, section 4.3.5).
Rule 2: the patterns are for IGNORECASE regexes (CSS names compare ASCII case-insensitively)
        and never backtrack over what they read: each escape is one possessive run of hex.
"""

from __future__ import annotations

import re

# One escape, as written (Rule 1), for unquoted URLs and strings (the newline case included).
ESCAPE = r"\\(?:[0-9a-f]{1,6}+(?:\r\n|[ \t\n\r\f])?+|[\s\S])"
_HEX = "0123456789abcdef"
_UNESCAPE = re.compile(r"\\(?:([0-9a-fA-F]{1,6})(?:\r\n|[ \t\n\r\f])?|(\r\n|[\n\r\f])|([\s\S])|\Z)")


def _char(letter: str) -> str:
    """One character of a CSS name: itself or any escape that stands for it."""
    codes = sorted({f"{ord(letter.lower()):x}", f"{ord(letter.upper()):x}"})
    hex_escape = rf"\\0{{0,4}}(?:{'|'.join(codes)})(?![0-9a-f])(?:\r\n|[ \t\n\r\f])?+"
    plain = re.escape(letter)
    if letter.lower() in _HEX:  # "\e" is the code point U+000E, not the letter
        return rf"(?:{plain}|{hex_escape})"
    return rf"(?:{plain}|{hex_escape}|\\{plain})"


def name_pattern(word: str) -> str:
    """A regex source matching ``word`` (lower case) written with or without escapes."""
    return "".join(_char(letter) for letter in word)


def _replace(m: re.Match[str]) -> str:
    hex_digits, newline, other = m.group(1, 2, 3)
    if hex_digits is not None:
        code = int(hex_digits, 16)
        if code == 0 or 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
            return "\ufffd"
        return chr(code)
    if newline is not None:
        return ""
    return other if other is not None else "\ufffd"


def unescape(text: str) -> str:
    """``text`` as CSS reads it once escapes are resolved (Rule 1); linear, one pass."""
    return _UNESCAPE.sub(_replace, text) if "\\" in text else text
