"""`relay audit report` and `relay consent export` after a journey through a whole relay: the
report and the export carry the same facts as the workspace (issue 16, "done when")."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.cli.main import main as relay_main
from relay.service import Running
from relay.store.consent_export import CSV_COLUMNS
from tests.support.auditui import ALICE, BOB, Journey, audit_users, basic, journey
from tests.support.harness import LINK_KEY, make_settings, start_relay
from tests.support.web import http

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def relay(redis_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    settings = make_settings(
        tmp_path, redis_url, f"file:{tmp_path / 'outbox'}", audit_ui={"users": audit_users()}
    )
    running = await start_relay(settings, redis_url)
    yield running
    await running.stop()


@pytest.fixture
def config(redis_url: str, tmp_path: Path) -> str:
    path = tmp_path / "cli.toml"
    path.write_text(
        f'[redis]\nurl = "{redis_url}"\n[secrets]\nlink_key = "{LINK_KEY}"\n'
        f'[audit]\njournal = "{tmp_path / "cli-journal"}"\n'
    )
    return str(path)


async def seeded(relay: Running) -> Journey:
    base = relay.settings.web.public_url
    return await asyncio.to_thread(journey, base, relay.smtp_port)


async def cli(*argv: str) -> int:
    return await asyncio.to_thread(relay_main, list(argv))


def numbers(page: str, caption: str, day: str) -> list[str]:
    part = page.split(f"<caption>{caption}", 1)[1].split("</table>", 1)[0]
    row = re.search(rf"<th scope=\"row\">{day}</th>(.*?)</tr>", part)
    assert row
    return re.findall(r'<td class="num">(\d+)</td>', row.group(1))


async def test_the_report_is_self_contained_and_says_what_the_workspace_says(
    relay: Running, config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    await seeded(relay)
    today = datetime.now(UTC).date()
    tomorrow = today + timedelta(days=1)
    out = tmp_path / "report.html"
    assert await cli("audit", "report", "--since", today.isoformat(), "--until",
                     tomorrow.isoformat(), "--out", str(out), "--config", config) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "report of 3 record(s), 1 tracked without consent" in err
    html = out.read_text(encoding="utf-8")
    # Self-contained: nothing loaded, nothing run (the tracker URLs appear as text only).
    assert "<style>" in html and "<link" not in html and "<script" not in html
    assert not re.search(r"\s(src|href)=", html)
    assert 'id="total-records">3<' in html and 'id="total-untracked">1<' in html
    assert "b***@example.net" in html and BOB not in html and "decision row cnil-legacy" in html
    assert "<caption>Bases (the legal ground of each decision)</caption>" in html
    # The same numbers as the workspace's first page, day by day, table by table.
    page = await asyncio.to_thread(
        http, "GET", relay.settings.web.public_url + "/audit/", headers=basic()
    )
    for caption in ("Recipient copies by category", "Trackers by purpose", "Trackers by action",
                    "Trackers by basis"):  # fmt: skip
        table = f"{caption}, per day"
        assert numbers(html, table, today.isoformat()) == numbers(
            page.text, table, today.isoformat()
        )
    assert numbers(html, "Trackers by basis, per day", today.isoformat()) == ["1", "1", "1", "3"]

    # A time inside a day: the report says it covers whole days; full addresses on request.
    full = tmp_path / "full.html"
    assert await cli("audit", "report", "--since", f"{today}T10:00:00Z", "--until",
                     f"{today}T11:00:00Z", "--out", str(full), "--full-addresses",
                     "--no-progress", "--config", config) == 0  # fmt: skip
    assert f"covers whole UTC days: {today} to {today}" in capsys.readouterr().err
    assert BOB in full.read_text(encoding="utf-8")
    assert await cli("audit", "report", "--since", str(tomorrow), "--until", str(today),
                     "--out", str(full), "--config", config) == 2  # fmt: skip
    assert "--until must be later" in capsys.readouterr().err


async def test_consent_export_gives_every_proof_with_its_chain(
    relay: Running, config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    done = await seeded(relay)
    target = tmp_path / "proofs.jsonl"
    assert await cli("consent", "export", "--format", "jsonl", "--out", str(target),
                     "--config", config) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert "exported 4 event(s) of 2 recipient(s)" in err and "recipients" in err  # the bar
    lines = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    by_id = {line["proof"]["id"]: line for line in lines}
    assert set(by_id) == {done.grant_id, done.withdraw_id, *done.legacy_ids}
    grant = by_id[done.grant_id]
    assert grant["chain"] == "verified" and grant["seq"] == 0
    proof = grant["proof"]
    assert (proof["address"], proof["method"], proof["notice"]["version"]) == (
        ALICE,
        "checkbox",
        "2",
    )
    # An auditor recomputes the hash without the relay.
    canonical = json.dumps({k: v for k, v in proof.items() if k != "hash"}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)  # fmt: skip
    assert hashlib.sha256(canonical.encode()).hexdigest() == proof["hash"]
    assert by_id[done.withdraw_id]["proof"]["prev"] == proof["hash"]
    # The same proof the workspace shows.
    rkey = grant["recipient_key"]
    page = await asyncio.to_thread(
        http, "GET", f"{relay.settings.web.public_url}/audit/r/{rkey}/proof/{done.grant_id}",
        headers=basic(),
    )  # fmt: skip
    assert proof["hash"] in page.text and proof["notice"]["hash"] in page.text

    # CSV: fixed columns, readable values; the same proofs.
    assert await cli("consent", "export", "--format", "csv", "--no-progress", "--out",
                     str(tmp_path / "p.csv"), "--config", config) == 0  # fmt: skip
    rows = list(csv.reader(io.StringIO((tmp_path / "p.csv").read_text(encoding="utf-8"))))
    assert tuple(rows[0]) == CSV_COLUMNS
    named = [dict(zip(CSV_COLUMNS, row, strict=True)) for row in rows[1:]]
    assert {r["id"] for r in named} == set(by_id)
    informed = next(r for r in named if r["event"] == "informed")
    assert (
        informed["purposes"] == "campaign_performance" and informed["notice_id"] == "legacy-notice"
    )
    assert json.loads(informed["source"]) == {"file": "crm-export-2025.csv"}
    assert all(r["chain"] == "verified" for r in named)

    # One controller's proofs; without --controller every controller's.
    assert {r["controller"] for r in named} == {"default"}  # the implicit controller
    assert await cli("consent", "export", "--format", "jsonl", "--controller", "default",
                     "--no-progress", "--out", str(tmp_path / "one.jsonl"),
                     "--config", config) == 0  # fmt: skip
    assert len((tmp_path / "one.jsonl").read_text().splitlines()) == 4
    assert await cli("consent", "export", "--format", "jsonl", "--controller", "other-shop",
                     "--no-progress", "--config", config) == 2  # fmt: skip
    assert "unknown controller 'other-shop' (known: default)" in capsys.readouterr().err
    assert await cli("consent", "export", "--format", "jsonl", "--out",
                     str(tmp_path / "missing" / "x.jsonl"), "--config", config) == 2  # fmt: skip
    assert "No such file or directory" in capsys.readouterr().err
