"""``relay inactive --days N`` over a real Valkey: last open days written by ``/m/``."""

from __future__ import annotations

import argparse
import json
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from relay.cli import inactive as cli_inactive
from relay.store.link_store import day_number
from relay.store.redis_keys import Keys
from tests.support.redis import sync_client


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="relay")
    cli_inactive.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def test_lists_only_recipients_older_than_n_days(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    keys = Keys()
    today = day_number(datetime.now(UTC))
    client = sync_client(redis_url)
    for member, score in (("a" * 32, today - 100), ("b" * 32, today - 30), ("c" * 32, today)):
        client.zadd(keys.last_open(member), {member: score})
    client.set(keys.recipient_address("a" * 32), "old@example.org")
    client.close()
    config = tmp_path / "config.toml"
    config.write_text(f'[redis]\nurl = "{redis_url}"\n')
    assert run(["inactive", "--config", str(config), "--days", "30"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1  # exactly 30 days ago is not older than 30 days
    rkey, day, address = lines[0].split("\t")
    assert (rkey, address) == ("a" * 32, "old@example.org")
    assert (date.fromisoformat(day) - date(1970, 1, 1)).days == today - 100
    assert run(["inactive", "--config", str(config), "--days", "29", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["recipient_key"] for r in rows] == ["a" * 32, "b" * 32]
    assert rows[1]["address"] is None


def test_unreachable_store_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from relay.store.embedded import free_port

    config = tmp_path / "config.toml"
    config.write_text(f'[redis]\nurl = "redis://127.0.0.1:{free_port()}/0"\ntimeout = 0.5\n')
    assert run(["inactive", "--config", str(config), "--days", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("relay inactive: cannot read the store") and "Traceback" not in err


def test_each_controller_lists_its_own_inactive_recipients(
    redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Opens are the controller's own (link_store Rule 7): a recipient who opened the shop's
    email long ago but the club's yesterday is inactive for the shop only."""
    keys = Keys()
    today = day_number(datetime.now(UTC))
    rkey = "d" * 32
    client = sync_client(redis_url)
    client.zadd(keys.last_open(rkey), {f"shop|{rkey}": today - 200, f"club|{rkey}": today - 1})
    client.close()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[redis]\nurl = "{redis_url}"\n'
        '[controllers.shop]\nname = "Shop SAS"\ndomains = ["shop.example"]\n'
        '[controllers.club]\nname = "Running Club"\ndomains = ["club.example"]\n'
    )
    assert run(["inactive", "--config", str(config), "--days", "30", "--controller", "shop"]) == 0
    assert [line.split("\t")[0] for line in capsys.readouterr().out.splitlines()] == [rkey]
    assert run(["inactive", "--config", str(config), "--days", "30", "--controller", "club"]) == 0
    assert capsys.readouterr().out == ""
    assert run(["inactive", "--config", str(config), "--days", "30"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("relay inactive: controller: 2 controllers are configured") and (
        "Traceback" not in err
    )
