"""Where an export goes: a file written beside and renamed, or standard output as UTF-8.

Stage: CLI helper. Rule 1: a reader never sees half an export (``FILE.partial`` is renamed to
``FILE`` only once complete; a failure leaves the partial file, never a truncated ``FILE``).
Rule 2: the bytes are the same whatever the locale: UTF-8, no newline translation.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def output_file(name: str | None) -> Iterator[IO[str]]:
    if name:
        path = Path(name)
        partial = path.with_name(path.name + ".partial")
        with partial.open("w", encoding="utf-8", newline="") as out:
            yield out
        partial.replace(path)
        return
    out = io.TextIOWrapper(sys.stdout.buffer, encoding="utf-8", newline="")
    try:
        yield out
    finally:
        out.flush()
        out.detach()
