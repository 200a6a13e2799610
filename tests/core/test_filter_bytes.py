"""What the filter hands the upstream is a complete SMTP message: CRLF line endings to the end."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from relay.context import build_context
from relay.core.filtering import filter_message
from relay.core.recipients import recipient_key
from relay.model import ConsentState, Envelope, EventType, Purpose, PurposeConsent
from tests.support.harness import PIXEL, make_settings

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def test_a_footer_in_html_without_a_body_tag_keeps_the_final_crlf(tmp_path: Path) -> None:
    """Found by the session fuzzer: the footer went after the last CRLF, so every sender had to
    add a line ending the filter never wrote (the upstream got other bytes than filtered)."""
    context = build_context(make_settings(tmp_path, "redis://unused", "file:./x"))
    data = (
        b"From: news@shop.example\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/html\r\n\r\n"
        b'<p>hi</p><img src="' + PIXEL.encode() + b'" width=1 height=1>\r\n'
    )
    rkey = recipient_key("carol@example.org", context.address_key)
    granted = PurposeConsent(EventType.GRANTED, NOW - timedelta(days=1), "e1")
    states = {"carol@example.org": ConsentState(rkey, {Purpose.CAMPAIGN_PERFORMANCE: granted})}
    envelope = Envelope("app@shop.example", ("carol@example.org",))
    [group] = filter_message(context, data, envelope, states, NOW).groups
    assert b"</table>" in group.data  # the withdrawal footer was added
    assert group.data.endswith(b"\r\n")
    assert group.data.count(b"\r\n") == group.data.count(b"\n") == group.data.count(b"\r")
