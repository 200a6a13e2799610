"""Operational logging: text or one JSON object per line, with the per-message id as a field.

Rule 1: logs are not the audit trail: no message bodies, addresses masked. The code that logs
        masks what it knows is an address (``recipients.mask``); the formatter masks again
        whatever still looks like one (an exception's text, a library's message), so that no
        line can carry a full address whatever produced it.
Rule 2: no secret reaches a log: the values registered with ``configure`` (link keys, the
        address key, API tokens, upstream and Redis passwords) are replaced by ``***`` in every
        line, tracebacks included, and URLs are written with their password removed
        (``settings.redact_url``) by the code that logs them.
Rule 3: every line about a message starts its text with ``[<relay id>]``; the JSON format
        lifts that id into a ``relay_id`` field so that log pipelines can group by message.
Rule 4: one handler on the root logger for everything, uvicorn's loggers included (the relay
        starts uvicorn without its own logging configuration), so no line escapes Rules 1-2.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import IO

from relay.settings import Settings

_RELAY_ID = re.compile(r"^\[([0-9a-f]{12})\] ")
# Something shaped like an address: the local part is cut to its first character, as
# ``recipients.mask`` does. An address masked already ("a***@...") does not match again.
_ADDRESS = re.compile(r"(?<![\w.%+*-])([\w%+-])[\w.%+-]*@((?:[\w-]+\.)+[A-Za-z]{2,})")
# Secrets shorter than this are not redacted: replacing "k1" everywhere would garble lines,
# and such a value is no secret anyway.
MIN_SECRET = 6

_secrets: tuple[str, ...] = ()


def register_secrets(values: Iterable[str]) -> None:
    """Values that must never be written (Rule 2); longest first so none is half-replaced."""
    global _secrets
    found = {v for v in (*_secrets, *values) if len(v) >= MIN_SECRET}
    _secrets = tuple(sorted(found, key=len, reverse=True))


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "***")
    if "@" in text:
        text = _ADDRESS.sub(r"\1***@\2", text)
    return text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
        }
        if match := _RELAY_ID.match(message):
            entry["relay_id"] = match.group(1)
            message = message[match.end() :]
        entry["msg"] = redact(message)
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def configure(
    level: str, fmt: str, secrets: Iterable[str] = (), stream: IO[str] | None = None
) -> None:
    register_secrets(secrets)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiosmtpd logs every command with the full sender and recipient addresses at INFO
    # ("mail.log"): Rule 1 keeps it to warnings; the relay logs what it needs, masked.
    logging.getLogger("mail.log").setLevel(max(logging.WARNING, logging.getLevelName(level)))


_URL_PASSWORD = re.compile(r"(//[^/@:\s]*:)([^/\s]+)@")


def redact_url(url: str) -> str:
    """``smtp://user:pass@host:25`` -> ``smtp://user:***@host:25`` (Sentinel lists too)."""
    return _URL_PASSWORD.sub(r"\1***@", url)


def secret_values(settings: Settings) -> list[str]:
    """Every secret a configuration holds, for ``register_secrets``."""
    secrets = settings.secrets
    values = [secrets.link_key, secrets.address_key, *secrets.retired_link_keys.values()]
    values += [*settings.web.api_tokens, settings.upstream.password]
    for url in (settings.upstream.url, settings.redis.url):
        values += [match.group(2) for match in _URL_PASSWORD.finditer(url)]
    return [v for v in values if v]
