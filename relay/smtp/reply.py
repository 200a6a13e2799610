"""SMTP replies read from a server: incremental parsing, enhanced codes, EHLO keywords.

Input: the bytes an upstream sends, split anywhere. Output: complete ``ServerReply`` values in
the order received, and the ``Extensions`` an EHLO reply announces.

Rule 1: pure: the connection feeds bytes in and takes replies out; nothing here reads a socket.
Rule 2: bounded: a line over ``MAX_LINE`` octets or a reply over ``MAX_LINES`` lines is a
        ``ReplyError``, so that a broken or hostile upstream cannot grow the relay's memory.
Rule 3: every line of one reply carries the same code (RFC 5321 4.2.1); the last line has a
        space or nothing after the code. Anything else is a ``ReplyError``: the connection
        cannot be trusted any more and is closed by the caller.
Rule 4: reply text is made safe to repeat: control characters (CR, LF, NUL, ESC ...) become
        "?" and invalid UTF-8 is replaced, because the text reaches the relay's own replies to
        its clients, its logs, failure notices and the audit trail.
Rule 5: linear time: each byte is looked at a bounded number of times, whatever the split.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MAX_LINE = 4096  # RFC 5321 4.5.3.1.5 says 512; real servers write longer lines, never this long
MAX_LINES = 256

_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_ENHANCED = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})(?= |$)")


class ReplyError(ValueError):
    """The upstream wrote something that is not an SMTP reply."""


@dataclass(frozen=True, slots=True)
class ServerReply:
    code: int
    lines: tuple[str, ...]

    @property
    def enhanced(self) -> str:
        """The RFC 3463 status code at the start of the text (``5.1.1``), or ""."""
        match = _ENHANCED.match(self.lines[0]) if self.lines else None
        return match.group(0) if match else ""

    @property
    def message(self) -> str:
        """The text on one line; an enhanced code repeated on every line is kept once."""
        code = self.enhanced
        parts = [self.lines[0]] if self.lines else []
        for line in self.lines[1:]:
            parts.append(line[len(code) :].lstrip() if code and line.startswith(code) else line)
        return " ".join(p for p in parts if p)

    @property
    def text(self) -> str:
        return f"{self.code} {self.message}".strip()


def _safe(raw: bytes) -> str:
    return _UNSAFE.sub("?", raw.decode("utf-8", "replace"))


class ReplyParser:
    """Feed bytes, get the replies they complete (Rules 2-5)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._code = 0
        self._lines: list[str] = []

    @property
    def pending(self) -> bool:
        """Whether part of a reply was received and not yet completed."""
        return bool(self._buffer or self._lines)

    def feed(self, data: bytes) -> list[ServerReply]:
        buffer = self._buffer + data if self._buffer else data
        done: list[ServerReply] = []
        pos = 0
        while True:
            nl = buffer.find(b"\n", pos)
            if nl == -1:
                break
            line = buffer[pos:nl]
            pos = nl + 1
            if len(line) > MAX_LINE:
                raise ReplyError(f"reply line over {MAX_LINE} octets")
            reply = self._line(line[:-1] if line.endswith(b"\r") else line)
            if reply is not None:
                done.append(reply)
        self._buffer = buffer[pos:]
        if len(self._buffer) > MAX_LINE:
            raise ReplyError(f"reply line over {MAX_LINE} octets")
        return done

    def _line(self, line: bytes) -> ServerReply | None:
        head = line[:3]
        sep = line[3:4]
        if len(head) != 3 or not head.isdigit() or head[:1] not in b"2345" or sep not in b" -":
            raise ReplyError(f"not an SMTP reply line: {_safe(line[:60])!r}")
        code = int(head)
        if self._lines and code != self._code:
            raise ReplyError(f"reply code changed inside a reply: {self._code} then {code}")
        self._code = code
        self._lines.append(_safe(line[4:]))
        if len(self._lines) > MAX_LINES:
            raise ReplyError(f"reply over {MAX_LINES} lines")
        if sep == b"-":
            return None
        reply = ServerReply(code, tuple(self._lines))
        self._lines = []
        return reply


@dataclass(frozen=True, slots=True)
class Extensions:
    """What an EHLO reply announced: keyword (upper case) -> its parameters as written."""

    keywords: Mapping[str, str]

    def has(self, keyword: str) -> bool:
        return keyword.upper() in self.keywords

    def words(self, keyword: str) -> list[str]:
        return self.keywords.get(keyword.upper(), "").split()

    @property
    def auth_mechanisms(self) -> frozenset[str]:
        return frozenset(w.upper() for w in self.words("AUTH"))

    @property
    def size_limit(self) -> int | None:
        words = self.words("SIZE")
        return int(words[0]) if words and words[0].isdigit() and int(words[0]) > 0 else None


NO_EXTENSIONS = Extensions({})


def parse_ehlo(reply: ServerReply) -> Extensions:
    """The keywords of a 250 EHLO reply; the first line is the server's greeting name."""
    found: dict[str, str] = {}
    for line in reply.lines[1:]:
        keyword, _, params = line.strip().partition(" ")
        if keyword.upper().startswith("AUTH="):  # pre-RFC 4954 servers: "AUTH=LOGIN PLAIN"
            params = f"{keyword[5:]} {params}".strip()
            keyword = "AUTH"
            params = " ".join(dict.fromkeys((found.get("AUTH", "") + " " + params).split()))
        if keyword:
            found[keyword.upper()] = params.strip()
    return Extensions(found)
