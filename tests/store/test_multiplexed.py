"""The shared Redis connection (``relay.store.multiplexed``): the replies redis-py gives, one
write for many callers, and what happens when the server goes away or stops answering."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoScriptError, ResponseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from relay.settings import RedisSettings
from relay.store.embedded import EmbeddedRedis, free_port, server_command
from relay.store.multiplexed import MultiplexedRedis
from relay.store.redis_conn import async_client
from relay.store.resp import pack, python_pack

# The commands the stores send (ledger, consent, audit, links, retention), and a few more shapes
# of reply: maps, sets, scores, nested arrays, status replies, nil, errors.
COMMANDS: list[tuple[Any, ...]] = [
    ("HSET", "h", "x", "1", "y", 2),
    ("HGETALL", "h"),
    ("HGETALL", "missing"),
    ("HMGET", "h", "x", "nope"),
    ("HINCRBY", "h", "n", 3),
    ("SADD", "s", "a", "b"),
    ("SMEMBERS", "s"),
    ("ZADD", "z", 1.5, "m", 2, "n"),
    ("ZRANGE", "z", 0, -1, "WITHSCORES"),
    ("ZRANGEBYSCORE", "z", "-inf", "+inf", "WITHSCORES"),
    ("SET", "k", "v", "PX", 60_000),
    ("SET", "k", "w", "NX"),
    ("GET", "k"),
    ("EXISTS", "k", "nope"),
    ("XADD", "st", "1-1", "f", "v"),
    ("XRANGE", "st", "-", "+"),
    ("EXPIRE", "h", 100),
    ("EVAL", "return {1, 'a', {2, KEYS[1]}}", 1, "key"),
    ("EVALSHA", "0" * 40, 0),
    ("SCRIPT EXISTS", "0" * 40),
    ("INCR", "h"),
    ("TYPE", "h"),
    ("PING",),
    ("DEL", "k", "h", "s"),
]


def _shared(url: str, **options: Any) -> MultiplexedRedis:
    client = MultiplexedRedis.from_url(url, **options)
    assert isinstance(client, MultiplexedRedis)
    return client


async def _replies(client: aioredis.Redis) -> list[Any]:
    out: list[Any] = []
    for command in COMMANDS:
        try:
            out.append(await client.execute_command(*command))  # type: ignore[no-untyped-call]
        except ResponseError as exc:
            out.append((type(exc), str(exc)))
    pipe = client.pipeline(transaction=False)
    for command in COMMANDS:
        pipe.execute_command(*command)
    out.append([(type(r), str(r)) if isinstance(r, Exception) else r
                for r in await pipe.execute(raise_on_error=False)])  # fmt: skip
    await client.flushdb()
    return out


async def test_replies_are_those_of_redis_py(redis_url: str) -> None:
    plain = aioredis.Redis.from_url(redis_url)
    shared = _shared(redis_url)
    try:
        expected = await _replies(plain)
        got = await _replies(shared)
    finally:
        await plain.aclose()
        await shared.aclose()
    assert got == expected
    # The class counts: a NOSCRIPT reply is what makes replicated.execute send the text.
    assert any(isinstance(r, tuple) and r[0] is NoScriptError for r in got)


async def test_the_relays_client_for_redis_urls_is_the_shared_one(redis_url: str) -> None:
    client = async_client(redis_url, RedisSettings())
    try:
        assert isinstance(client, MultiplexedRedis)
        await client.set("a", "1")
        assert await client.get("a") == b"1"
    finally:
        await client.aclose()


async def test_callers_of_one_loop_iteration_share_a_write(redis_url: str) -> None:
    client = _shared(redis_url)
    try:
        await client.ping()
        before = client.multiplexer.writes
        values = await asyncio.gather(*(client.incr("counter") for _ in range(200)))
        writes = client.multiplexer.writes - before
    finally:
        await client.aclose()
    assert sorted(values) == list(range(1, 201))
    assert writes <= 2  # all 200 were asked before the loop ran again


async def test_a_pipeline_raises_its_first_error_when_asked(redis_url: str) -> None:
    client = _shared(redis_url)
    try:
        await client.set("text", "x")
        pipe = client.pipeline(transaction=False)
        pipe.get("text")
        pipe.incr("text")
        with pytest.raises(ResponseError, match="Command # 2"):
            await pipe.execute()
        assert await client.get("text") == b"x"  # the reply order is still right
    finally:
        await client.aclose()


async def test_a_caller_that_gives_up_keeps_the_reply_order(redis_url: str) -> None:
    client = _shared(redis_url)
    try:
        await client.mset({"a": "A", "b": "B"})
        for _ in range(20):
            gone = asyncio.ensure_future(client.get("a"))
            await asyncio.sleep(0)  # queued and written; its reply is on the way
            gone.cancel()
            assert await client.get("b") == b"B"
            with contextlib.suppress(asyncio.CancelledError):
                await gone
    finally:
        await client.aclose()


async def test_transactions_and_blocking_commands_use_connections_of_their_own(
    redis_url: str,
) -> None:
    client = _shared(redis_url)
    try:
        waiting = asyncio.ensure_future(client.blpop(["queue"], timeout=2))
        await asyncio.sleep(0.05)
        started = time.monotonic()
        assert await client.set("k", "v")  # not queued behind BLPOP
        assert time.monotonic() - started < 0.5
        pipe = client.pipeline(transaction=True)
        pipe.incr("t")
        pipe.incr("t")
        assert await pipe.execute() == [1, 2]
        await client.rpush("queue", "job")
        assert list(await waiting or ()) == [b"queue", b"job"]
    finally:
        await client.aclose()


@pytest.fixture
def password_server(tmp_path: Path) -> Iterator[int]:
    port = free_port()
    args = server_command(port, tmp_path, "--requirepass", "s3cret", appendonly=False)
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            break
        time.sleep(0.05)
    yield port
    process.terminate()
    process.wait(timeout=10)


async def test_password_and_database_of_the_url(password_server: int) -> None:
    url = f"redis://:s3cret@127.0.0.1:{password_server}/3"
    shared = _shared(url)
    plain = aioredis.Redis.from_url(url)
    other_db = aioredis.Redis.from_url(url.replace("/3", "/0"))
    try:
        await shared.set("in-three", "yes")
        assert await plain.get("in-three") == b"yes"
        assert await other_db.get("in-three") is None
    finally:
        for client in (shared, plain, other_db):
            await client.aclose()
    wrong = _shared(f"redis://:nope@127.0.0.1:{password_server}/0")
    try:
        with pytest.raises(AuthenticationError):
            await wrong.get("x")
    finally:
        await wrong.aclose()


class RawServer:
    """A loopback server that reads commands and answers with ``behaviour`` (real sockets):
    "silent" never answers, "hang-up" closes after the first bytes it reads."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []  # what each connection sent
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._talk, args=(conn,), daemon=True).start()

    def _talk(self, conn: socket.socket) -> None:
        got = b""
        with conn:
            while data := conn.recv(65536):
                got += data
                if self.behaviour == "hang-up":
                    break
        self.received.append(got)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def raw_server() -> Iterator[Callable[[str], RawServer]]:
    made: list[RawServer] = []

    def make(behaviour: str) -> RawServer:
        made.append(RawServer(behaviour))
        return made[-1]

    yield make
    for server in made:
        server.close()


async def _all_fail(calls: Sequence[Awaitable[Any]]) -> list[BaseException]:
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, BaseException) for r in results), results
    return [r for r in results if isinstance(r, BaseException)]


async def test_a_silent_server_times_out_every_waiting_call(
    raw_server: Callable[[str], RawServer],
) -> None:
    server = raw_server("silent")
    client = _shared(f"redis://127.0.0.1:{server.port}/0", socket_timeout=0.3, protocol=2)
    try:
        started = time.monotonic()
        errors = await _all_fail([client.get("a"), client.get("b")])
        assert all(isinstance(e, RedisTimeoutError) for e in errors)
        assert time.monotonic() - started < 2
        await _all_fail([client.get("c")])  # a new connection, silent again
        assert server.connections == 2
    finally:
        await client.aclose()


async def test_a_lost_connection_fails_its_calls_and_sends_nothing_twice(
    raw_server: Callable[[str], RawServer],
) -> None:
    server = raw_server("hang-up")
    client = _shared(f"redis://127.0.0.1:{server.port}/0", socket_timeout=5, protocol=2)
    try:
        errors = await _all_fail([client.set("a", "1")])
        assert isinstance(errors[0], RedisConnectionError)
        await _all_fail([client.set("b", "2")])
    finally:
        await client.aclose()
    deadline = time.monotonic() + 5
    while len(server.received) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert sorted(server.received) == sorted([pack(("SET", "a", "1")), pack(("SET", "b", "2"))])


async def test_a_restarted_server_is_reached_again(
    private_redis: Callable[[], EmbeddedRedis],
) -> None:
    server = private_redis()
    client = _shared(server.url, socket_timeout=5)
    try:
        await client.set("before", "1")
        server.stop()
        with pytest.raises(RedisConnectionError):
            await client.get("before")
        server.start()
        assert await client.get("before") == b"1"  # the AOF kept it; a new connection
    finally:
        await client.aclose()


def test_values_are_encoded_as_redis_py_encodes_them() -> None:
    assert pack(("SET", "k", 1.5)) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\n1.5\r\n"
    assert pack(("SCRIPT EXISTS", b"\x00")) == (
        b"*3\r\n$6\r\nSCRIPT\r\n$6\r\nEXISTS\r\n$1\r\n\x00\r\n"
    )
    from redis.exceptions import DataError

    with pytest.raises(DataError):
        pack(("SET", "k", True))


class _Level(enum.IntEnum):
    ONE = 1


class _Word(enum.StrEnum):
    BEE = "bee"


PACKED_VALUES = [
    b"", b"\x00\xff", "", "caf\u00e9", "\U0001f600", "a b", 0, -3, 2**64, -(2**70), 0.1, 1e-05,
    1e20, 123456789.123456789, -0.0, float("inf"), float("nan"), memoryview(b"mv"),
    bytearray(b"ba"), _Level.ONE, _Word.BEE, True, None, ["list"],
]  # fmt: skip


@pytest.mark.parametrize(
    "value", PACKED_VALUES, ids=[f"{type(v).__name__}-{n}" for n, v in enumerate(PACKED_VALUES)]
)
def test_the_c_writer_and_the_python_one_agree_with_redis_py(value: object) -> None:
    """resp Rule 3: whichever writes a command, the bytes (or the refusal) are redis-py's."""
    from redis._parsers.encoders import Encoder
    from redis.exceptions import DataError

    def outcome(write: Callable[[tuple[object, ...]], bytes]) -> object:
        try:
            return write(("SCRIPT LOAD", "k", value))
        except DataError as exc:
            return f"refused: {exc}"

    encoder = Encoder("utf-8", "strict", decode_responses=False)  # type: ignore[no-untyped-call]

    def redis_py(args: tuple[object, ...]) -> bytes:
        words = [*str(args[0]).split(), *args[1:]]
        parts = [b"*%d\r\n" % len(words)]
        for word in words:
            data = encoder.encode(word)  # type: ignore[no-untyped-call]
            parts += [b"$%d\r\n" % len(data), data, b"\r\n"]
        return b"".join(parts)

    expected = outcome(redis_py)
    assert outcome(pack) == expected
    assert outcome(python_pack) == expected


# The socket of a loop already closed goes with the garbage collector, as redis-py's do.
@pytest.mark.filterwarnings("ignore::ResourceWarning")
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_client_used_again_under_a_new_event_loop_connects_again(redis_url: str) -> None:
    """A client kept across two ``asyncio.run`` calls: the connection of the loop already
    closed is left behind, neither used nor closed through that loop (which would raise)."""
    kept = [_shared(redis_url)]

    async def increment() -> int:
        return await kept[0].incr("runs")

    assert asyncio.run(increment()) == 1
    assert asyncio.run(increment()) == 2
    assert asyncio.run(increment()) == 3
    kept.clear()
    gc.collect()  # the sockets left behind are closed here, inside this test's warning filters


async def test_a_caller_cancelled_while_connecting_leaves_the_others_connected(
    password_server: int,
) -> None:
    """A caller cancelled at any stage of connecting (TCP, HELLO with AUTH): the callers that
    waited for its connection connect for themselves, and the client goes on working."""
    client = _shared(f"redis://:s3cret@127.0.0.1:{password_server}/0")
    try:
        for steps in range(40):
            await client.aclose()  # the next call connects again
            first = asyncio.ensure_future(client.set("k", str(steps)))
            await asyncio.sleep(0)
            second = asyncio.ensure_future(client.get("absent"))
            for _ in range(steps % 8):
                await asyncio.sleep(0)
            first.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await first
            assert await second is None  # neither cancelled nor failed by the other's fate
            kept = await client.get("k")  # the last SET that was not cancelled before it went
            assert kept is None or int(kept) <= steps
    finally:
        await client.aclose()


async def test_redis_py_options_of_a_command_mean_what_they_mean_there(redis_url: str) -> None:
    """EMPTY_RESPONSE (the value of an error reply) and NEVER_DECODE (bytes from a decoding
    client) as redis-py's own commands pass them."""
    from redis.client import EMPTY_RESPONSE, NEVER_DECODE

    for decoding in (False, True):
        plain = aioredis.Redis.from_url(redis_url, decode_responses=decoding)
        shared = _shared(redis_url, decode_responses=decoding)
        try:
            await plain.set("text", "x")
            for client in (plain, shared):
                name = type(client).__name__
                wrong = {EMPTY_RESPONSE: "fallback"}
                assert await client.execute_command("INCR", "text", **wrong) == "fallback", name  # type: ignore[no-untyped-call]
                raw = await client.execute_command("GET", "text", **{NEVER_DECODE: []})  # type: ignore[no-untyped-call]
                assert raw == b"x", name
                assert await client.get("text") == ("x" if decoding else b"x"), name
        finally:
            await plain.aclose()
            await shared.aclose()
