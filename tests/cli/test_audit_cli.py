"""`relay audit show|search|export` on a real Valkey, through a parser built by register()."""

from __future__ import annotations

import argparse
import asyncio
import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.cli import audit as cli_audit
from relay.store.audit import AuditLog
from relay.store.audit_codec import CSV_COLUMNS
from relay.store.audit_record import DecisionRecord, record_from_json
from relay.store.redis_keys import Keys
from tests.support.audit import ADDRESS_KEY, message
from tests.support.redis import async_client


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="relay")
    cli_audit.register(parser.add_subparsers(dest="command", required=True))
    return parser


def run(argv: Sequence[str]) -> int:
    args = _parser().parse_args(["audit", *argv])
    status: int = args.func(args)
    return status


@pytest.fixture
def config(redis_url: str, tmp_path: Path) -> str:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[redis]\nurl = "{redis_url}"\nprefix = "c:"\n'
        f'[secrets]\nlink_key = "x"\naddress_key = "{ADDRESS_KEY.decode()}"\n'
        f'[audit]\njournal = "{tmp_path / "journal"}"\n'
    )
    return str(path)


def _write(redis_url: str, tmp_path: Path, records: list[DecisionRecord]) -> None:
    async def main() -> None:
        client = async_client(redis_url)
        log = AuditLog(client, Keys("c:"), tmp_path / "j", timeout=2.0, retention_days=30)
        by_message: dict[str, list[DecisionRecord]] = {}
        for record in records:
            by_message.setdefault(record.message_id, []).append(record)
        for group in by_message.values():  # one message after the other, as a relay stores
            await log.write(group)
        await client.aclose()

    asyncio.run(main())


@pytest.fixture
def stored(redis_url: str, tmp_path: Path) -> list[DecisionRecord]:
    records = [*message(1), *message(2, rcpts=3)]
    _write(redis_url, tmp_path, records)
    return records


def test_show_prints_the_basis_of_every_decision(
    config: str, stored: list[DecisionRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["show", "--message-id", "<msg1.x@shop.example>", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "2 recipient record(s)" in out
    for record in stored[:2]:
        assert record.rcpt in out
        for t in record.trackers:
            assert t.url in out
    assert "gateway      basis=consent purpose=campaign_performance rule=sendgrid-open" in out
    assert "neutralise   basis=none" in out
    assert "policy=no-consent" in out
    assert "upstream reply: 250 2.0.0 ok" in out
    assert "consent events relied on: ev-1" in out


def test_show_json_has_the_spec_shape(
    config: str, stored: list[DecisionRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["--config", config, "show", "--message-id", "msg2.x@shop.example", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["message_id"] == "<msg2.x@shop.example>"
    assert [record_from_json(r) for r in data["recipients"]] == stored[2:]


def test_show_unknown_message_is_status_1(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["show", "--message-id", "<nope@x>", "--config", config]) == 1
    assert "no decision record" in capsys.readouterr().err


def test_search_by_rcpt_and_time(
    config: str, stored: list[DecisionRecord], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["search", "--rcpt", "user1@example.org", "--json", "--config", config]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [record_from_json(json.loads(line)) for line in lines] == [stored[1], stored[3]]
    assert run(["search", "--rcpt", "user2@example.org", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "user2@example.org  <msg2.x@shop.example>  newsletter" in out
    assert "1x gateway/consent, 1x neutralise/none" in out
    future = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    assert run(["search", "--since", future, "--config", config]) == 0
    assert capsys.readouterr().out == ""
    assert run(["search", "--limit", "2", "--config", config]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 2 and "--limit 2" in captured.err


@pytest.mark.parametrize("flag", ["--since", "--until"])
def test_bad_times_are_status_2(flag: str, config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["search", flag, "last tuesday", "--config", config]) == 2
    err = capsys.readouterr().err
    assert f"{flag}: not an ISO-8601 time: 'last tuesday'" in err
    argv = ["export", "--since", "2026-01-01", "--until", "2026-02-01", "--format", "csv"]
    argv[argv.index(flag) + 1] = "2026-13-45"
    assert run([*argv, "--config", config]) == 2
    assert f"{flag}: not an ISO-8601 time: '2026-13-45'" in capsys.readouterr().err
    reverse = ["export", "--since", "2026-02-01", "--until", "2026-01-01", "--format", "csv"]
    assert run([*reverse, "--config", config]) == 2
    assert "--until must be later" in capsys.readouterr().err


def test_export_files_are_reproducible(
    config: str, stored: list[DecisionRecord], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    today = datetime.now(UTC).date()
    since, until = today.isoformat(), (today + timedelta(days=1)).isoformat()
    outputs: dict[str, list[bytes]] = {"jsonl": [], "csv": []}
    for fmt, outs in outputs.items():
        for n in range(2):
            out = tmp_path / f"export{n}.{fmt}"
            argv = ["export", "--since", since, "--until", until, "--format", fmt]
            assert run([*argv, "--out", str(out), "--config", config]) == 0
            outs.append(out.read_bytes())
            assert not out.with_name(out.name + ".partial").exists()
        assert outs[0] == outs[1]
        err = capsys.readouterr().err
        assert "exported 5 record(s)" in err
        assert "5 records" in err  # the tqdm progress bar, on stderr
    lines = outputs["jsonl"][0].decode().splitlines()
    assert [record_from_json(json.loads(line)) for line in lines] == stored
    rows = list(csv.reader(io.StringIO(outputs["csv"][0].decode(), newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS and len(rows) == 1 + 5 * 2


def test_export_to_standard_output(
    config: str, stored: list[DecisionRecord], capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    today = datetime.now(UTC).date()
    argv = ["export", "--since", today.isoformat(), "--until", f"{today}T23:59:59.999+00:00"]
    assert run([*argv, "--format", "jsonl", "--no-progress", "--config", config]) == 0
    lines = capsysbinary.readouterr().out.decode().splitlines()
    assert [json.loads(line)["record_id"] for line in lines] == [r.record_id for r in stored]


def test_unreachable_redis_is_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[redis]\nurl = "redis://127.0.0.1:1/0"\ntimeout = 0.2\n')
    assert run(["show", "--message-id", "x", "--config", str(path)]) == 2
    assert capsys.readouterr().err.startswith("relay audit: ")
