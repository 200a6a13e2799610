"""``relay consent record|show|import|verify`` through the CLI handlers, on a real Valkey."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from relay.cli.consent import register
from relay.core.recipients import recipient_key
from relay.rulefiles import load_rules
from relay.store.redis_keys import Keys
from tests.support.redis import sync_client

KEY = "cli-test-address-key"
KEYS = Keys("c:")
HEADER = "address,event,purposes,occurred_at,actor,method,notice_version,ip,source_form_id\n"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="relay")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    status: int = args.func(args)
    return status


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[redis]\nurl = "{redis_url}"\nprefix = "c:"\ntimeout = 2.0\n'
        f'[secrets]\naddress_key = "{KEY}"\n[consent]\nnotice_version = "3"\n'
    )
    return str(path)


def events(redis_url: str, address: str) -> list[dict[str, Any]]:
    client = sync_client(redis_url)
    raw = client.lrange(KEYS.consent_events(recipient_key(address, KEY.encode())), 0, -1)
    client.close()
    return [json.loads(r) for r in raw]


def test_record_then_show(config: str, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = run(
        "consent", "record", "Alice@Example.org", "--event", "granted",
        "--purpose", "campaign_performance", "--purpose", "fraud_detection",
        "--at", "2026-05-01T09:00:00+02:00", "--source", "paper form 2026-05-01",
        "--method", "checkbox", "--notice-version", "3",
        "--evidence", "ip=192.0.2.7", "--config", config,
    )  # fmt: skip
    assert status == 0
    assert "recorded granted (campaign_performance, fraud_detection)" in capsys.readouterr().out
    [record] = events(redis_url, "alice@example.org")
    assert record["actor"] == "admin" and record["method"] == "checkbox"
    assert record["occurred_at"] == "2026-05-01T07:00:00.000000Z"
    assert record["notice"] == {"id": "", "version": "3", "language": "", "hash": ""}
    assert record["source"] == {"note": "paper form 2026-05-01"}
    # Like the relay's own events, a CLI event names the rules in force.
    assert record["rules_digest"] == load_rules().digest

    assert run("consent", "--config", config, "show", "alice@example.org") == 0
    out = capsys.readouterr().out
    assert "campaign_performance      granted" in out
    assert "deliverability            -" in out
    assert "history (1 events" in out and "evidence[ip=192.0.2.7" in out

    assert run("consent", "show", "alice@example.org", "--json", "--config", config) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["purposes"]["fraud_detection"]["state"] == "granted"
    assert data["history"][0]["hash"] == record["hash"]
    assert data["address"] == "alice@example.org"


INFORMED_WITHOUT_SOURCE = (
    *("--event", "informed", "--purpose", "campaign_performance"),
    *("--method", "import", "--notice-version", "2"),
)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--event", "granted", "--at", "yesterday"), "--at: not an ISO-8601 time"),
        (("--event", "granted"), "purposes: a 'granted' event needs at least one purpose"),
        (("--event", "collected", "--evidence", "ip"), "--evidence: expected K=V"),
        # Proof before reliance (recommendation section 6): the defaults prove nothing.
        (
            ("--event", "granted", "--purpose", "campaign_performance"),
            "--method: missing: a 'granted' event needs proof of the conditions of consent "
            "(recommendation section 6): give --method, --source, --notice-version",
        ),
        (
            INFORMED_WITHOUT_SOURCE,
            "--source: missing: an 'informed' event needs proof",
        ),
    ],
)
def test_record_bad_input(
    config: str, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...], message: str
) -> None:
    assert run("consent", "record", "a@example.org", *argv, "--config", config) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_missing_address_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[redis]\nurl = "redis://127.0.0.1:1/0"\n')
    assert run("consent", "show", "a@example.org", "--config", str(path)) == 2
    assert "secrets.address_key" in capsys.readouterr().err


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text(HEADER + "".join(row + "\n" for row in rows), encoding="utf-8")
    return path


def test_import_reports_bad_rows_and_is_idempotent(
    config: str, redis_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = write_csv(
        tmp_path / "legacy.csv",
        [
            "a@example.org,collected,,2025-01-02T10:00:00Z,,,,,signup-v1",  # line 2
            "a@example.org,informed,campaign_performance,2026-06-01T10:00:00Z,,import,1,,"
            "legacy-notice-mail",  # 3
            "b@example.org,granted,campaign_performance;deliverability,2026-05-01T10:00:00Z,"
            "recipient,checkbox,2,198.51.100.4,signup-v2",  # 4
            "c@example.org,maybe,,2026-05-01T10:00:00Z,,,,,",  # 5: unknown event
            'd@example.org,granted,"ads",2026-05-01T10:00:00Z,,,,,',  # 6: unknown purpose
            "e@example.org,granted,campaign_performance,2026-05-01 10:00,,,,,",  # 7: no zone
            "f@example.org,refused,campaign_performance",  # 8: too few fields
            "",  # 9: blank line, ignored
            'g@example.org,granted,campaign_performance,2026-05-01T10:00:00Z,,checkbox,1,,"two',
            'lines"',  # 10-11: a quoted field over two lines, good
            "not-an-address,collected,,2026-05-01T10:00:00Z,,,,,",  # 12
            "a@example.org,collected,,2025-01-02T10:00:00Z,,,,,signup-v1",  # 13: repeat of 2
            "h@example.org,granted,campaign_performance,2026-05-01T10:00:00Z,,,,,",  # 14: no proof
        ],
    )
    assert run("consent", "import", str(csv_path), "--config", config) == 1
    captured = capsys.readouterr()
    bad = [line for line in captured.err.splitlines() if line.startswith(str(csv_path))]
    assert bad == [
        f"{csv_path}:5: event: unknown event 'maybe' (known: collected, informed, objected, "
        "requested, granted, refused, withdrawn, expired)",
        f"{csv_path}:6: purposes[0]: unknown purpose 'ads' (known: deliverability, "
        "campaign_performance, cross_context_profiling, fraud_detection, "
        "authentication_security)",
        f"{csv_path}:7: occurred_at: needs a time zone (e.g. 2026-04-14T09:30:00Z), "
        "got '2026-05-01 10:00'",
        f"{csv_path}:8: has 3 fields, the header has 9",
        f"{csv_path}:12: address: not an email address: 'not-an-address'",
        f"{csv_path}:14: method: missing: a 'granted' event needs proof of the conditions of "
        "consent (recommendation section 6): give method, source_<name>, notice_version",
    ]
    assert "11 rows: 4 events added, 1 already imported, 6 bad rows" in captured.out
    [collected, informed] = events(redis_url, "a@example.org")
    assert collected["source"] == {
        "form_id": "signup-v1", "import_file": "legacy.csv", "import_line": "2"
    }  # fmt: skip
    assert collected["actor"] == "import" and informed["purposes"] == ["campaign_performance"]
    [granted] = events(redis_url, "b@example.org")
    assert granted["evidence"]["ip"] == "198.51.100.4" and granted["notice"]["version"] == "2"
    assert granted["purposes"] == ["campaign_performance", "deliverability"]
    assert events(redis_url, "g@example.org")[0]["source"]["import_line"] == "10"

    # Importing again (even from a copy under another name) adds nothing.
    copy = tmp_path / "copy.csv"
    copy.write_bytes(csv_path.read_bytes())
    assert run("consent", "import", str(copy), "--config", config, "--no-progress") == 1
    assert "11 rows: 0 events added, 5 already imported, 6 bad rows" in capsys.readouterr().out
    assert len(events(redis_url, "a@example.org")) == 2
    assert run("consent", "verify", "--config", config) == 0
    assert "3 recipients, 4 events checked: chains intact" in capsys.readouterr().out


def test_import_out_of_order(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    csv_path = write_csv(
        tmp_path / "late.csv",
        [
            "a@example.org,withdrawn,fraud_detection,2026-06-01T10:00:00Z,,,,,",
            "a@example.org,granted,fraud_detection,2026-05-01T10:00:00Z,,checkbox,3,,f1",
            "a@example.org,granted,campaign_performance,2026-05-02T10:00:00Z,,checkbox,3,,f1",
            "a@example.org,refused,campaign_performance,2026-05-01T10:00:00Z,,,,,",
        ],
    )
    assert run("consent", "import", str(csv_path), "--config", config, "--no-progress") == 0
    capsys.readouterr()
    assert run("consent", "show", "a@example.org", "--json", "--config", config) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["purposes"]["fraud_detection"]["state"] == "withdrawn"
    assert data["purposes"]["campaign_performance"]["state"] == "granted"


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("address,event,occurred_at,colour\n", ":1: unknown column 'colour'"),
        ("address,event\n", ":1: missing column(s): occurred_at"),
        ("", ":1: empty file"),
        (HEADER + "a@example.org,collected,,2026-05-01T10:00:00Z,,,,,\xff\n", ": not UTF-8"),
    ],
)
def test_import_bad_file(
    config: str,
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    content: str,
    message: str,
) -> None:
    path = tmp_path / "bad.csv"
    path.write_bytes(content.encode("latin-1"))
    assert run("consent", "import", str(path), "--config", config, "--no-progress") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sync_client(redis_url).dbsize() == 0


def test_import_missing_file(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("consent", "import", "/nonexistent/x.csv", "--config", config) == 2
    assert "/nonexistent/x.csv: no such file" in capsys.readouterr().err


def test_verify_names_broken_recipient_and_event(
    config: str, redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for purpose in ("campaign_performance", "fraud_detection"):
        argv = ("--event", "granted", "--purpose", purpose, "--config", config, "--method",
                "button", "--source", "form", "--notice-version", "1")  # fmt: skip
        assert run("consent", "record", "a@example.org", *argv) == 0
        assert run("consent", "record", "b@example.org", *argv) == 0
    capsys.readouterr()
    rkey = recipient_key("b@example.org", KEY.encode())
    client = sync_client(redis_url)
    first = json.loads(client.lindex(KEYS.consent_events(rkey), 0) or b"")
    first["event"] = "refused"
    client.lset(KEYS.consent_events(rkey), 0, json.dumps(first))
    client.close()
    assert run("consent", "verify", "a@example.org", "--config", config) == 0
    assert "1 recipients, 2 events checked: chains intact" in capsys.readouterr().out
    assert run("consent", "verify", "--config", config) == 1
    out = capsys.readouterr().out
    assert f"recipient {rkey}: event {first['id']} (#0): altered" in out
    assert "2 recipients, 4 events checked" in out


def test_embedded_server_started_for_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.toml"
    data_dir = tmp_path / "redis"
    path.write_text(
        f'[redis]\nurl = "embedded"\ndata_dir = "{data_dir}"\n[secrets]\nlink_key = "k"\n'
    )
    argv = ("--event", "objected", "--config", str(path))
    assert run("consent", "record", "a@example.org", *argv) == 0
    capsys.readouterr()
    # A second command starts the server again on the same files: the event is still there.
    assert run("consent", "show", "a@example.org", "--json", "--config", str(path)) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["objected"] is True and len(data["history"]) == 1
