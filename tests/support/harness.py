"""Start a whole relay (SMTP + web, real Redis, real upstream) inside a test's event loop."""

from __future__ import annotations

import asyncio
import json
import smtplib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from relay.service import Running, start
from relay.settings import Settings, parse_settings
from relay.store.embedded import free_port

LINK_KEY = "test-link-key-0123456789abcdef"


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f'"{k}" = {_toml_value(v)}' for k, v in value.items()) + "}"
    raise TypeError(value)


def make_settings(
    tmp: Path, redis_url: str, upstream_url: str, **sections: dict[str, object]
) -> Settings:
    """Settings for a test relay; ``sections`` override keys, e.g. smtp={"malformed": "strip"}."""
    web_port = free_port()
    base: dict[str, dict[str, Any]] = {
        "smtp": {"listen": f"127.0.0.1:{free_port()}", "hostname": "relay.test",
                 "shutdown_grace": 5.0, "process_pool": 0},
        "upstream": {"url": upstream_url, "timeout": 5.0, "tls": "none"},
        "redis": {"url": redis_url, "timeout": 0.5, "journal": str(tmp / "redis-journal")},
        "web": {"listen": f"127.0.0.1:{web_port}", "public_url": f"http://127.0.0.1:{web_port}",
                "api_tokens": ["test-api-token"]},
        "secrets": {"link_key": LINK_KEY},
        "rules": {"local_dir": str(tmp / "rules.local")},
        "audit": {"journal": str(tmp / "audit-journal")},
    }  # fmt: skip
    for name, values in sections.items():
        base.setdefault(name, {}).update(values)
    text = ""
    for name, values in base.items():
        text += f"[{name}]\n"
        for key, value in values.items():
            text += f"{key} = {_toml_value(value)}\n"
    return parse_settings(text, str(tmp / "config.toml"), env={})


async def start_relay(settings: Settings, redis_url: str) -> Running:
    return await start(settings, redis_url)


def send(
    port: int,
    data: bytes,
    rcpts: Sequence[str],
    mail_from: str = "app@shop.example",
) -> tuple[int, str]:
    """Submit with smtplib (blocking: call through asyncio.to_thread). Returns the DATA reply."""
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo("app.test")
        code, _msg = client.mail(mail_from)
        if code != 250:
            return code, _msg.decode()
        for rcpt in rcpts:
            code, msg = client.rcpt(rcpt)
            if code not in (250, 251):
                return code, msg.decode()
        code, msg = client.data(data)
        return code, msg.decode()


async def asend(
    port: int, data: bytes, rcpts: Sequence[str], mail_from: str = "app@shop.example"
) -> tuple[int, str]:
    return await asyncio.to_thread(send, port, data, rcpts, mail_from)


def message(
    html: str,
    *,
    to: str = "alice@example.org",
    category: str | None = None,
    message_id: str = "<m1@shop.example>",
    extra_headers: str = "",
) -> bytes:
    """A small multipart/alternative message with CRLF line endings."""
    cat = f"X-Relay-Category: {category}\r\n" if category else ""
    text = (
        "From: Shop <news@shop.example>\r\n"
        f"To: {to}\r\n"
        "Subject: Hello\r\n"
        f"Message-ID: {message_id}\r\n"
        f"{cat}{extra_headers}"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        "Hello in text.\r\n"
        "--b1\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "\r\n"
        f"{html}\r\n"
        "--b1--\r\n"
    )
    return text.encode()


PIXEL = "https://u123.ct.sendgrid.net/wf/open?upn=abcdefghijklmnopqrstuvwxyz0123456789"
HTML_WITH_PIXEL = (
    "<html><body><p>Hi</p>"
    '<img src="https://cdn.shop.example/logo.png" width="120" height="40" alt="logo">'
    f'<img src="{PIXEL}" width="1" height="1" alt="">'
    "</body></html>"
)
