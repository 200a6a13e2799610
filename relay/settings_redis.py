"""``[redis]`` settings: which Redis (one server, Sentinel, a Redis Cluster), its timeouts, how
long writes wait for a replica, and the write journal; and the parse of cluster URLs.

Part of the settings vocabulary (``relay.settings`` loads and checks them with this module);
``relay.store.redis_conn`` builds the clients from the same parse.
Rule 1: ``redis+cluster://[user:password@]host:port[,host:port...][/0][?tls options]`` names seed
        nodes (``rediss+cluster://``: TLS on every node); an error names ``redis.url``.
Rule 2: the key prefix has no braces (on a cluster they would become every key's hash tag).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

from relay.errors import SettingsError

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
# TLS options a cluster URL may carry in its query string (``rediss+cluster://`` only).
_TLS_OPTIONS = (
    "ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs", "ssl_check_hostname",
)  # fmt: skip
_CERT_REQS = ("required", "optional", "none")


@dataclass(frozen=True)
class ClusterURL:
    seeds: tuple[tuple[str, int], ...]
    tls: bool = False
    username: str | None = None
    password: str | None = None
    options: dict[str, Any] = field(default_factory=dict)


def is_cluster_url(url: str) -> bool:
    return url.startswith(CLUSTER_SCHEMES)


def _tls_option(url: str, name: str, value: str) -> Any:
    if name not in _TLS_OPTIONS:
        raise ValueError(f"{url!r}: unknown option {name!r} (known: {', '.join(_TLS_OPTIONS)})")
    if name == "ssl_cert_reqs":
        if value not in _CERT_REQS:
            raise ValueError(f"{url!r}: ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}")
        return value
    if name == "ssl_check_hostname":
        if value.lower() not in ("true", "false", "yes", "no"):
            raise ValueError(f"{url!r}: ssl_check_hostname must be true or false")
        return value.lower() in ("true", "yes")
    if not Path(value).is_file():
        raise ValueError(f"{url!r}: {name}: no such file: {value}")
    return value


def parse_cluster_url(url: str) -> ClusterURL:
    """``redis+cluster://[user:password@]host:port[,host:port...][/0][?tls options]`` ->
    seeds, TLS, credentials and TLS options (``rediss+cluster://``: TLS on every node).
    A ValueError says what is wrong; a cluster has only database 0."""
    tls = url.startswith("rediss+cluster://")
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    username = password = None
    if "@" in rest:
        credentials, rest = rest.rsplit("@", 1)
        user, colon, secret = credentials.partition(":")
        username = unquote(user) or None if colon else None
        password = unquote(secret if colon else credentials) or None
    hosts, _, path = rest.partition("/")
    if path not in ("", "0"):
        raise ValueError(f"{url!r}: a cluster has only database 0, not {path!r}")
    seeds: list[tuple[str, int]] = []
    for item in hosts.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"{url!r}: seed {item!r} is not host:port")
        seeds.append((host.strip("[]"), int(port)))
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        if not tls:
            raise ValueError(f"{url!r}: option {name!r} needs TLS (rediss+cluster://)")
        options[name] = _tls_option(url, name, value)
    return ClusterURL(tuple(seeds), tls, username, password, options)


@dataclass(frozen=True)
class RedisSettings:
    # "embedded", "redis://...", "rediss://...", "unix:///path", "redis+sentinel://h:p/service",
    # "redis+cluster://h:p,h:p" (Redis Cluster seed nodes), "rediss+cluster://..." (TLS)
    url: str = "embedded"
    data_dir: str = "./var/redis"  # embedded server: data and append-only file
    timeout: float = 2.0  # seconds for every Redis call
    prefix: str = "relay:"  # prefix of every key the relay writes
    # Cluster and Sentinel: writes WAIT for this many replicas, at most wait_timeout seconds.
    wait_replicas: int = 1
    wait_timeout: float = 0.25
    journal: str = "./var/redis-journal"  # writes Redis did not take or confirm, replayed
    journal_keep: float = 60.0  # seconds an unconfirmed write is replayed before it is let go


def check_redis(redis: RedisSettings, fail: Callable[[str, str], SettingsError]) -> None:
    """URL scheme, a cluster URL's seeds and options, a prefix without braces."""
    rurl = redis.url
    schemes = ("redis://", "rediss://", "unix://", "redis+sentinel://", *CLUSTER_SCHEMES)
    if rurl != "embedded" and not rurl.startswith(schemes):
        raise fail("redis.url", f"must be 'embedded' or a redis:// URL, not {rurl!r}")
    if rurl.startswith(CLUSTER_SCHEMES):
        try:
            parse_cluster_url(rurl)
        except ValueError as exc:
            raise fail("redis.url", str(exc)) from None
    if "{" in redis.prefix or "}" in redis.prefix:
        # A brace in the prefix would make it the Redis Cluster hash tag of every key.
        raise fail("redis.prefix", f"must not contain {{ or }}, not {redis.prefix!r}")
