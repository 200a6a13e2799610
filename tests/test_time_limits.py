"""``relay.time_limits``: the cheap time limit behaves as ``asyncio.timeout`` does (Rule 1).

Each scenario runs twice on the same kind of loop, once under ``asyncio.timeout`` (the oracle)
and once under ``time_limit``, and both runs must end the same way. Both loops the relay can
run on (uvloop and asyncio's own) are covered.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop

from relay import time_limits
from relay.time_limits import time_limit

LOOPS = {"uvloop": uvloop.new_event_loop, "asyncio": asyncio.new_event_loop}
Limit = Callable[[float | None], contextlib.AbstractAsyncContextManager[Any]]


@contextlib.asynccontextmanager
async def oracle(seconds: float | None) -> AsyncIterator[None]:
    async with asyncio.timeout(seconds):
        yield


@contextlib.asynccontextmanager
async def ours(seconds: float | None) -> AsyncIterator[None]:
    with time_limit(seconds):
        yield


def outcome(loop: str, scenario: Callable[[Limit], Awaitable[object]], limit: Limit) -> object:
    async def run() -> object:
        try:
            return await scenario(limit)
        except BaseException as exc:  # the way it ended is what is compared
            return type(exc).__name__

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        return runner.run(run())


async def fast(limit: Limit) -> object:
    async with limit(1.0):
        await asyncio.sleep(0)
    return "done"


async def slow(limit: Limit) -> object:
    async with limit(0.02):
        await asyncio.sleep(5)
    return "not reached"


async def no_limit(limit: Limit) -> object:
    async with limit(None):
        await asyncio.sleep(0.03)
    return "done"


async def past(limit: Limit) -> object:
    async with limit(-1):
        await asyncio.sleep(0)
    return "not reached"


async def caught_inside(limit: Limit) -> object:
    async with limit(0.02):
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            return "cancellation seen inside"
    return "not reached"


async def cancelled_from_outside(limit: Limit) -> object:
    async def body() -> None:
        async with limit(5):
            await asyncio.sleep(5)

    task = asyncio.ensure_future(body())
    await asyncio.sleep(0.01)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return ("cancelled", task.cancelling())
    return "not reached"


async def cancelled_as_it_expires(limit: Limit) -> object:
    """Another cancellation requested in the same loop turn as the expiry stays one."""

    async def body() -> None:
        async with limit(0.02):
            await asyncio.sleep(5)

    task = asyncio.ensure_future(body())
    loop = asyncio.get_running_loop()
    loop.call_later(0.02, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
    except TimeoutError:
        return "timeout"
    return "not reached"


async def inner_shorter(limit: Limit) -> object:
    events = []
    async with limit(5):
        try:
            async with limit(0.02):
                await asyncio.sleep(5)
        except TimeoutError:
            events.append("inner timed out")
        await asyncio.sleep(0.01)
        events.append("outer went on")
    return events


async def outer_shorter(limit: Limit) -> object:
    events = []
    try:
        async with limit(0.02):
            try:
                async with limit(5):
                    await asyncio.sleep(5)
            except TimeoutError:
                events.append("inner claimed it")
    except TimeoutError:
        events.append("outer timed out")
    return events


async def later_but_earlier(limit: Limit) -> object:
    """Rule 2: a limit entered after a longer one still fires on time."""
    started = time.monotonic()

    async def long_wait() -> None:
        async with limit(10):
            await asyncio.sleep(0.3)

    other = asyncio.ensure_future(long_wait())
    await asyncio.sleep(0)
    try:
        async with limit(0.03):
            await asyncio.sleep(5)
    except TimeoutError:
        waited = time.monotonic() - started
    await other
    return "on time" if 0.025 <= waited < 0.25 else f"after {waited:.3f} s"


async def many_sessions(limit: Limit) -> object:
    """Two hundred limits running at once, some expiring, the rest done early."""

    async def one(n: int) -> str:
        try:
            async with limit(0.02 if n % 3 == 0 else 2):
                await asyncio.sleep(0.001 * (n % 7) if n % 3 else 5)
            return "done"
        except TimeoutError:
            return "timeout"

    results = await asyncio.gather(*(one(n) for n in range(200)))
    return (results.count("done"), results.count("timeout"))


SCENARIOS = [
    fast, slow, no_limit, past, caught_inside, cancelled_from_outside, cancelled_as_it_expires,
    inner_shorter, outer_shorter, later_but_earlier, many_sessions,
]  # fmt: skip


@pytest.mark.parametrize("loop", sorted(LOOPS))
@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
def test_same_outcome_as_asyncio_timeout(
    loop: str, scenario: Callable[[Limit], Awaitable[object]]
) -> None:
    expected = outcome(loop, scenario, oracle)
    assert outcome(loop, scenario, ours) == expected


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_expiry_is_not_early(loop: str) -> None:
    async def run() -> float:
        started = time.monotonic()
        with contextlib.suppress(TimeoutError), time_limit(0.05):
            await asyncio.sleep(5)
        return time.monotonic() - started

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        waited = runner.run(run())
    assert 0.045 <= waited < 1.0  # uvloop's clock counts milliseconds


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_finished_limits_leave_the_table_and_one_timer_serves_them(loop: str) -> None:
    async def run() -> tuple[int, int]:
        armed = set()
        for _ in range(500):
            with time_limit(30):
                await asyncio.sleep(0)
            table = time_limits._table(asyncio.get_running_loop())
            armed.add(id(table.timer))
        return len(table.running), len(armed)

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        running, timers = runner.run(run())
    assert running == 0
    assert timers == 1  # later limits never re-arm the timer


def test_used_once_and_inside_a_task() -> None:
    async def twice() -> None:
        limit = time_limit(1)
        with limit:
            pass
        with limit:
            pass

    with pytest.raises(RuntimeError, match="entered once"):
        asyncio.run(twice())

    def outside_a_task() -> None:
        with time_limit(1):
            pass

    seen: list[BaseException] = []
    loop = asyncio.new_event_loop()
    loop.set_exception_handler(lambda _loop, context: seen.append(context["exception"]))
    try:
        loop.call_soon(outside_a_task)  # a loop callback: a running loop, no task
        loop.run_until_complete(asyncio.sleep(0.01))
    finally:
        loop.close()
    assert [str(e) for e in seen] == ["a time limit is used inside a task"]
