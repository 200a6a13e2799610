"""Commands in RESP, the Redis protocol, written as redis-py writes them.

Stage: async edge helper (store), pure. Input: a command's arguments. Output: its bytes.

Rule 1: bytes go as they are, text as UTF-8, integers and floats as their ``repr``; every
        other kind as redis-py's own ``Encoder`` writes it or refuses it (``DataError``: a
        bool is ambiguous).
Rule 2: a first argument with spaces (``"SCRIPT LOAD"``) is several words.
Rule 3: hiredis' ``pack_command`` (C, the reader's library) writes the common kinds (bytes,
        str, int, float, memoryview) three times faster than Python (about 1 us a command
        rather than 3); it refuses bools, int subclasses and bytearrays with ``TypeError``,
        which then go through the Python below and its redis-py rules. Both are compared on
        every kind by ``tests/store/test_multiplexed.py``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import hiredis
from redis._parsers.encoders import Encoder  # the one redis-py's connections use


@functools.cache
def _encoder(encoding: str) -> Encoder:
    return Encoder(encoding, "strict", decode_responses=False)  # type: ignore[no-untyped-call]


def pack(args: Sequence[Any], encoding: str = "utf-8") -> bytes:
    """One command in RESP. A first argument with spaces (``"SCRIPT LOAD"``) is several words,
    as redis-py sends it."""
    if isinstance(args[0], str) and " " in args[0]:
        args = (*args[0].split(), *args[1:])
    if encoding == "utf-8":  # Rule 3
        try:
            packed: bytes = hiredis.pack_command(args if type(args) is tuple else tuple(args))
            return packed
        except TypeError:
            pass
    return python_pack(args, encoding)


def python_pack(args: Sequence[Any], encoding: str = "utf-8") -> bytes:
    """``pack`` in Python: the definition, and the way for the kinds hiredis refuses."""
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
            else _encoder(encoding).encode(arg)  # type: ignore[no-untyped-call]
        )
        parts += (b"$%d\r\n" % len(data), data, b"\r\n")
    return b"".join(parts)
