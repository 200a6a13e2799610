"""`relay serve` as a user runs it: a real process tree, signals, workers, the embedded Redis."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from relay.store.embedded import free_port
from tests.support.harness import message

pytestmark = [pytest.mark.timeout(90), pytest.mark.slow]


def _config(tmp: Path, smtp_port: int, web_port: int, rules_local: Path) -> Path:
    path = tmp / "config.toml"
    path.write_text(
        f"""
[smtp]
listen = "127.0.0.1:{smtp_port}"
process_pool = 1
inline_max_bytes = 1000
[upstream]
url = "file:{tmp / "outbox"}"
[redis]
url = "embedded"
data_dir = "{tmp / "redis"}"
[web]
listen = "127.0.0.1:{web_port}"
public_url = "http://127.0.0.1:{web_port}"
[secrets]
link_key = "serve-test-key"
[rules]
local_dir = "{rules_local}"
[audit]
journal = "{tmp / "journal"}"
"""
    )
    return path


def _wait_smtp(port: int, proc: subprocess.Popen[bytes], timeout: float = 40) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=2) as client:
                client.noop()
                return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("relay did not start")


def _send(port: int, n: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        # Large enough (inline_max_bytes = 1000) to go through the worker process pool.
        data = message("<p>lorem ipsum</p>\r\n" * 100, message_id=f"<s{n}@shop.example>")
        client.sendmail("app@shop.example", [f"r{n}@example.org"], data)


def _accepted_within(web_port: int, expected: int, seconds: float) -> float:
    """The relay_messages_total{result="accepted"} figure, once it reaches ``expected``."""
    deadline, figure = time.monotonic() + seconds, 0.0
    while time.monotonic() < deadline:
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=5) as r:
            text = r.read().decode()
        found = re.search(r'^relay_messages_total\{result="accepted"\} (\S+)$', text, re.M)
        figure = float(found.group(1)) if found else 0.0
        if figure >= expected:
            break
        time.sleep(0.2)
    return figure


def test_serve_with_two_workers_relays_reloads_and_drains(tmp_path: Path) -> None:
    smtp_port, web_port = free_port(), free_port()
    rules_local = tmp_path / "rules.local"
    rules_local.mkdir()
    config = _config(tmp_path, smtp_port, web_port, rules_local)
    env = {**os.environ, "RELAY_CONFIG": str(config)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--workers", "2"],
        cwd=tmp_path,
        env=env,
        stderr=subprocess.PIPE,
    )
    try:
        _wait_smtp(smtp_port, proc)
        for n in range(6):
            _send(smtp_port, n)
        assert len(list((tmp_path / "outbox").glob("*.eml"))) == 6
        # A broken local rule file: SIGHUP must keep the running rules and keep serving.
        (rules_local / "broken.toml").write_text("[[tracker]\nid = 'x'\n")
        proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        _send(smtp_port, 99)
        assert len(list((tmp_path / "outbox").glob("*.eml"))) == 7
        # Each worker writes its tallies every second (ops.metrics Rule 3); either answers
        # /metrics for both.
        assert _accepted_within(web_port, 7, seconds=5) == 7
    finally:
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    log = err.decode()
    assert log.count("relay pid") == 2  # two worker processes served
    assert "rules reload refused" in log
    assert "Traceback" not in log
