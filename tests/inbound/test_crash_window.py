"""kill -9 of the relay between the upstream's acceptance and the ledger write (issue 13.7).

The upstream keeps the message and answers 250 a moment later; the relay is killed in between,
so neither the ledger nor the audit trail says the message went out, and the client (it saw no
250) retries. Without the ledger's "in flight" entry (ledger Rule 6) the retry was a second copy.
"""

from __future__ import annotations

import asyncio
import os
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest

from relay.store.audit import AuditLog
from relay.store.embedded import free_port
from relay.store.redis_keys import Keys
from tests.support.harness import message
from tests.support.redis import async_client
from tests.support.smtp_sink import Sink

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def _config(tmp: Path, smtp_port: int, redis_url: str, upstream: str) -> Path:
    web = free_port()
    path = tmp / "config.toml"
    path.write_text(
        f"""
[smtp]
listen = "127.0.0.1:{smtp_port}"
process_pool = 0
[upstream]
url = "{upstream}"
tls = "none"
timeout = 10.0
[redis]
url = "{redis_url}"
[web]
listen = "127.0.0.1:{web}"
public_url = "http://127.0.0.1:{web}"
[secrets]
link_key = "crash-test-key"
[rules]
local_dir = "{tmp / "rules.local"}"
[audit]
journal = "{tmp / "journal"}"
"""
    )
    return path


def _serve(tmp: Path, config: Path, port: int) -> subprocess.Popen[bytes]:
    """``relay serve`` on the config's ports, once it answers. The restart reuses the ports the
    killed relay held (its ledger identity is its address); another test worker probing for a
    free port may hold one of them for an instant, so "already in use" is tried again."""
    for _attempt in range(5):
        proc = subprocess.Popen(
            [sys.executable, "-m", "relay", "serve"],
            cwd=tmp,
            env={**os.environ, "RELAY_CONFIG": str(config)},
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=2) as client:
                    client.noop()
                    return proc
            except OSError:
                time.sleep(0.2)
        if proc.poll() is None:  # never answered
            proc.kill()
        _out, err = proc.communicate(timeout=60)  # pipes closed either way
        if b"already in use" not in err:
            raise AssertionError(err.decode() or "relay did not start")
        time.sleep(0.5)
    raise AssertionError("the relay's ports stayed in use")


def _send(port: int, data: bytes) -> int:
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
            client.sendmail("app@shop.example", ["alice@example.org"], data)
            return 250
    except (smtplib.SMTPException, OSError):
        return 0


async def test_a_relay_killed_after_the_upstream_took_the_message_does_not_send_it_twice(
    tmp_path: Path, redis_url: str
) -> None:
    sink = await Sink().start()
    sink.handler.faults.reply_delay = 3.0
    port = free_port()
    config = _config(tmp_path, port, redis_url, sink.url)
    (tmp_path / "rules.local").mkdir()
    data = message("<p>once</p>", message_id="<crash@shop.example>")
    proc = await asyncio.to_thread(_serve, tmp_path, config, port)
    try:
        sending = asyncio.create_task(asyncio.to_thread(_send, port, data))
        while not sink.handler.received:
            await asyncio.sleep(0.02)
        proc.kill()  # kill -9 while the upstream's 250 is on its way
        proc.communicate()
        assert await sending == 0  # the client saw no 250: it will retry
        sink.handler.faults.reply_delay = 0.0
        proc = await asyncio.to_thread(_serve, tmp_path, config, port)
        assert await asyncio.to_thread(_send, port, data) == 250
        assert len(sink.handler.copies_for("alice@example.org")) == 1
    finally:
        proc.terminate()
        _out, err = await asyncio.to_thread(proc.communicate, timeout=60)
        await sink.stop()
    assert "in flight when the relay last stopped" in err.decode()
    client = async_client(redis_url)
    audit = AuditLog(client, Keys("relay:"), tmp_path / "j2", timeout=2, retention_days=1)
    [record] = await audit.by_message("<crash@shop.example>")  # written by the retry
    await client.aclose()
    assert "in flight when the relay stopped" in record.upstream_reply
