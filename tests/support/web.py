"""Support for the web tests: the real app on a real uvicorn server, a plain HTTP client.

The server runs in a thread with its own event loop and its own Redis client (an asyncio
Redis client belongs to one loop); the tests talk to it over loopback HTTP with urllib and
inspect Redis with a synchronous client or a store on a loop of their own. No test here.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import TypeVar

import uvicorn

from relay.core.controllers import build_controllers
from relay.core.links import LinkMinter, LinkSigner
from relay.core.recipients import recipient_key
from relay.model import ConsentEvent, ConsentState, EventType, Purpose
from relay.settings import (
    AuditUiSettings,
    ControllerSettings,
    SecretsSettings,
    Settings,
    WebSettings,
)
from relay.store.consent import RedisConsentStore
from relay.store.embedded import free_port
from relay.store.link_store import remember_recipient
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys
from relay.web.app import create_app
from relay.web.limits import web_config
from tests.support.redis import async_client, sync_client

API_TOKEN = "test-api-token-0123456789"
ADDRESS = "alice@example.org"
T = TypeVar("T")


def make_settings(
    port: int,
    redis_url: str,
    controllers: Mapping[str, ControllerSettings] | None = None,
    audit_users: Mapping[str, str] | None = None,
    web: Mapping[str, object] | None = None,
) -> Settings:
    settings = Settings(
        web=WebSettings(
            listen=f"127.0.0.1:{port}",
            public_url=f"http://127.0.0.1:{port}",
            api_tokens=(API_TOKEN,),
            **dict(web or {}),  # type: ignore[arg-type]
        ),
        secrets=SecretsSettings(
            link_key="current-link-key", link_key_id="k2", retired_link_keys={"k1": "old-key"}
        ),
        controllers=dict(controllers or {}),
    )
    if audit_users:
        settings = dataclasses.replace(settings, audit_ui=AuditUiSettings(users=dict(audit_users)))
    return dataclasses.replace(settings, redis=dataclasses.replace(settings.redis, url=redis_url))


class WebServer:
    """The real application on uvicorn, on a free loopback port, in a background thread."""

    def __init__(
        self,
        redis_url: str,
        controllers: Mapping[str, ControllerSettings] | None = None,
        audit_users: Mapping[str, str] | None = None,
        web: Mapping[str, object] | None = None,
    ) -> None:
        self.port = free_port()
        self.redis_url = redis_url
        self.settings = make_settings(self.port, redis_url, controllers, audit_users, web)
        self.controllers = build_controllers(self.settings.controllers)
        self.keys = Keys(self.settings.redis.prefix)
        self.signer = LinkSigner.from_settings(self.settings.secrets)
        self.minter = LinkMinter(self.settings.web.public_url, self.signer)
        self.base = self.settings.web.public_url
        self.server: uvicorn.Server | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.error: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start()
            self.error = exc

    async def _main(self) -> None:
        client = async_client(self.redis_url, 2)
        store = RedisConsentStore(
            client, self.keys, self.settings.address_key, self.settings.consent,
            controllers=self.controllers,
        )  # fmt: skip
        app = create_app(settings=self.settings, redis=client, store=store, signer=self.signer)
        # The relay's own transport (connection caps, header and body deadlines).
        config = web_config(app, self.settings)
        config.host, config.port = "127.0.0.1", self.port
        self.server = uvicorn.Server(config)
        try:
            await self.server.serve()
        finally:
            await client.aclose()

    def start(self) -> WebServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.server is not None and self.server.started:
                return self
            if self.error is not None or not self.thread.is_alive():
                raise RuntimeError(f"web server did not start: {self.error!r}")
            time.sleep(0.02)
        raise RuntimeError("web server did not start in time")

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        self.thread.join(timeout=10)

    # -- helpers over the real store ------------------------------------------------------

    def run(self, make: Callable[[RedisConsentStore, AsyncRedis], Awaitable[T]]) -> T:
        async def main() -> T:
            client = async_client(self.redis_url)
            store = RedisConsentStore(
                client, self.keys, self.settings.address_key, self.settings.consent,
                controllers=self.controllers,
            )  # fmt: skip
            try:
                return await make(store, client)
            finally:
                await client.aclose()

        # In a thread of its own: the caller may already run a loop (Playwright's sync API).
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(lambda: asyncio.run(main())).result(timeout=30)

    def rkey(self, address: str = ADDRESS) -> str:
        return recipient_key(address, self.settings.address_key)

    def remember(self, address: str = ADDRESS) -> str:
        rkey = self.rkey(address)
        self.run(lambda _s, c: remember_recipient(c, self.keys, rkey, address))
        return rkey

    def grant(
        self, purposes: tuple[Purpose, ...], address: str = ADDRESS, controller: str = ""
    ) -> None:
        event = ConsentEvent(
            event=EventType.GRANTED,
            purposes=purposes,
            address=address,
            occurred_at=datetime.now(UTC),
            actor="api",
            method="api",
            controller=controller,
        )
        self.run(lambda s, _c: s.record(event))

    def record(self, event: ConsentEvent) -> ConsentEvent:
        return self.run(lambda s, _c: s.record(event))

    def state(self, address: str = ADDRESS, controller: str | None = None) -> ConsentState:
        now = datetime.now(UTC)
        return self.run(lambda s, _c: s.states([address], now, controller))[address]

    def history(self, address: str = ADDRESS, controller: str | None = None) -> list[ConsentEvent]:
        return self.run(lambda s, _c: s.history(address, controller))


@dataclasses.dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def http(
    method: str,
    url: str,
    *,
    data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with _OPENER.open(request, timeout=10) as response:
            return Reply(response.status, {k.lower(): v for k, v in response.headers.items()},
                         response.read())  # fmt: skip
    except urllib.error.HTTPError as err:
        return Reply(err.code, {k.lower(): v for k, v in err.headers.items()}, err.read())


def form_post(url: str, fields: dict[str, str], headers: dict[str, str] | None = None) -> Reply:
    body = urllib.parse.urlencode(fields).encode()
    all_headers = {"Content-Type": "application/x-www-form-urlencoded", **(headers or {})}
    return http("POST", url, data=body, headers=all_headers)


def nonce_of(page: str) -> str:
    found = re.search(r'name="nonce" value="([^"]+)"', page)
    assert found, "the page has no form nonce"
    return found.group(1)


def snapshot(redis_url: str, pattern: str = "*") -> dict[bytes, object]:
    """Every key matching ``pattern`` with its value, to prove that nothing changed."""
    client = sync_client(redis_url)
    try:
        out: dict[bytes, object] = {}
        for key in sorted(client.scan_iter(match=pattern)):
            kind = client.type(key)
            if kind == b"string":
                out[key] = client.get(key)
            elif kind == b"list":
                out[key] = client.lrange(key, 0, -1)
            elif kind == b"hash":
                out[key] = client.hgetall(key)
            elif kind == b"zset":
                out[key] = client.zrange(key, 0, -1, withscores=True)
            else:
                out[key] = kind
        return out
    finally:
        client.close()
