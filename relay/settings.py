"""Settings: a TOML file (plus a few environment variables for secrets) -> frozen typed settings.

Rule 1: read once at start-up; nothing else in the package reads the file or the environment.
Rule 2: every key has a default here and a comment in ``config.example.toml`` (a test checks).
Rule 3: an unknown section or key, or a value of the wrong type or range, stops start-up with a
        ``SettingsError`` naming the file, the line when it can be found, and the key.
Rule 4: secrets may come from the environment (``RELAY_LINK_KEY``, ``RELAY_ADDRESS_KEY``,
        ``RELAY_API_TOKENS``) so that they need not be written in a file; the environment wins.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import re
import tomllib
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.errors import SettingsError
from relay.passwords import check_hash
from relay.settings_controllers import ControllerSettings, check_controllers
from relay.settings_redis import RedisSettings, check_redis
from relay.settings_retention import RetentionSettings, check_retention
from relay.settings_upstream import check_upstream
from relay.settings_web import AuditUiSettings, WebSettings, check_web

__all__ = [
    "AuditUiSettings",
    "ControllerSettings",
    "RedisSettings",
    "RetentionSettings",
    "Settings",
    "WebSettings",
    "load_settings",
    "parse_settings",
]

DEFAULT_CONFIG = "config.toml"


@dataclass(frozen=True)
class TlsSettings:
    cert: str = ""  # PEM certificate chain; STARTTLS is offered when set
    key: str = ""  # PEM private key
    implicit_listen: str = ""  # "host:port" for implicit TLS (SMTPS), empty = off


@dataclass(frozen=True)
class AuthSettings:
    users: Mapping[str, str] = field(default_factory=dict)  # user -> "scrypt$..." hash
    require_tls: bool = True


@dataclass(frozen=True)
class SmtpSettings:
    listen: str = "127.0.0.1:2525"
    hostname: str = ""  # name in the greeting; empty = the machine's FQDN
    max_message_size: int = 36_700_160  # bytes (35 MiB), announced with SIZE; 552 above
    max_render_bytes: int = 134_217_728  # per-recipient renderings of one message held at once
    allowed_clients: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    data_timeout: float = 300.0  # seconds a client may take per command / for the DATA body
    shutdown_grace: float = 30.0  # seconds sessions in flight may take after SIGTERM
    malformed: str = "reject"  # "reject" (5xx) or "strip" (forward with every tracker removed)
    signed: str = "pass"  # signed or encrypted: "pass" to who has a basis, or "reject" all
    redis_down: str = "fail_closed"  # "fail_closed" (strip consent trackers) or "tempfail" (4xx)
    inline_max_bytes: int = 262_144  # messages up to this size are filtered in the event loop
    process_pool: int = 1  # worker processes per relay process for larger messages (0 = none)
    large_message_bytes: int = 4_194_304  # above this size, messages go to their own workers
    large_pool: int = 1  # worker processes for messages over large_message_bytes
    cpu_budget: float = 5.0  # CPU seconds detection may take per message; then fail closed
    rate_limit: int = 0  # messages per minute per client IP (451 4.7.0 at MAIL above), 0 = off
    max_connections: int = 512  # open SMTP connections per listener and process; 421 above
    max_connections_per_client: int = 64  # per client IP address; 0 = no per-client cap
    proxy_protocol: bool = False  # expect a HAProxy PROXY v1/v2 header on every connection
    proxy_from: tuple[str, ...] = ("127.0.0.1/32", "::1/128")  # who may send a PROXY header
    xforward: bool = True  # accept Postfix XFORWARD from allowed_clients and pass it upstream
    event_loop: str = "uvloop"  # "uvloop" (libuv: less CPU per message) or "asyncio"
    tls: TlsSettings = field(default_factory=TlsSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)


@dataclass(frozen=True)
class UpstreamSettings:
    url: str = "file:./var/outbox"
    timeout: float = 60.0  # seconds for each upstream command
    pool_size: int = 4  # persistent connections kept per relay process
    helo: str = ""  # name sent in EHLO; empty = the machine's FQDN
    tls: str = "opportunistic"  # "none", "opportunistic", "required" (smtps:// is implicit TLS)
    verify: bool = True  # verify the upstream certificate (tls = "required" and smtps://)
    ca_file: str = ""  # PEM bundle the upstream certificate must chain to; empty = system CAs
    username: str = ""
    password: str = ""
    profile: str = "none"  # ESP: none, sendgrid, mailgun, mailjet, postmark, ses
    ses_no_tracking_set: str = ""  # SES configuration set without open/click tracking
    esp_tracking: str = "consented"  # the ESP's own tracking: "consented" recipients, or "off"


@dataclass(frozen=True)
class SecretsSettings:
    link_key: str = ""  # HMAC key for links (current); required by `relay serve`
    link_key_id: str = "k1"
    retired_link_keys: Mapping[str, str] = field(default_factory=dict)  # id -> key, verify only
    address_key: str = ""  # keyed hash of recipient addresses; defaults to link_key


@dataclass(frozen=True)
class RulesSettings:
    dir: str = ""  # shipped defaults; empty = the rules/ folder installed with the package
    local_dir: str = "./rules.local"  # local overrides, merged by rule id
    pack: str = "fr-cnil-2026"  # default policy pack
    packs_by_domain: Mapping[str, str] = field(default_factory=dict)  # sender domain -> pack


@dataclass(frozen=True)
class ConsentSettings:
    lifetime_days: int = 395  # a grant older than this counts as expired
    renew_on_notice_change: bool = False  # a new notice version voids older grants
    notice_version: str = "1"


@dataclass(frozen=True)
class AuditSettings:
    retention_days: int = 1095
    journal: str = "./var/audit-journal"  # local append-only journal used while Redis is down


@dataclass(frozen=True)
class DkimSettings:
    mode: str = "off"  # "off", "resign" (our key for the From domain), "upstream" (it signs)
    replace_all: bool = False  # also remove intact signatures of other domains
    # domain -> {selector, key_file} (or private_key inline, PEM)
    keys: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class LogSettings:
    level: str = "INFO"
    format: str = "text"  # "text" or "json"


@dataclass(frozen=True)
class Settings:
    smtp: SmtpSettings = field(default_factory=SmtpSettings)
    upstream: UpstreamSettings = field(default_factory=UpstreamSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    web: WebSettings = field(default_factory=WebSettings)
    secrets: SecretsSettings = field(default_factory=SecretsSettings)
    rules: RulesSettings = field(default_factory=RulesSettings)
    consent: ConsentSettings = field(default_factory=ConsentSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    retention: RetentionSettings = field(default_factory=RetentionSettings)
    audit_ui: AuditUiSettings = field(default_factory=AuditUiSettings)
    dkim: DkimSettings = field(default_factory=DkimSettings)
    log: LogSettings = field(default_factory=LogSettings)
    controllers: Mapping[str, ControllerSettings] = field(default_factory=dict)
    source: str = "<defaults>"  # the file these settings came from

    @property
    def address_key(self) -> bytes:
        return (self.secrets.address_key or self.secrets.link_key).encode()


_CHOICES: dict[str, tuple[str, ...]] = {
    "smtp.malformed": ("reject", "strip"),
    "smtp.signed": ("pass", "reject"),
    "smtp.redis_down": ("fail_closed", "tempfail"),
    "smtp.event_loop": ("uvloop", "asyncio"),
    "upstream.tls": ("none", "opportunistic", "required"),
    "upstream.profile": ("none", "sendgrid", "mailgun", "mailjet", "postmark", "ses"),
    "upstream.esp_tracking": ("consented", "off"),
    "log.format": ("text", "json"),
    "web.client_header": ("x-forwarded-for", "forwarded"),
    "dkim.mode": ("off", "resign", "upstream"),
    "log.level": ("DEBUG", "INFO", "WARNING", "ERROR"),
}


def _line_of(text: str, dotted: str) -> int | None:
    """Best-effort line number of a key in the TOML text, for error messages."""
    section, _, key = dotted.rpartition(".")
    in_section = section == ""
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_section = stripped.strip("[] ") == section
            if in_section and key == "":
                return number
        elif in_section and re.match(rf"{re.escape(key)}\s*=", stripped):
            return number
    # Not a key: maybe a whole table that should not be there.
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip().strip("[] ") == dotted:
            return number
    return None


class _Loader:
    def __init__(self, path: str, text: str) -> None:
        self.path = path
        self.text = text

    def fail(self, dotted: str, message: str) -> SettingsError:
        line = _line_of(self.text, dotted)
        where = f"{self.path}:{line}" if line else self.path
        return SettingsError(f"{where}: {dotted}: {message}")

    def build(self, cls: type[Any], data: Mapping[str, Any], prefix: str) -> Any:
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source"}
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, raw in data.items():
            dotted = f"{prefix}{key}"
            if key not in fields:
                known = ", ".join(sorted(fields))
                raise self.fail(dotted, f"unknown key (known keys: {known})")
            values[key] = self.convert(hints[key], raw, dotted)
        return cls(**values)

    def convert(self, hint: Any, raw: Any, dotted: str) -> Any:  # noqa: C901 - one type a branch
        if dataclasses.is_dataclass(hint) and isinstance(hint, type):
            if not isinstance(raw, dict):
                raise self.fail(dotted, "must be a table")
            return self.build(hint, raw, dotted + ".")
        origin = typing.get_origin(hint)
        if hint is bool:
            if not isinstance(raw, bool):
                raise self.fail(dotted, f"must be true or false, not {raw!r}")
            return raw
        if hint is int:
            if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
                raise self.fail(dotted, f"must be a non-negative integer, not {raw!r}")
            return raw
        if hint is float:
            if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
                raise self.fail(dotted, f"must be a non-negative number, not {raw!r}")
            return float(raw)
        if hint is str:
            if not isinstance(raw, str):
                raise self.fail(dotted, f"must be a string, not {raw!r}")
            choices = _CHOICES.get(dotted.split(".", 1)[-1] if dotted.count(".") > 1 else dotted)
            if choices and raw not in choices:
                raise self.fail(dotted, f"must be one of {', '.join(choices)}, not {raw!r}")
            return raw
        if origin is tuple:
            if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
                raise self.fail(dotted, "must be a list of strings")
            return tuple(raw)
        if origin in (Mapping, dict) or (isinstance(origin, type) and issubclass(origin, Mapping)):
            args = typing.get_args(hint)
            if args and dataclasses.is_dataclass(args[1]):  # [controllers.<id>] tables
                if not isinstance(raw, dict):
                    raise self.fail(dotted, "must be a table of tables")
                return {k: self.convert(args[1], v, f"{dotted}.{k}") for k, v in raw.items()}
            if args and typing.get_origin(args[1]) in (Mapping, dict):
                return _table_of_tables_check(self, raw, dotted)
            if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
                raise self.fail(dotted, "must be a table of strings")
            return dict(raw)  # a plain dict: settings must pickle into worker processes
        raise self.fail(dotted, f"unsupported setting type {hint!r}")  # pragma: no cover


def _table_of_tables_check(loader: _Loader, raw: Any, dotted: str) -> dict[str, dict[str, str]]:
    if not isinstance(raw, dict):
        raise loader.fail(dotted, "must be a table of tables")
    result: dict[str, dict[str, str]] = {}
    for name, inner in raw.items():
        if not isinstance(inner, dict) or not all(isinstance(v, str) for v in inner.values()):
            raise loader.fail(f"{dotted}.{name}", "must be a table of strings")
        result[name] = dict(inner)
    return result


def _check_smtp(smtp: SmtpSettings, loader: _Loader) -> None:
    """[smtp]: networks, TLS files named in pairs, AUTH hashes and where AUTH can be offered."""
    for dotted, nets in (
        ("smtp.allowed_clients", smtp.allowed_clients),
        ("smtp.proxy_from", smtp.proxy_from),
    ):
        for net in nets:
            try:
                ipaddress.ip_network(net, strict=False)
            except ValueError:
                raise loader.fail(dotted, f"not a network: {net!r}") from None
    tls = smtp.tls
    if bool(tls.cert) != bool(tls.key):
        missing = "smtp.tls.key" if tls.cert else "smtp.tls.cert"
        raise loader.fail(missing, "smtp.tls.cert and smtp.tls.key must be set together")
    if tls.implicit_listen:
        if not tls.cert:
            raise loader.fail("smtp.tls.implicit_listen", "needs smtp.tls.cert and smtp.tls.key")
        try:
            split_hostport(tls.implicit_listen)
        except ValueError as exc:
            raise loader.fail("smtp.tls.implicit_listen", str(exc)) from None
    for user, value in smtp.auth.users.items():
        try:
            check_hash(value)
        except ValueError as exc:
            raise loader.fail(f"smtp.auth.users.{user}", str(exc)) from None
    if smtp.auth.users and smtp.auth.require_tls and not tls.cert:
        raise loader.fail(
            "smtp.auth.users",
            "AUTH is only offered over TLS: set smtp.tls.cert and smtp.tls.key "
            "(or smtp.auth.require_tls = false)",
        )


def _check(settings: Settings, loader: _Loader) -> None:
    """Cross-field checks that a type alone cannot express."""
    _check_smtp(settings.smtp, loader)
    check_retention(settings.retention, settings.audit.retention_days, loader.fail)
    check_controllers(settings.controllers, loader.fail)
    check_web(settings.web, settings.audit_ui, loader.fail)
    for dotted, value in (
        ("smtp.listen", settings.smtp.listen),
        ("web.listen", settings.web.listen),
    ):
        try:
            split_hostport(value)
        except ValueError as exc:
            raise loader.fail(dotted, str(exc)) from None
    check_upstream(settings.upstream.url, settings.upstream.ca_file, loader.fail)
    check_redis(settings.redis, loader.fail)
    if not settings.web.public_url.startswith(("http://", "https://")):
        raise loader.fail("web.public_url", "must start with http:// or https://")


def split_hostport(value: str) -> tuple[str, int]:
    """``"host:port"`` or ``"[v6]:port"`` -> (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"must be host:port, not {value!r}")
    return host.strip("[]") or "0.0.0.0", int(port)


def _from_environment(settings: Settings, env: Mapping[str, str]) -> Settings:
    secrets = settings.secrets
    if env.get("RELAY_LINK_KEY"):
        secrets = dataclasses.replace(secrets, link_key=env["RELAY_LINK_KEY"])
    if env.get("RELAY_ADDRESS_KEY"):
        secrets = dataclasses.replace(secrets, address_key=env["RELAY_ADDRESS_KEY"])
    web = settings.web
    if env.get("RELAY_API_TOKENS"):
        tokens = tuple(t for t in env["RELAY_API_TOKENS"].split(",") if t)
        web = dataclasses.replace(web, api_tokens=tokens)
    return dataclasses.replace(settings, secrets=secrets, web=web)


def parse_settings(
    text: str, path: str = "<string>", env: Mapping[str, str] | None = None
) -> Settings:
    loader = _Loader(path, text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"{path}: not valid TOML: {exc}") from None
    settings: Settings = loader.build(Settings, data, "")
    settings = dataclasses.replace(settings, source=path)
    settings = _from_environment(settings, os.environ if env is None else env)
    _check(settings, loader)
    return settings


def config_path(explicit: str | None, env: Mapping[str, str] | None = None) -> str | None:
    """--config, then $RELAY_CONFIG, then ./config.toml if it exists (None: defaults only)."""
    environ = os.environ if env is None else env
    if explicit:
        return explicit
    if environ.get("RELAY_CONFIG"):
        return environ["RELAY_CONFIG"]
    return DEFAULT_CONFIG if Path(DEFAULT_CONFIG).exists() else None


# The link key printed in config.example.toml: start-up warns when it is in use.
EXAMPLE_LINK_KEY = "dev-only-change-me-8f3a1c9e2b7d4f60"


def load_settings(explicit: str | None = None) -> Settings:
    path = config_path(explicit)
    if path is None:
        return parse_settings("", "<defaults>")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read the configuration: {exc.strerror}") from None
    return parse_settings(text, path)
