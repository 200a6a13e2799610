"""`relay canary`: a tracker-free message through the relay, and the report on its copy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from relay.cli.canary import canary_message
from tests.support.harness import PIXEL, asend, make_settings, start_relay
from tests.support.smtp_sink import Sink


def _inspect(path: Path, config: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "relay", "canary", "inspect", str(path)]
    return subprocess.run(
        [*command, "--config", str(config)],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


async def test_canary_copy_is_clean_and_an_esp_pixel_is_reported(
    tmp_path: Path, redis_url: str
) -> None:
    sink = await Sink().start()
    settings = make_settings(tmp_path, redis_url, sink.url, upstream={"profile": "sendgrid"})
    running = await start_relay(settings, redis_url)
    try:
        data = canary_message("canary@relay.invalid", "box@example.org", "0123456789abcdef")
        code, _ = await asend(running.smtp_port, data, ["box@example.org"])
    finally:
        await running.stop()
        await sink.stop()
    assert code == 250
    delivered = sink.handler.received[0].data
    # The recipient gave no consent: the ESP is told not to track this copy.
    assert b"X-SMTPAPI:" in delivered and b'"opentrack"' in delivered
    config = tmp_path / "canary.toml"
    config.write_text(
        f'[web]\npublic_url = "{settings.web.public_url}"\n[secrets]\nlink_key = "k"\n'
    )
    clean = tmp_path / "clean.eml"
    clean.write_bytes(delivered)
    result = _inspect(clean, config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no tracker added downstream" in result.stdout
    # What an ESP that ignored the control would deliver: its open pixel before </body>.
    tracked = tmp_path / "tracked.eml"
    tracked.write_bytes(
        delivered.replace(b"</body>", f'<img src="{PIXEL}" width="1" height="1"></body>'.encode())
    )
    result = _inspect(tracked, config)
    assert result.returncode == 1
    assert "ADDED DOWNSTREAM" in result.stdout and PIXEL in result.stdout
