"""Time limits on awaits: ``asyncio.timeout``'s behaviour, at a fraction of its cost.

Why: a message makes about fifteen bounded waits (each Redis call, each upstream reply). With
uvloop, ``asyncio.timeout`` costs about 6.5 us per use: an async context manager, a libuv timer
created and cancelled, an enum state machine. Nearly every one of those timers is cancelled
long before it would fire. Here a limit is an entry in a per-loop table. One loop timer stands
for the whole table, at the earliest deadline it has seen; when it fires, it expires what is
due and re-arms for the earliest limit still running. Entering and leaving cost a dict insert
and delete (about 1 us) and the loop keeps one timer, whatever the number of sessions.

Stage: async edge (a helper of the store, outbound and inbound layers; it imports asyncio only).

Rule 1: the semantics are ``asyncio.timeout``'s (Python 3.11): when the limit passes, the task
        is cancelled; if the cancellation reaches the end of the block and no other
        cancellation was requested meanwhile, it leaves as ``TimeoutError``; a cancellation
        from elsewhere stays a ``CancelledError``. ``None`` means no limit.
Rule 2: a limit fires when the loop runs a timer due at its deadline, as asyncio's would:
        the table's timer is re-armed whenever a limit earlier than its own is entered, and
        after firing, at the earliest limit still running.
Rule 3: a block is entered inside a task (``RuntimeError`` otherwise) and only once; it is a
        plain context manager (``with time_limit(s):``), as its enter and exit never wait.
"""

from __future__ import annotations

import asyncio
import weakref
from types import TracebackType


class _Table:
    """The running limits of one event loop and the single timer that stands for them."""

    __slots__ = ("__weakref__", "armed_at", "loop", "running", "timer")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.running: dict[TimeLimit, None] = {}
        self.timer: asyncio.Handle | None = None
        self.armed_at = float("inf")

    def add(self, limit: TimeLimit) -> None:
        self.running[limit] = None
        if limit.when < self.armed_at:  # Rule 2
            if self.timer is not None:
                self.timer.cancel()
            self.armed_at = limit.when
            if limit.when <= self.loop.time():  # already due: before the task runs again
                self.timer = self.loop.call_soon(self._fire)
            else:
                self.timer = self.loop.call_at(limit.when, self._fire)

    def _fire(self) -> None:
        # The loop ran the timer: its time has come even if the clock, read at a coarser
        # resolution, says a fraction earlier (as asyncio's own timers, which fire then).
        due = max(self.loop.time(), self.armed_at)
        self.timer, self.armed_at = None, float("inf")
        earliest = float("inf")
        for limit in list(self.running):
            if limit.when <= due:
                del self.running[limit]
                limit.expire()
            elif limit.when < earliest:
                earliest = limit.when
        if earliest != float("inf"):
            self.armed_at = earliest
            self.timer = self.loop.call_at(earliest, self._fire)


_TABLES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Table] = weakref.WeakKeyDictionary()
_last: _Table | None = None  # the table used last: one lookup less on the hot path


def _table(loop: asyncio.AbstractEventLoop) -> _Table:
    global _last
    table = _last
    if table is None or table.loop is not loop:
        table = _TABLES.get(loop)
        if table is None:
            table = _TABLES[loop] = _Table(loop)
        _last = table
    return table


class TimeLimit:
    """One bounded block (Rule 1); ``expired`` tells whether its limit passed."""

    __slots__ = ("_cancelling", "_entered", "_table", "_task", "expired", "when")

    def __init__(self, when: float, table: _Table | None) -> None:
        self.when = when
        self.expired = False
        self._entered = False
        self._task: asyncio.Task[object] | None = None
        self._table = table  # None: no limit
        self._cancelling = 0

    def __enter__(self) -> TimeLimit:
        if self._entered:
            raise RuntimeError("a time limit is entered once")
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a time limit is used inside a task")
        self._entered = True
        self._task, self._cancelling = task, task.cancelling()
        if self._table is not None:
            self._table.add(self)
        return self

    def expire(self) -> None:
        assert self._task is not None
        self.expired = True
        self._task.cancel()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._table is not None:
            self._table.running.pop(self, None)
            self._table = None
        if self.expired:
            assert self._task is not None
            if self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc


def time_limit(seconds: float | None) -> TimeLimit:
    """A limit ``seconds`` from now (``None``: none), for ``with time_limit(seconds): ...``."""
    if seconds is None:
        return TimeLimit(float("inf"), None)
    loop = asyncio.get_running_loop()
    return TimeLimit(loop.time() + seconds, _table(loop))
