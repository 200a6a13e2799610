"""A newcomer's first hour, as commands run in a fresh folder: `relay init`, one-line errors,
start-up warnings, a second relay on the same ports, the canary's check of who answers."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from relay.cli.init import example_text, fresh_config
from relay.errors import SettingsError
from relay.inbound.listener import claim
from relay.settings import EXAMPLE_LINK_KEY, parse_settings
from relay.store.embedded import free_port
from tests.support.leaks import leaks
from tests.support.smtp_sink import Sink

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(90)


def relay(
    *args: str, cwd: Path, env: dict[str, str] | None = None, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "RELAY_CONFIG"}
    return subprocess.run(
        [sys.executable, "-m", "relay", *args],
        check=False,
        cwd=cwd,
        env={**environment, **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_the_packaged_example_is_the_documented_one() -> None:
    assert example_text() == (ROOT / "config.example.toml").read_text()


def test_init_writes_fresh_secrets_and_never_overwrites(tmp_path: Path) -> None:
    first = relay("init", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    path = tmp_path / "config.toml"
    assert path.stat().st_mode & 0o777 == 0o600
    secrets = tomllib.loads(path.read_text())["secrets"]
    assert secrets["link_key"] != EXAMPLE_LINK_KEY and len(secrets["link_key"]) >= 40
    assert secrets["address_key"] and secrets["address_key"] != secrets["link_key"]
    # Every other line is the example's: the comments travel with the file.
    example = (ROOT / "config.example.toml").read_text().splitlines()
    written = path.read_text().splitlines()
    assert len(example) == len(written)
    assert sum(a != b for a, b in zip(example, written, strict=True)) == 2
    assert "exists already" in one_line_error(relay("init", cwd=tmp_path))
    again = fresh_config(example_text())
    assert tomllib.loads(again)["secrets"]["link_key"] != secrets["link_key"]


def test_commands_without_a_configuration_say_how_to_make_one(tmp_path: Path) -> None:
    for args in (
        ("consent", "show", "alice@example.org"),
        ("consent", "record", "alice@example.org", "--event", "granted"),
        ("serve",),
    ):
        line = one_line_error(relay(*args, cwd=tmp_path))
        assert "relay init" in line and "config.toml" in line, line


def test_redis_that_does_not_answer_is_one_line(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(
        f'[redis]\nurl = "redis://127.0.0.1:{free_port()}/0"\ntimeout = 0.5\n'
        '[secrets]\nlink_key = "first-hour-test-key"\n'
    )
    line = one_line_error(relay("consent", "show", "a@example.org", "--config", str(config),
                                cwd=tmp_path))  # fmt: skip
    assert line.startswith("relay: redis: cannot reach the server"), line


def test_hash_password_takes_config_like_every_command(tmp_path: Path) -> None:
    result = relay("hash-password", "--config", "whatever.toml", cwd=tmp_path, stdin="pw\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("scrypt$")


def test_a_port_in_use_names_the_key_and_the_address() -> None:
    with socket.socket() as other:  # a program that is not a relay holds the port
        other.bind(("127.0.0.1", 0))
        other.listen()
        listen = f"127.0.0.1:{other.getsockname()[1]}"
        expected = r"smtp.listen = '127.0.0.1:\d+': cannot listen: already in use"
        with pytest.raises(SettingsError, match=expected):
            claim("smtp.listen", listen)


def test_a_second_claim_of_one_address_is_refused_and_the_first_workers_share_it() -> None:
    first = claim("web.listen", "127.0.0.1:0", workers=2)
    port = first.port
    try:
        assert len(first.sockets) == 2
        assert {s.getsockname()[1] for s in first.sockets} == {first.port}
        listen = f"127.0.0.1:{first.port}"
        with pytest.raises(SettingsError, match="another consent-relay is already listening"):
            claim("web.listen", listen)
    finally:
        first.close()
    claim("web.listen", f"127.0.0.1:{port}").close()  # released with the first relay


def _config(tmp: Path, smtp: int, web: int, *, upstream: str, redis: str, key: str) -> Path:
    path = tmp / "config.toml"
    path.write_text(
        f"""
[smtp]
listen = "127.0.0.1:{smtp}"
[upstream]
url = "{upstream}"
[redis]
url = "{redis}"
data_dir = "{tmp / "redis"}"
timeout = 0.5
[web]
listen = "127.0.0.1:{web}"
public_url = "http://127.0.0.1:{web}"
[secrets]
link_key = "{key}"
[rules]
local_dir = "{tmp / "rules.local"}"
[audit]
journal = "{tmp / "journal"}"
"""
    )
    return path


def _wait_banner(port: int, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                if conn.recv(100).startswith(b"220"):
                    return
        except OSError:
            time.sleep(0.2)
    raise AssertionError("relay did not start")


def test_second_relay_on_the_same_ports_refuses_to_start(tmp_path: Path) -> None:
    smtp, web = free_port(), free_port()
    first_dir, second_dir = tmp_path / "a", tmp_path / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    upstream = f"file:{tmp_path / 'outbox'}"
    a = _config(first_dir, smtp, web, upstream=upstream, redis="embedded", key="first-key-123")
    b = _config(second_dir, smtp, web, upstream=upstream, redis="embedded", key="second-key-123")
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--workers", "2", "--config", str(a)],
        cwd=first_dir,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_banner(smtp, proc)
        second = relay("serve", "--config", str(b), cwd=second_dir)
        line = one_line_error(second)
        assert "smtp.listen" in line and "another consent-relay" in line, line
        assert not (second_dir / "redis").exists()  # refused before starting anything
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "Traceback" not in err


def test_start_up_warns_about_redis_upstream_and_the_example_key(tmp_path: Path) -> None:
    smtp, web = free_port(), free_port()
    config = _config(
        tmp_path,
        smtp,
        web,
        upstream=f"smtp://relayuser:Upstream-Pw-123@127.0.0.1:{free_port()}",
        redis=f"redis://127.0.0.1:{free_port()}/0",
        key=EXAMPLE_LINK_KEY,
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--config", str(config)],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _wait_banner(smtp, proc)
    finally:
        proc.terminate()
        _out, err = proc.communicate(timeout=60)
    warnings = [line for line in err.splitlines() if " WARNING " in line]
    assert any("secrets.link_key: the example key is in use" in w for w in warnings), err
    assert any("redis.url redis://127.0.0.1:" in w and "unreachable" in w for w in warnings), err
    assert any("upstream.url smtp://relayuser:***@127.0.0.1:" in w for w in warnings), err
    assert "Traceback" not in err
    assert leaks(err.splitlines()) == []  # the upstream password above, in particular


async def test_canary_send_refuses_a_server_that_is_not_the_relay(tmp_path: Path) -> None:
    sink = Sink()
    await sink.start()
    try:
        config = tmp_path / "c.toml"
        config.write_text(f'[smtp]\nlisten = "127.0.0.1:{sink.port}"\n')
        settings = parse_settings(config.read_text(), str(config))
        assert settings.smtp.listen.endswith(str(sink.port))
        proc = await _run_async(
            "canary", "send", "--to", "box@example.org", "--config", str(config), cwd=tmp_path
        )
        assert proc.returncode == 2
        assert "answers, but not as consent-relay" in proc.stderr
        assert sink.handler.received == []
    finally:
        await sink.stop()


async def _run_async(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    import asyncio

    return await asyncio.to_thread(relay, *args, cwd=cwd)
