"""The relay's own failure notices (relay/outbound/dsn.py) honour the sender's DSN requests."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from relay.model import Envelope
from relay.outbound.dsn import failure_notice

ORIGINAL = b"From: a@shop.example\r\nSubject: s\r\n\r\nsecret body\r\n"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def _notice(envelope: Envelope, refused: dict[str, str]) -> bytes | None:
    return failure_notice(
        envelope, refused, reporting_mta="relay.test", message_id="<m@x>", relay_id="r1",
        original=ORIGINAL, now=NOW,
    )  # fmt: skip


def _status_part(notice: bytes) -> str:
    parsed = email.message_from_bytes(notice, policy=email.policy.default)
    parts = list(parsed.walk())
    status = next(p for p in parts if p.get_content_type() == "message/delivery-status")
    return "".join(str(block) for block in status.get_payload())


def test_notify_never_and_notify_without_failure_get_no_notice() -> None:
    envelope = Envelope(
        "app@shop.example",
        ("a@example.org", "b@example.org"),
        rcpt_options=(("NOTIFY=NEVER",), ("NOTIFY=SUCCESS,DELAY",)),
    )
    assert (
        _notice(envelope, {"a@example.org": "550 5.1.1 no", "b@example.org": "550 5.1.1 no"})
        is None
    )


def test_only_the_recipients_that_asked_are_reported_with_orcpt_and_envid() -> None:
    envelope = Envelope(
        "app@shop.example",
        ("a@example.org", "b@example.org", "c@example.org"),
        mail_options=("ENVID=QQ+2B314159",),
        rcpt_options=(("NOTIFY=NEVER",), ("NOTIFY=FAILURE", "ORCPT=rfc822;Bob+40Example.org"), ()),
    )
    refused = {r: "550 5.1.1 no such user" for r in envelope.rcpt_tos}
    notice = _notice(envelope, refused)
    assert notice is not None
    status = _status_part(notice)
    assert "Original-Envelope-Id: QQ+314159" in status
    assert "Original-Recipient: rfc822; Bob@Example.org" in status
    assert "Final-Recipient: rfc822; b@example.org" in status
    assert "Final-Recipient: rfc822; c@example.org" in status
    assert "a@example.org" not in notice.decode()


def test_headers_only_unless_ret_full() -> None:
    plain = _notice(Envelope("app@shop.example", ("a@example.org",)), {"a@example.org": "550 x"})
    assert plain is not None
    assert b"text/rfc822-headers" in plain and b"Subject: s" in plain
    assert b"secret body" not in plain
    full = _notice(
        Envelope("app@shop.example", ("a@example.org",), mail_options=("RET=FULL",)),
        {"a@example.org": "550 x"},
    )
    assert full is not None and b"message/rfc822" in full and b"secret body" in full


def test_never_a_notice_for_a_bounce() -> None:
    assert _notice(Envelope("", ("a@example.org",)), {"a@example.org": "550 x"}) is None
