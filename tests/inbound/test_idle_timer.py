"""The session's idle timer (``relay.inbound.idle_timer``): closed after ``data_timeout`` seconds
of silence, never while commands keep coming or while a message is processed, with one loop
timer per session rather than one per command."""

from __future__ import annotations

import asyncio
import time

from relay.inbound.idle_timer import IdleTimer
from tests.support.harness import message
from tests.support.raw_smtp import RawClient, transaction
from tests.support.relay import Relay, RelayFactory
from tests.support.smtp_sink import Sink


def _closed_after(client: RawClient) -> float:
    """Seconds until the server closes (whatever it says before)."""
    started = time.monotonic()
    client.rest()
    return time.monotonic() - started


async def test_a_silent_session_is_closed_after_the_timeout(relay_factory: RelayFactory) -> None:
    relay: Relay = await relay_factory(smtp={"data_timeout": 1.0})
    client = await asyncio.to_thread(RawClient, relay.port)
    try:
        assert (await asyncio.to_thread(client.cmd, b"EHLO idle.example")).startswith(b"250")
        waited = await asyncio.to_thread(_closed_after, client)
    finally:
        client.close()
    assert 0.9 <= waited < 3.0


async def test_commands_keep_a_session_open_past_the_timeout(relay_factory: RelayFactory) -> None:
    relay: Relay = await relay_factory(smtp={"data_timeout": 1.0})

    def chatty() -> list[bytes]:
        client = RawClient(relay.port)
        try:
            replies = []
            for _ in range(5):  # 2.5 s in all, never 1 s silent
                time.sleep(0.5)
                replies.append(client.cmd(b"NOOP"))
            return replies
        finally:
            client.close()

    replies = await asyncio.to_thread(chatty)
    assert all(r.startswith(b"250") for r in replies)


async def test_after_a_message_the_count_starts_again(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    """The pause around the handler's work ends with the reply (Rule 3)."""
    relay: Relay = await relay_factory(smtp={"data_timeout": 1.0})
    sink.handler.faults.data_delay = 1.5  # longer than the timeout, while paused

    def one_message_then_silence() -> tuple[bytes, float]:
        client = RawClient(relay.port)
        try:
            client.cmd(b"EHLO idle.example")
            client.cmd(b"MAIL FROM:<app@shop.example>")
            client.cmd(b"RCPT TO:<alice@example.org>")
            client.cmd(b"DATA")
            client.send(message("<p>x</p>") + b".\r\n")
            final = client.reply()
            return final, _closed_after(client)
        finally:
            client.close()

    final, waited = await asyncio.to_thread(one_message_then_silence)
    assert final.startswith(b"250")
    assert 0.9 <= waited < 3.0
    assert len(sink.handler.received) == 1


async def test_pipelined_messages_on_one_connection(
    relay_factory: RelayFactory, sink: Sink
) -> None:
    relay: Relay = await relay_factory(smtp={"data_timeout": 1.0})
    replies = await asyncio.to_thread(transaction, relay.port, message("<p>y</p>"))
    assert any(r.startswith(b"250") for r in replies)
    assert replies[-1].startswith(b"221")


class _Session(IdleTimer):
    """The mixin on a real loop, with aiosmtpd's three attributes and its close callback."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout: float) -> None:
        self.loop = loop
        self._timeout_duration = timeout
        self._timeout_handle = None
        self.closed_at: float | None = None
        self.timers = 0

    def _timeout_cb(self) -> None:
        self.closed_at = self.loop.time()

    def _arm(self) -> None:
        self.timers += 1
        super()._arm()


async def test_one_timer_for_many_commands() -> None:
    loop = asyncio.get_running_loop()
    session = _Session(loop, 0.3)
    started = loop.time()
    session._reset_timeout()
    for _ in range(50):  # a busy session: a command every 10 ms for half a second
        await asyncio.sleep(0.01)
        session._reset_timeout()
    last = loop.time()
    while session.closed_at is None:
        await asyncio.sleep(0.01)
    assert session.closed_at - last >= 0.29  # idle for the whole timeout, counted from the last
    assert session.closed_at - started > 0.5
    # Re-armed each time it fired early (once per timeout while busy), never per command.
    assert session.timers <= (last - started) / 0.3 + 3 < 51


async def test_a_shorter_limit_rearms_at_once() -> None:
    """Rule 2: the PROXY header's limit, shorter than the session's."""
    loop = asyncio.get_running_loop()
    session = _Session(loop, 30.0)
    session._reset_timeout()
    session._reset_timeout(0.05)
    await asyncio.sleep(0.3)
    assert session.closed_at is not None


async def test_paused_sessions_are_not_closed() -> None:
    loop = asyncio.get_running_loop()
    session = _Session(loop, 0.05)
    session._reset_timeout()
    session.pause_idle_timer()
    await asyncio.sleep(0.3)
    assert session.closed_at is None
    session._reset_timeout()
    await asyncio.sleep(0.3)
    assert session.closed_at is not None
