"""The write journal: Redis writes the relay could not make, or that no replica confirmed,
kept on local disk and replayed until Redis holds them.

Why: during a failover (a Redis Cluster master dies, its replica takes over a few seconds
later) writes to the dead master's slots fail, and a write the master acknowledged just before
dying may never have reached the replica (``replicated``). The audit trail has its own journal
(``audit_journal``); this one keeps the other writes whose loss would change what the relay
does later: delivery-ledger entries (a retry would be delivered twice), gateway links and the
recipients' addresses (a withdrawal link would find no address), consent events the relay
records itself (``requested``: a lost one lets the relay ask again too early).

Stage: async edge helper of the stores; ``service`` replays every few seconds.
Input: entries ``{"op": <name>, "at": <unix time>, ...}`` from the stores.
Output: the same entries handed back, in order, to the handler of their op.

Rule 1: an entry is appended and fsynced before the write counts as kept (the ``Journal``
        of ``audit_journal``: whole lines, O_APPEND, flock, claim by rename, one replay at a
        time), so nothing is lost on a crash of the relay either.
Rule 2: every op is idempotent (a replay writes the same values, expiries only grow, consent
        events are skipped when their id is already stored), so an entry whose first write
        did land is replayed harmlessly: nothing is duplicated.
Rule 3: entries are replayed in journal order, consecutive entries of one op as one batch. A
        handler answers, per entry, whether a replica confirmed it; an unconfirmed entry is
        kept for the next replay until it is ``keep`` seconds old, then let go with a warning
        (the master has it; no replica acknowledged it in that time). A handler that raises
        (Redis still down) leaves the batch and everything after it for the next replay.
Rule 4: a line that is not an entry of a known op is set aside (``<journal>.rejected``), never
        dropped silently.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from relay.store.audit_journal import Journal

log = logging.getLogger("relay.store.writeback")

Entry = dict[str, Any]
# A batch of entries of one op -> for each, True when a replica confirmed it.
Handler = Callable[[Sequence[Entry]], Awaitable[Sequence[bool]]]


def _line(entry: Entry) -> str:
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


class WriteBack:
    def __init__(self, path: str | Path, *, keep: float = 60.0) -> None:
        self.journal = Journal(path)
        self.keep = keep

    async def add(self, op: str, **data: Any) -> None:
        """Journal one write (Rule 1). Raises OSError when the disk refuses it."""
        await self.add_many([{"op": op, "at": time.time(), **data}])

    async def add_many(self, entries: Sequence[Entry]) -> None:
        lines = [_line(entry) for entry in entries]
        await asyncio.to_thread(self.journal.append, lines)

    def pending(self) -> bool:
        return self.journal.pending()

    async def replay(self, handlers: Mapping[str, Handler]) -> int:
        """Replay what is journalled; the number of entries settled (confirmed or let go).

        Raises what a handler raised; what was not settled stays journalled, in order.
        """
        if not self.journal.pending():
            return 0
        with self.journal.replay_lock() as mine:
            if not mine:
                return 0  # another process of this relay is replaying
            path = self.journal.claim()
            if path is None:
                return 0
            rows = await asyncio.to_thread(self.journal.read, path)
            entries = [data for _number, data in rows]
            keep: list[Entry] = []
            settled = 0
            try:
                for start, end in _runs(entries):
                    batch = entries[start:end]
                    handler = handlers.get(str(batch[0].get("op")))
                    if handler is None:
                        log.error("write journal: unknown op %r: set aside", batch[0].get("op"))
                        self.journal.reject([_line(e) for e in batch])
                        continue
                    try:
                        confirmed = await handler(batch)
                    except BaseException:
                        keep.extend(entries[start:])  # Rule 3: retried next time, in order
                        raise
                    settled += self._sort(batch, confirmed, keep)
            finally:
                # The claimed file is replayed before the live journal next time, so what is
                # kept stays ahead of anything journalled meanwhile.
                await asyncio.to_thread(_rewrite, self.journal, path, keep)
        return settled

    def _sort(self, batch: Sequence[Entry], confirmed: Sequence[bool], keep: list[Entry]) -> int:
        now = time.time()
        settled = 0
        for entry, ok in zip(batch, confirmed, strict=True):
            if ok:
                settled += 1
            elif now - float(entry.get("at", 0)) < self.keep:
                keep.append(entry)
            else:
                settled += 1
                log.warning(
                    "write journal: no replica confirmed a %s write within %.0f s; the master "
                    "holds it, it is no longer replayed",
                    entry.get("op"),
                    self.keep,
                )
        return settled


def _rewrite(journal: Journal, path: Path, entries: Sequence[Entry]) -> None:
    """Replace the claimed file by the entries still to replay (or remove it when none)."""
    if not entries:
        journal.done(path)
        return
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8", errors="surrogateescape") as handle:
        handle.writelines(_line(entry) + "\n" for entry in entries)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _runs(entries: Sequence[Entry]) -> list[tuple[int, int]]:
    """(start, end) of each run of consecutive entries with the same op."""
    runs: list[tuple[int, int]] = []
    start = 0
    for index in range(1, len(entries) + 1):
        if index == len(entries) or entries[index].get("op") != entries[start].get("op"):
            runs.append((start, index))
            start = index
    return runs
