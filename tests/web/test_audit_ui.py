"""The auditors' workspace over HTTP, on a whole relay (SMTP in, real Redis, file upstream):
the inspector's three questions, the login, the access log, masking and reveals."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.parse
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from relay.core.recipients import recipient_key
from relay.service import Running
from relay.store.audit import message_key
from relay.store.redis_keys import Keys
from tests.support.auditui import (
    ALICE,
    AUDITOR,
    BOB,
    PASSWORD,
    VIEWER,
    Journey,
    audit_users,
    basic,
    journey,
)
from tests.support.harness import make_settings, start_relay
from tests.support.redis import sync_client
from tests.support.web import Reply, WebServer, http

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def relay(redis_url: str, tmp_path: Path) -> AsyncIterator[Running]:
    settings = make_settings(
        tmp_path,
        redis_url,
        f"file:{tmp_path / 'outbox'}",
        audit_ui={"users": audit_users(), "reveal_users": [AUDITOR]},
    )
    running = await start_relay(settings, redis_url)
    yield running
    await running.stop()


def base(relay: Running) -> str:
    return relay.settings.web.public_url


async def get(relay: Running, path: str, headers: dict[str, str] | None = None) -> Reply:
    auth = basic() if headers is None else headers
    return await asyncio.to_thread(http, "GET", base(relay) + path, headers=auth)


async def seeded(relay: Running) -> Journey:
    return await asyncio.to_thread(journey, base(relay), relay.smtp_port)


def rkey(relay: Running, address: str) -> str:
    return recipient_key(address, relay.settings.address_key)


def cell(page: str, table: str, day: str) -> list[str]:
    """The cells of one day's row in a counts table (by its caption)."""
    part = page.split(f"<caption>{table}", 1)[1].split("</table>", 1)[0]
    row = re.search(rf"<th scope=\"row\">{day}</th>(.*?)</tr>", part)
    assert row, f"no row for {day} in {table}"
    return re.findall(r'<td class="num">(\d+)</td>', row.group(1))


async def test_the_three_questions_are_answered(relay: Running) -> None:
    done = await seeded(relay)
    today = datetime.now(UTC).date().isoformat()

    overview = await get(relay, "/audit/")
    assert overview.status == 200
    # Three recipient copies today, all newsletters; the pixel: twice through the gateway on
    # consent or legacy, once neutralised after the withdrawal.
    assert cell(overview.text, "Recipient copies by category, per day", today) == ["3", "3"]
    assert cell(overview.text, "Trackers by basis, per day", today) == ["1", "1", "1", "3"]
    assert 'id="total-untracked">1<' in overview.text

    # Every email tracked without consent, with the reason.
    listed = await get(relay, "/audit/without-consent")
    assert listed.status == 200 and 'id="nc-trackers">1<' in listed.text
    assert "b***@example.net" in listed.text and BOB not in listed.text
    assert "basis: the legacy regime" in listed.text and "decision row cnil-legacy" in listed.text
    assert ALICE not in listed.text and "a***@example.org" not in listed.text

    # The consent behind a tracked email: message -> recipient -> tracker -> proof.
    first = await get(relay, f"/audit/m/{message_key(done.message_ids[0])}")
    assert first.status == 200
    alice = first.text.split(f'id="r-{rkey(relay, ALICE)}"', 1)[1].split("</section>", 1)[0]
    assert "cnil-consent" in alice and "mailchimp-open" in alice and "sha256:" in alice
    proof_link = f"../r/{rkey(relay, ALICE)}/proof/{done.grant_id}"
    assert proof_link in alice
    proof = await get(relay, f"/audit/r/{rkey(relay, ALICE)}/proof/{done.grant_id}")
    assert proof.status == 200
    for fact in ("checkbox", "signup", "tracking-notice", "sha256:9f2c", "203.0.113.9"):
        assert fact in proof.text
    assert 'id="record-check">hash verified' in proof.text and 'id="chain">verified' in proof.text
    assert "<dd>2</dd>" in proof.text  # the notice version

    # That the withdrawal took effect: nothing tracked after it.
    timeline = await get(relay, f"/audit/r/{rkey(relay, ALICE)}")
    assert timeline.status == 200
    effect = timeline.text.split("Did withdrawals take effect?", 1)[1].split("</table>", 1)[0]
    assert done.withdraw_id in effect and "nothing tracked after it" in effect
    assert re.search(r'<td class="num">1</td>\s*<td class="num">1</td>', effect)


async def test_login_headers_and_the_access_log(
    relay: Running, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="relay.web.audit")
    anonymous = await get(relay, "/audit/", {})
    assert anonymous.status == 401 and anonymous.headers["www-authenticate"].startswith("Basic")
    wrong = await get(relay, "/audit/", basic(AUDITOR, "not the password"))
    assert wrong.status == 401
    ok = await get(relay, "/audit/?from=2026-11-01&to=2026-11-30")
    assert ok.status == 200
    for reply in (anonymous, wrong, ok):
        assert (
            reply.headers["cache-control"] == "no-store" and reply.headers["pragma"] == "no-cache"
        )
        assert "default-src 'none'" in reply.headers["content-security-policy"]
    head = await asyncio.to_thread(http, "HEAD", base(relay) + "/audit/", headers=basic())
    assert head.status == 200 and head.body == b""
    lines = [r.getMessage() for r in caplog.records if r.name == "relay.web.audit"]
    assert (
        "audit access user=inspector GET /audit/?from=2026-11-01&to=2026-11-30 status=200" in lines
    )
    assert any("login failed for 'inspector'" in line for line in lines)
    assert not any(PASSWORD in line or "not the password" in line for line in lines)
    # Guessing: after ten failures from one address, a pause, even for the right password.
    for _ in range(10):
        await get(relay, "/audit/", basic("nobody", "guess"))
    assert (await get(relay, "/audit/")).status == 429


async def test_addresses_are_revealed_only_to_whom_may_and_logged(
    relay: Running, caplog: pytest.LogCaptureFixture
) -> None:
    await seeded(relay)
    caplog.set_level(logging.INFO, logger="relay.web.audit")
    key = rkey(relay, ALICE)
    viewer = await get(relay, f"/audit/r/{key}?reveal={key}", basic(VIEWER, "viewer password"))
    assert (
        viewer.status == 200
        and ALICE not in viewer.text
        and "Show the full address" not in viewer.text
    )
    shown = await get(relay, f"/audit/r/{key}?reveal={key}")
    assert f"<h1>Recipient {ALICE}</h1>" in shown.text
    reveals = [r.getMessage() for r in caplog.records if "audit reveal" in r.getMessage()]
    assert reveals == [f"audit reveal user=inspector recipient={key} path=/audit/r/{key}"]
    # No address in any line the workspace logged.
    assert not any(
        ALICE in r.getMessage() for r in caplog.records if r.name.startswith("relay.web")
    )


async def test_the_search_form_never_puts_an_address_in_a_url(relay: Running) -> None:
    done = await seeded(relay)
    for field, value, target in (
        ("address", ALICE, f"r/{rkey(relay, ALICE)}"),
        ("message_id", done.message_ids[1], f"m/{message_key(done.message_ids[1])}"),
    ):
        body = urllib.parse.urlencode({field: value}).encode()
        reply = await asyncio.to_thread(
            http, "POST", base(relay) + "/audit/find", data=body,
            headers={**basic(), "Content-Type": "application/x-www-form-urlencoded"},
        )  # fmt: skip
        assert reply.status == 303 and reply.headers["location"] == target
    empty = await asyncio.to_thread(
        http, "POST", base(relay) + "/audit/find", data=b"address=",
        headers={**basic(), "Content-Type": "application/x-www-form-urlencoded"},
    )  # fmt: skip
    assert empty.status == 400 and "give one of them" in empty.text


async def test_an_edited_proof_shows_as_broken(relay: Running, redis_url: str) -> None:
    done = await seeded(relay)
    key = rkey(relay, ALICE)
    sync = sync_client(redis_url)
    try:
        events = Keys("relay:").consent_events(key)
        raw = sync.lindex(events, 0)
        assert isinstance(raw, bytes)
        stored = json.loads(raw)
        stored["method"] = "admin"  # someone rewrites how the consent was given
        sync.lset(events, 0, json.dumps(stored))
    finally:
        sync.close()
    proof = await get(relay, f"/audit/r/{key}/proof/{done.grant_id}")
    assert 'id="record-check">does not verify' in proof.text and 'id="chain">broken' in proof.text
    assert "altered: hash does not match content" in proof.text


async def test_bad_parameters_and_unknown_pages(relay: Running) -> None:
    bad = await get(relay, "/audit/?from=yesterday")
    assert bad.status == 400 and "from: not a date" in bad.text
    assert (await get(relay, "/audit/records?basis=maybe")).status == 400
    assert (await get(relay, "/audit/m/0123456789abcdef")).status == 404
    assert (await get(relay, f"/audit/r/{'0' * 32}")).status == 404
    assert (await get(relay, "/audit/r/not-a-key")).status == 404


def test_no_auditor_means_no_workspace(redis_url: str) -> None:
    server = WebServer(redis_url).start()
    try:
        assert http("GET", server.base + "/audit/", headers=basic()).status == 404
    finally:
        server.stop()
