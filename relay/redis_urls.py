"""Redis Cluster URLs: ``redis+cluster://`` and ``rediss+cluster://`` seed lists, parsed.

Shared vocabulary: the settings check the URL at start-up (an error names ``redis.url``) and
``relay.store.redis_conn`` builds the cluster client from the same parse.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote

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
