"""Generated hostile groups through the upstream client into a raw-bytes sink (issue 13).

Whatever the addresses (control characters, quotes, brackets, non-ASCII, invalid UTF-8) and
whatever the message bytes (bare CR or LF anywhere, NUL, lines of dots), the client either
answers a recipient itself or the sink received exactly that address and exactly those bytes;
no command line on the wire ever holds a control character; no connection is left open.
"""

from __future__ import annotations

import asyncio
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from relay.outbound.forward import SmtpUpstream
from relay.settings import UpstreamSettings
from tests.support.raw_sink import RawSink

PLAIN = st.text(st.sampled_from(list("abcXYZ09.+-_")), min_size=1, max_size=10)
QUOTED = st.text(st.sampled_from(list(" ()<>@\\abc.,:;[]")), max_size=8).map(lambda t: f'"{t}"')
COMMENTED = PLAIN.map(lambda t: f"(x){t}")
UTF8 = st.text(st.sampled_from(list("aéß€日本")), min_size=1, max_size=6)
HOSTILE = st.text(st.sampled_from(list("ab\x00\x0b\r\n\t\x7f\udcff<>")), min_size=1, max_size=8)
LOCAL = st.one_of(PLAIN, QUOTED, COMMENTED, UTF8, HOSTILE)
DOMAIN = st.sampled_from(["example.org", "EXAMPLE.org", "bücher.example", "[192.0.2.1]"])
ADDRESS = st.builds(lambda local, domain: f"{local}@{domain}", LOCAL, DOMAIN)
CLEAN_LINE = st.binary(max_size=30).map(
    lambda b: b.replace(b"\r", b"").replace(b"\n", b"").replace(b"\x00", b"")
)
DOTS = st.sampled_from([b".", b"..", b"...x", b". ", b"From: x", b""])
HOSTILE_LINE = st.sampled_from([b"a\rb", b"a\nb", b"\x00", b".\r", b"\n.", b"x\r\r"])
LINE = st.one_of(CLEAN_LINE, DOTS, CLEAN_LINE, DOTS, HOSTILE_LINE)
MESSAGE = st.lists(LINE, min_size=1, max_size=10).map(
    lambda lines: b"Subject: fuzz\r\n\r\n" + b"\r\n".join(lines) + b"\r\n"
)
CONTROL = re.compile(rb"[\x00-\x1f\x7f]")


async def one(sender: str, rcpts: list[str], data: bytes) -> None:
    sink = await RawSink().start()
    up = SmtpUpstream(UpstreamSettings(url=sink.url, tls="none", timeout=2.0, pool_size=2))
    try:
        outcome = await up.send(sender, rcpts, data, ["SMTPUTF8"])
        await up.close()
        await asyncio.sleep(0)
    finally:
        await sink.stop()
    assert set(outcome.replies) == set(rcpts)
    for session in sink.sessions:
        assert not any(CONTROL.search(line) for line in session.lines)
    accepted = outcome.accepted()
    if not accepted:
        return
    (txn,) = sink.transactions
    assert txn.data == data
    assert txn.mail.startswith(b"MAIL FROM:<" + sender.encode() + b">")
    assert txn.rcpts == [f"RCPT TO:<{r}>".encode() for r in accepted]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ADDRESS, st.lists(ADDRESS, min_size=1, max_size=4, unique=True), MESSAGE)
def test_hostile_groups_are_sent_exactly_or_answered(
    sender: str, rcpts: list[str], data: bytes
) -> None:
    asyncio.run(one(sender, rcpts, data))
