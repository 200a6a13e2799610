"""Commands in RESP, the Redis protocol, written as redis-py writes them.

Stage: async edge helper (store), pure. Input: a command's arguments. Output: its bytes.

Rule 1: bytes go as they are, text as UTF-8, integers and floats as their ``repr``; a bool or
        any other type is refused with redis-py's ``DataError`` (a bool is ambiguous).
Rule 2: a first argument with spaces (``"SCRIPT LOAD"``) is several words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import DataError


def _encode(value: Any, encoding: str) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode(encoding)
    if isinstance(value, bool):  # as redis-py: a bool is ambiguous
        raise DataError("Invalid input of type: 'bool'. Convert to a bytes, string, int or float")
    if isinstance(value, int | float):
        return repr(value).encode()
    if isinstance(value, memoryview):
        return value.tobytes()
    raise DataError(f"Invalid input of type: '{type(value).__name__}'")


def pack(args: Sequence[Any], encoding: str = "utf-8") -> bytes:
    """One command in RESP. A first argument with spaces (``"SCRIPT LOAD"``) is several words,
    as redis-py sends it."""
    if isinstance(args[0], str) and " " in args[0]:
        args = (*args[0].split(), *args[1:])
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        kind = type(arg)  # the common kinds first, without a call
        data = (
            arg
            if kind is bytes
            else arg.encode(encoding)
            if kind is str
            else _encode(arg, encoding)
        )
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)
