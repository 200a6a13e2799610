"""SMTP out: pooled connections, per-recipient replies, stale connections, the file outbox."""

from __future__ import annotations

import json
from pathlib import Path

from relay.outbound.forward import FileUpstream, SmtpUpstream
from relay.settings import UpstreamSettings
from tests.support.smtp_sink import Sink

DATA = b"From: a@shop.example\r\nTo: b@example.org\r\nSubject: t\r\n\r\nhello\r\n"


def upstream(sink: Sink, **kw: object) -> SmtpUpstream:
    return SmtpUpstream(UpstreamSettings(url=sink.url, tls="none", timeout=2.0, **kw))  # type: ignore[arg-type]


async def test_connections_are_pooled_and_reused(sink: Sink) -> None:
    up = upstream(sink)
    for n in range(3):
        outcome = await up.send("a@shop.example", [f"r{n}@example.org"], DATA, [])
        assert outcome.accepted() == [f"r{n}@example.org"]
    assert sink.connections == 1
    assert len(sink.handler.received) == 3
    await up.close()


async def test_per_recipient_replies_are_reported(sink: Sink) -> None:
    sink.handler.faults.rcpt_replies["bad@example.org"] = "550 5.1.1 unknown"
    up = upstream(sink)
    outcome = await up.send("a@shop.example", ["ok@example.org", "bad@example.org"], DATA, [])
    assert outcome.accepted() == ["ok@example.org"]
    assert outcome.refused() == ["bad@example.org"]
    assert "5.1.1" in outcome.replies["bad@example.org"].text
    assert sink.handler.received[0].rcpt_tos == ["ok@example.org"]
    await up.close()


async def test_stale_pooled_connection_is_replaced_before_anything_is_sent(sink: Sink) -> None:
    up = upstream(sink)
    assert (await up.send("a@shop.example", ["x@example.org"], DATA, [])).accepted()
    await sink.stop()  # the upstream restarts: the pooled connection is now dead
    await sink.start()
    outcome = await up.send("a@shop.example", ["y@example.org"], DATA, [])
    assert outcome.accepted() == ["y@example.org"]
    assert [r.rcpt_tos for r in sink.handler.received] == [["x@example.org"], ["y@example.org"]]
    await up.close()


async def test_body_8bitmime_and_smtputf8_are_passed_through(sink: Sink) -> None:
    up = upstream(sink)
    outcome = await up.send(
        "a@shop.example", ["z@example.org"], DATA, ["BODY=8BITMIME", "SMTPUTF8", "SIZE=5"]
    )
    assert outcome.accepted()
    options = sink.handler.received[0].mail_options
    assert "BODY=8BITMIME" in options and "SMTPUTF8" in options
    # The client's SIZE is not passed on: the relay declares the size of what it sends.
    assert [o for o in options if o.startswith("SIZE")] == [f"SIZE={len(DATA)}"]
    await up.close()


async def test_unreachable_upstream_defers_every_recipient() -> None:
    from relay.store.embedded import free_port

    up = SmtpUpstream(UpstreamSettings(url=f"smtp://127.0.0.1:{free_port()}", tls="none"))
    outcome = await up.send("a@shop.example", ["a@example.org", "b@example.org"], DATA, [])
    assert outcome.deferred() == ["a@example.org", "b@example.org"]


async def test_file_upstream_writes_complete_files_only(tmp_path: Path) -> None:
    up = FileUpstream(tmp_path / "outbox")
    outcome = await up.send("a@shop.example", ["b@example.org"], DATA, ["BODY=8BITMIME"])
    assert outcome.accepted() == ["b@example.org"]
    files = sorted(p.name for p in (tmp_path / "outbox").iterdir())
    assert len(files) == 2 and not any(name.startswith(".") for name in files)
    eml = next((tmp_path / "outbox").glob("*.eml"))
    assert eml.read_bytes() == DATA
    assert json.loads(eml.with_suffix(".json").read_text())["rcpt_tos"] == ["b@example.org"]
