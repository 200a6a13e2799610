"""DKIM through the running relay: the app's signature broken by the filtering is replaced."""

from __future__ import annotations

from pathlib import Path

import dkim  # type: ignore[import-untyped]

from tests.core.test_dkim import _app_signed, _new_key, _signatures
from tests.support.harness import asend, make_settings, start_relay
from tests.support.smtp_sink import Sink

DOMAIN = "travel.example.org"


async def test_relay_resigns_a_message_whose_body_it_changed(
    tmp_path: Path, redis_url: str, corpus_dir: Path
) -> None:
    relay_key, relay_txt = _new_key(DOMAIN, "relay2026")
    app_key, app_txt = _new_key(DOMAIN, "app1")
    records = {b"relay2026._domainkey." + DOMAIN.encode() + b".": relay_txt,
               b"app1._domainkey." + DOMAIN.encode() + b".": app_txt}  # fmt: skip

    def dns(name: bytes, timeout: float = 5) -> bytes | None:
        return records.get(name)

    # msg000 carries SES open pixels: without consent the relay neutralises them.
    submitted = _app_signed((corpus_dir / "msg000.eml").read_bytes(), app_key)
    assert dkim.DKIM(submitted).verify(dnsfunc=dns)
    sink = await Sink().start()
    settings = make_settings(
        tmp_path,
        redis_url,
        sink.url,
        dkim={
            "mode": "resign",
            "keys": {DOMAIN: {"selector": "relay2026",
                              "private_key": relay_key.private_key.decode()}},
        },
    )  # fmt: skip
    running = await start_relay(settings, redis_url)
    try:
        code, _ = await asend(running.smtp_port, submitted, ["elodie.ee65@mail.example.com"])
    finally:
        await running.stop()
        await sink.stop()
    assert code == 250
    delivered = sink.handler.received[0].data
    assert delivered != submitted
    signatures = _signatures(delivered)
    assert len(signatures) == 1
    assert b"s=relay2026" in delivered[: delivered.index(b"\r\n\r\n")]
    assert dkim.DKIM(delivered).verify(dnsfunc=dns)
