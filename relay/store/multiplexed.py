"""One Redis connection per process shared by every session, with the commands issued in the same
event-loop iteration written together (automatic pipelining).

Why: on the relay's hot path each message makes about six Redis calls (ledger read, consent
states, ledger in flight, ledger record, audit record, ledger forget). redis-py gives each call a
pooled connection, a write and a read of its own: about 50 us of the client's CPU per call and a
write system call each (issue 15: on the reference machine a loopback write costs 30-45 us).
Here a call packs its command, queues it and waits: one write per loop iteration carries the
commands of every session that asked in it (the ledger read and the consent read that the
pipeline gathers go out together, and so do twenty sessions' audit records), and one reader
hands each reply to its caller in order.

Stage: async edge (store). Input: redis-py commands (``Redis`` methods, pipelines). Output: the
replies redis-py would give (its response callbacks, its exception classes).

Rule 1: ``MultiplexedRedis`` is redis-py's client with two entry points replaced:
        ``execute_command`` (every command method goes through it) and non-transactional
        pipelines. Everything else (MULTI/EXEC, WATCH, blocking commands, registered scripts,
        commands that must not be decoded) goes through redis-py's pool as before, so nothing
        that relies on a connection of its own shares this one.
Rule 2: replies come back in the order the commands were written (RESP), so the reader pairs
        them with the queued callers first in, first out. A caller that gave up (its timeout or
        a cancellation) keeps its place: its replies are read and dropped.
Rule 3: a connection that is lost fails every call waiting on it with redis-py's
        ``ConnectionError``; calls are never re-sent (a write may have run), the stores decide
        what a failure means (fail closed, journal). The next call connects again.
Rule 4: ``socket_timeout`` bounds the wait for the oldest reply: past it the connection is
        aborted and every waiting call fails with redis-py's ``TimeoutError`` (a server that
        stopped answering must not hold replies for ever).
Rule 5: the connection speaks the RESP version redis-py would (``HELLO 3``, with ``AUTH`` in
        it when the URL has a password) and sends ``SELECT`` for the URL's database, before any
        command; the replies are read by the same hiredis reader redis-py uses.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

import hiredis
import redis.asyncio as aioredis
from redis._parsers.base import BaseParser  # redis-py's mapping of error replies to classes
from redis.asyncio.client import Pipeline
from redis.client import EMPTY_RESPONSE, NEVER_DECODE
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.utils import DEFAULT_RESP_VERSION

from relay.store.resp import pack
from relay.time_limits import time_limit

# Commands that hold the connection or read no reply of their own: never multiplexed (Rule 1).
_OWN_CONNECTION = frozenset(
    {
        "BLPOP", "BRPOP", "BLMOVE", "BRPOPLPUSH", "BLMPOP", "BZPOPMIN", "BZPOPMAX", "BZMPOP",
        "XREAD", "XREADGROUP", "WAIT", "WAITAOF", "WATCH", "UNWATCH", "MULTI", "EXEC",
        "DISCARD", "SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE", "MONITOR", "SELECT", "AUTH",
        "HELLO", "RESET", "QUIT", "CLIENT",
    }
)  # fmt: skip
_SKIPPED_OPTIONS = ("keys", NEVER_DECODE, EMPTY_RESPONSE)  # as redis-py parse_response
_MISSING = object()
_PUSH = getattr(hiredis, "PushNotification", None)


class _Abandoned(RedisConnectionError):
    """The caller that was connecting was cancelled: the others try again themselves."""


class _Waiting:
    """One caller's place in the reply order: ``count`` replies, gathered in ``replies``."""

    __slots__ = ("count", "deadline", "future", "replies")

    def __init__(self, future: asyncio.Future[list[Any]], count: int, deadline: float) -> None:
        self.future = future
        self.count = count
        self.deadline = deadline
        self.replies: list[Any] = []


class _Protocol(asyncio.Protocol):
    def __init__(self, owner: Multiplexer) -> None:
        self.owner = owner

    def data_received(self, data: bytes) -> None:
        self.owner.feed(self, data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.owner.lost(self, exc)


class Multiplexer:
    """The shared connection: ``call`` queues commands and returns their raw replies (errors in
    place, as ``ResponseError`` instances); ``writes`` counts the writes made (for tests and
    benchmarks)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        db: int = 0,
        username: str | None = None,
        password: str | None = None,
        timeout: float | None = None,
        connect_timeout: float | None = None,
        encoding: str | None = None,
        protocol: int = 3,
    ) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.timeout = timeout
        self.connect_timeout = connect_timeout or timeout
        self.encoding = encoding  # decode bulk replies (``decode_responses``)
        self.protocol = protocol
        self.writes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._transport: asyncio.Transport | None = None
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Future[None] | None = None
        self._reader = self._new_reader()
        self._waiting: deque[_Waiting] = deque()
        self._outgoing: list[bytes] = []
        self._flush_scheduled = False
        self._timer: asyncio.TimerHandle | None = None

    def _new_reader(self) -> Any:
        options: dict[str, Any] = {
            "protocolError": InvalidResponse,
            "replyError": BaseParser.parse_error,
            "notEnoughData": _MISSING,
        }
        if self.encoding:
            options["encoding"] = self.encoding
        return hiredis.Reader(**options)

    async def call(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        loop = asyncio.get_running_loop()
        if self._transport is None or self._loop is not loop or self._transport.is_closing():
            await self._connect(loop)
        packed = b"".join(pack(c) for c in commands)
        future: asyncio.Future[list[Any]] = loop.create_future()
        deadline = loop.time() + self.timeout if self.timeout else float("inf")
        self._waiting.append(_Waiting(future, len(commands), deadline))
        self._outgoing.append(packed)
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        if self.timeout and self._timer is None:
            self._timer = loop.call_at(deadline, self._check_timeout)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._outgoing:
            return
        data = b"".join(self._outgoing)
        self._outgoing.clear()
        if self._transport is None or self._transport.is_closing():
            self._fail(RedisConnectionError("Connection closed before the command was sent"))
            return
        self._transport.write(data)
        self.writes += 1

    async def _connect(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._connecting is not None and self._loop is loop and not self._connecting.done():
            try:
                await asyncio.shield(self._connecting)
                return
            except _Abandoned:
                pass  # the caller who was connecting gave up: connect for ourselves
        if self._transport is not None and self._loop is not loop:
            self._forget_connection(RedisConnectionError("the event loop changed"))
        self._loop = loop
        self._connecting = loop.create_future()
        try:
            await self._open(loop)
            self._connecting.set_result(None)
        except BaseException as exc:
            # Half a handshake is no connection (an AUTH whose reply nobody reads); the callers
            # waiting for this attempt get a connection error, never this caller's cancellation.
            if self._transport is not None:
                self._forget_connection(RedisConnectionError("the connection was not completed"))
            failure = exc if isinstance(exc, Exception) else _Abandoned("connecting abandoned")
            self._connecting.set_exception(failure)
            self._connecting.exception()  # retrieved: waiters re-raise it
            raise

    async def _open(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            with time_limit(self.connect_timeout):
                transport, protocol = await loop.create_connection(
                    lambda: _Protocol(self), self.host, self.port
                )
        except TimeoutError:
            raise RedisTimeoutError(f"Timeout connecting to {self.host}:{self.port}") from None
        except OSError as exc:
            raise RedisConnectionError(
                f"Error {exc.errno} connecting to {self.host}:{self.port}. {exc.strerror}."
            ) from None
        self._transport, self._protocol = transport, protocol
        self._reader = self._new_reader()
        hello: list[tuple[Any, ...]] = []
        if self.protocol == 3:  # Rule 5: the protocol redis-py speaks, so its callbacks apply
            auth = ("AUTH", self.username or "default", self.password) if self.password else ()
            hello.append(("HELLO", 3, *auth))
        elif self.password:
            hello.append(("AUTH", self.username, self.password) if self.username else
                         ("AUTH", self.password))  # fmt: skip
        if self.db:
            hello.append(("SELECT", self.db))
        if hello:
            future: asyncio.Future[list[Any]] = loop.create_future()
            deadline = loop.time() + (self.connect_timeout or 10.0)
            self._waiting.appendleft(_Waiting(future, len(hello), deadline))
            transport.write(b"".join(pack(c) for c in hello))
            with time_limit(self.connect_timeout):
                replies = await future
            for reply in replies:
                if isinstance(reply, Exception):
                    self._forget_connection(RedisConnectionError(str(reply)))
                    raise reply

    def feed(self, protocol: _Protocol, data: bytes) -> None:
        """Rule 2: hand each complete reply to the oldest caller still counting."""
        if protocol is not self._protocol:
            return
        self._reader.feed(data)
        while True:
            try:
                reply = self._reader.gets()
            except InvalidResponse as exc:
                self._forget_connection(RedisConnectionError(f"Protocol error: {exc}"))
                return
            if reply is _MISSING:
                return
            if _PUSH is not None and isinstance(reply, _PUSH):
                continue  # RESP3 out-of-band data answers no command
            if not self._waiting:
                self._forget_connection(RedisConnectionError("a reply nobody asked for"))
                return
            head = self._waiting[0]
            head.replies.append(reply)
            if len(head.replies) == head.count:
                self._waiting.popleft()
                if not head.future.done():
                    head.future.set_result(head.replies)

    def lost(self, protocol: _Protocol, exc: Exception | None) -> None:
        if protocol is self._protocol:
            reason = f": {exc}" if exc else ""
            self._forget_connection(RedisConnectionError(f"Connection closed by server{reason}"))

    def _check_timeout(self) -> None:
        """Rule 4: the oldest caller waited past its deadline: the connection is done for."""
        self._timer = None
        if not self._waiting or self._loop is None:
            return
        if self._loop.time() >= self._waiting[0].deadline:
            self._forget_connection(RedisTimeoutError("Timeout reading from socket"))
        elif self._waiting:
            self._timer = self._loop.call_at(self._waiting[0].deadline, self._check_timeout)

    def _forget_connection(self, error: Exception) -> None:
        transport, self._transport, self._protocol = self._transport, None, None
        if transport is not None:
            # A transport of an event loop already closed (a client used again under a new
            # asyncio.run) cannot schedule its close: its socket goes with it.
            with contextlib.suppress(RuntimeError):
                transport.abort()
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        """Rule 3: every caller still waiting gets ``error``; nothing is sent again."""
        waiting, self._waiting = self._waiting, deque()
        self._outgoing.clear()
        for item in waiting:
            if not item.future.done():
                with contextlib.suppress(RuntimeError):  # its loop is closed: nobody waits
                    item.future.set_exception(error)
                    item.future.exception()  # a caller that gave up must not log it
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def close(self) -> None:
        if self._transport is not None:
            self._forget_connection(RedisConnectionError("client closed"))


def _multiplexable(args: Sequence[Any], options: Mapping[str, Any]) -> bool:
    name = args[0]
    word = (name.split(" ", 1)[0] if isinstance(name, str) else str(name)).upper()
    return word not in _OWN_CONNECTION and NEVER_DECODE not in options


def _parsed(callbacks: Any, args: Sequence[Any], options: Mapping[str, Any], reply: Any) -> Any:
    """What redis-py's ``parse_response`` makes of a raw reply (its callbacks, its options).
    A plain function: the few callbacks that return an awaitable are awaited by the caller
    that got one, the others cost no coroutine per reply."""
    if isinstance(reply, ResponseError):
        if EMPTY_RESPONSE in options:
            return options[EMPTY_RESPONSE]
        return reply
    callback = callbacks.get(args[0])
    if callback is None:
        return reply
    if not options:
        return callback(reply)
    return callback(reply, **{k: v for k, v in options.items() if k not in _SKIPPED_OPTIONS})


class MultiplexedPipeline(Pipeline):
    """A non-transactional pipeline sent through the shared connection (Rule 1)."""

    def __init__(self, owner: MultiplexedRedis, transaction: bool, shard_hint: Any) -> None:
        super().__init__(owner.connection_pool, owner.response_callbacks, transaction, shard_hint)
        self.multiplexer = owner.multiplexer

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        stack = self.command_stack
        if (
            self.is_transaction
            or self.explicit_transaction
            or self.watching
            or self.scripts
            or not all(_multiplexable(args, options) for args, options in stack)
        ):
            return await super().execute(raise_on_error)
        if not stack:
            return []
        try:
            replies = await self.multiplexer.call([args for args, _ in stack])
            response = []
            for (args, options), reply in zip(stack, replies, strict=True):
                value = _parsed(self.response_callbacks, args, options, reply)
                response.append(await value if inspect.isawaitable(value) else value)
        finally:
            await self.reset()  # type: ignore[no-untyped-call]
        if raise_on_error:
            self.raise_first_error(stack, response)
        return response


class MultiplexedRedis(aioredis.Redis):
    """redis-py's client with ``execute_command`` and pipelines on one shared connection."""

    _multiplexer: Multiplexer | None = None

    @property
    def multiplexer(self) -> Multiplexer:
        if self._multiplexer is None:
            kwargs = self.connection_pool.connection_kwargs
            decoding = kwargs.get("decode_responses")
            self._multiplexer = Multiplexer(
                kwargs.get("host", "localhost"),
                int(kwargs.get("port", 6379)),
                db=int(kwargs.get("db", 0) or 0),
                username=kwargs.get("username"),
                password=kwargs.get("password"),
                timeout=kwargs.get("socket_timeout"),
                connect_timeout=kwargs.get("socket_connect_timeout"),
                encoding=kwargs.get("encoding", "utf-8") if decoding else None,
                protocol=int(kwargs.get("protocol") or DEFAULT_RESP_VERSION),
            )
        return self._multiplexer

    async def execute_command(self, *args: Any, **options: Any) -> Any:
        if not _multiplexable(args, options):
            return await super().execute_command(*args, **options)  # type: ignore[no-untyped-call]
        reply = (await self.multiplexer.call([args]))[0]
        value = _parsed(self.response_callbacks, args, options, reply)
        if inspect.isawaitable(value):
            value = await value
        if isinstance(value, ResponseError):
            raise value
        return value

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        return MultiplexedPipeline(self, transaction, shard_hint)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        if self._multiplexer is not None:
            self._multiplexer.close()
        await super().aclose(close_connection_pool)
