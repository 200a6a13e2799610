"""The local audit journal: where decision records wait while Redis cannot take them.

Stage: the audit stage's fallback edge. Input: decision records (as canonical JSON lines).
Output: an append-only file, later claimed and read back in order by the replay.

Rule 1: an append is one ``write`` of whole lines on a descriptor opened with ``O_APPEND``,
        followed by ``fsync`` before it returns: a record the relay was told is kept survives a
        crash or a power loss.
Rule 2: several relay processes may share the file. Appenders hold an exclusive ``flock`` on it
        while writing; the replay claims the file by renaming it to ``<journal>.replaying``
        under that same lock. An appender that opened the file before the rename notices that
        the path now names another file (inode check) and re-opens, so no line ever lands in a
        file the replay has already read.
Rule 3: only one replay runs at a time (a non-blocking ``flock`` on ``<journal>.lock``); a
        claimed file is deleted only after every line in it is stored, so an interrupted replay
        leaves it for the next one (the store skips what it already holds).
Rule 4: a line that is not a valid record is never dropped silently: it is moved to
        ``<journal>.rejected`` and logged.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger("relay.store.audit")


class Journal:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.claimed = self.path.with_name(self.path.name + ".replaying")
        self.rejected = self.path.with_name(self.path.name + ".rejected")
        self.lock_path = self.path.with_name(self.path.name + ".lock")

    def append(self, lines: Sequence[str]) -> None:
        """Append lines (without newlines) durably (Rule 1, Rule 2). Raises OSError on failure."""
        if not lines:
            return
        data = "".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                if not self._still_named(fd):
                    continue  # the replay claimed this file meanwhile: write to the new one
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
                return
            finally:
                os.close(fd)  # closing releases the lock

    def _still_named(self, fd: int) -> bool:
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)

    def pending(self) -> bool:
        """True when there is something to replay (cheap: two stats)."""
        for path in (self.claimed, self.path):
            try:
                if path.stat().st_size > 0:
                    return True
            except FileNotFoundError:
                continue
        return False

    @contextmanager
    def replay_lock(self) -> Iterator[bool]:
        """Yields False when another replay holds the lock (Rule 3)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def claim(self) -> Path | None:
        """The file to replay: a claim left by an interrupted replay, else the journal renamed.

        Call with the replay lock held. A leftover claim is replayed on its own first, so that
        the journal is never renamed onto a file that still holds unreplayed lines.
        """
        if self.claimed.exists():
            return self.claimed
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.fstat(fd).st_size == 0:
                return None
            os.rename(self.path, self.claimed)
            # The rename must survive a crash as much as the lines did.
            _fsync_dir(self.path.parent)
        finally:
            os.close(fd)
        return self.claimed

    def read(self, path: Path) -> list[tuple[int, dict[str, object]]]:
        """Valid records of a claimed file, with their line numbers; bad lines are set aside."""
        records: list[tuple[int, dict[str, object]]] = []
        bad: list[str] = []
        with path.open("r", encoding="utf-8", errors="surrogateescape") as handle:
            for number, line in enumerate(handle, start=1):
                text = line.rstrip("\n")
                if not text:
                    continue
                try:
                    data = json.loads(text)
                except json.JSONDecodeError:
                    data = None
                if isinstance(data, dict):
                    records.append((number, data))
                else:
                    # A torn last line after a crash mid-write, or a foreign edit (Rule 4).
                    log.error("audit journal %s line %d is not a record: set aside", path, number)
                    bad.append(text)
        if bad:
            self.reject(bad)
        return records

    def reject(self, lines: Sequence[str]) -> None:
        with self.rejected.open("a", encoding="utf-8", errors="surrogateescape") as handle:
            handle.writelines(line + "\n" for line in lines)
            handle.flush()
            os.fsync(handle.fileno())

    def done(self, path: Path) -> None:
        """Every line of a claimed file is stored: delete it (Rule 3)."""
        path.unlink(missing_ok=True)
        _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
