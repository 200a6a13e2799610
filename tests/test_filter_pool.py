"""Worker processes filter with the relay's own validated rules, never the files read again."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from relay.context import build_context
from relay.filter_pool import FilterRunner
from relay.model import Envelope
from relay.settings import parse_settings
from tests.support.harness import HTML_WITH_PIXEL, message

VENDOR = """
[[tracker]]
id = "acme-open"
description = "ACME open pixel"
vendor = "ACME"
hosts = ["t.acme.example"]
path = '/o/[a-z0-9]{12}'
purpose = "campaign_performance"
examples = ["https://t.acme.example/o/abcdef012345"]
"""


async def test_a_worker_decides_with_the_rules_the_relay_validated(tmp_path: Path) -> None:
    local = tmp_path / "rules.local"
    local.mkdir()
    settings = parse_settings(
        f'[smtp]\nprocess_pool = 1\ninline_max_bytes = 100\n[secrets]\nlink_key = "pool-test-key"\n'
        f'[rules]\nlocal_dir = "{local}"\n',
        "pool.toml",
    )
    context = build_context(settings)
    runner = FilterRunner(settings, context)
    try:
        # Edited after start-up and not reloaded (no SIGHUP): the running rules still hold.
        (local / "acme.toml").write_text(VENDOR)
        raw = message(HTML_WITH_PIXEL + "<p>" + "x" * 500 + "</p>")
        envelope = Envelope("app@shop.example", ("alice@example.org",))
        result = await runner.run(raw, envelope, {}, datetime.now(UTC))
        assert result.rules_digest == context.policy.digest
        # A broken file is no reason for a worker to fail either.
        (local / "acme.toml").write_text("[[tracker]\nid = 'x'\n")
        runner.reload(context)
        again = await runner.run(raw, envelope, {}, datetime.now(UTC))
        assert again.rules_digest == context.policy.digest
    finally:
        runner.close()
