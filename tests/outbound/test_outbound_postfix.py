"""The upstream client against a real Postfix 3.7 (Debian's), which then relays to RawSink.

One private Postfix serves three smtpd ports, as an upstream may look:

- ``full``: PIPELINING, 8BITMIME, SMTPUTF8, DSN, STARTTLS with a self-signed certificate,
  a recipient table that refuses one address for good (550) and defers another (450), and a
  2-second idle timeout (``smtpd_timeout``) after which it says 421 and closes;
- ``smtps``: the same over TLS from the first byte (``smtpd_tls_wrappermode``);
- ``bare``: no PIPELINING, 8BITMIME, DSN, SMTPUTF8 or STARTTLS (``smtpd_discard_ehlo_keywords``),
  the 7-bit MTA RFC 6152 and RFC 3461 5.2.2 are about.

What Postfix hands on to the sink shows what it understood: the message byte for byte (after
its own Received field), the DSN parameters, the converted body.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from relay.outbound.forward import SmtpUpstream
from relay.settings import UpstreamSettings
from relay.store.embedded import free_port
from tests.inbound.test_transport import cert  # noqa: F401 - the fixture is used by name
from tests.support.postfix import PostfixInstance
from tests.support.raw_sink import RawSink, RawTransaction
from tests.support.tls import Cert
from tests.test_postfix import Postfixes, postfix  # noqa: F401 - the fixture is used by name

pytestmark = pytest.mark.timeout(90)

WAIT = 30.0
DATA = (
    b"From: news@shop.example\r\nTo: ok@example.org\r\nSubject: pipelined\r\n"
    b"Message-ID: <p1@shop.example>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n\r\n"
    b".a line with a leading dot\r\n"
    b"a line with a trailing space \r\n\tand a tab\r\n.\r\nlast\r\n"
)
RCPT_TABLE = """\
/^gone@/    550 5.1.1 no such user
/^later@/   450 4.2.0 try again later
"""


class ThreePorts(PostfixInstance):
    def __init__(self, tmp_dir: Path, *, smtps_port: int, bare_port: int, **kw: object) -> None:
        super().__init__(tmp_dir, **kw)  # type: ignore[arg-type]
        self.smtps_port = smtps_port
        self.bare_port = bare_port

    def master_cf(self) -> str:
        return super().master_cf() + (
            "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"
            f"127.0.0.1:{self.smtps_port} inet n - n - - smtpd\n"
            "  -o smtpd_tls_wrappermode=yes\n  -o smtpd_tls_security_level=encrypt\n"
            f"127.0.0.1:{self.bare_port} inet n - n - - smtpd\n"
            "  -o smtpd_discard_ehlo_keywords=pipelining,8bitmime,dsn,smtputf8,starttls\n"
            "  -o smtpd_tls_security_level=none\n"
        )


@dataclass
class Upstreams:
    mta: ThreePorts
    sink: RawSink
    cert: Cert

    def client(self, port: int, scheme: str = "smtp", **kw: object) -> SmtpUpstream:
        url = f"{scheme}://127.0.0.1:{port}"
        settings = UpstreamSettings(url=url, timeout=10.0, **kw)  # type: ignore[arg-type]
        return SmtpUpstream(settings, "relay.test")

    async def delivered(self, count: int) -> list[RawTransaction]:
        deadline = asyncio.get_running_loop().time() + WAIT
        while len(self.sink.transactions) < count:
            if asyncio.get_running_loop().time() > deadline:
                pytest.fail(f"{len(self.sink.transactions)}/{count} delivered:\n{self.mta.tail()}")
            await asyncio.sleep(0.05)
        return self.sink.transactions


@pytest.fixture
async def upstreams(postfix: Postfixes, cert: Cert) -> AsyncIterator[Upstreams]:  # noqa: F811
    sink = await RawSink().start()
    home = postfix.tmp_path
    table = home / "rcpt.regexp"
    table.write_text(RCPT_TABLE)
    for name in ("relay.crt", "relay.key"):  # where the postfix daemons can read them
        shutil.copy(cert.cert if name.endswith("crt") else cert.key, home / name)
    mta = ThreePorts(
        home / "postfix",
        smtps_port=free_port(),
        bare_port=free_port(),
        listen_port=free_port(),
        relayhost=f"[127.0.0.1]:{sink.port}",
        main={
            "smtpd_recipient_restrictions": f"check_recipient_access regexp:{table}, "
            "permit_mynetworks, reject",
            "smtpd_timeout": "2s",
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": str(home / "relay.crt"),
            "smtpd_tls_key_file": str(home / "relay.key"),
            "smtputf8_enable": "yes",
            "notify_classes": "",  # no postmaster notices in the sink
            "smtpd_tls_loglevel": "1",
        },
    )
    postfix.made.append(mta)
    await asyncio.to_thread(mta.start)
    try:
        yield Upstreams(mta, sink, cert)
    finally:
        await asyncio.to_thread(postfix.stop_all)
        await sink.stop()


async def test_postfix_pipelined_with_every_reply_counted(upstreams: Upstreams) -> None:
    up = upstreams.client(upstreams.mta.listen_port)
    rcpt_options = {
        "ok@example.org": ("NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;OK+2Btag@Example.org"),
        "never@example.org": ("NOTIFY=NEVER",),
    }
    rcpts = ["ok@example.org", "gone@example.org", "later@example.org", "never@example.org"]
    outcome = await up.send(
        "news@shop.example", rcpts, DATA, ["RET=HDRS", "ENVID=Run+2B7"], rcpt_options=rcpt_options
    )
    assert outcome.accepted() == ["ok@example.org", "never@example.org"]
    assert outcome.replies["gone@example.org"].text.startswith("550 5.1.1")
    assert outcome.replies["later@example.org"].text.startswith("450 4.2.0")
    assert outcome.relayed == []  # Postfix announces DSN: it reports, not us
    (txn,) = await upstreams.delivered(1)
    # Postfix put its Received field on top; every byte the relay sent follows unchanged.
    assert txn.data.endswith(DATA) and txn.data.startswith(b"Received: ")
    # Postfix passes the DSN parameters on as it received them (in its own order; it adds an
    # ORCPT of its own where none was given).
    assert b" RET=HDRS" in txn.mail and b" ENVID=Run+2B7" in txn.mail
    never, ok = sorted(txn.rcpts)
    assert never.startswith(b"RCPT TO:<never@example.org> ") and never.endswith(b" NOTIFY=NEVER")
    assert b" ORCPT=rfc822;OK+2Btag@Example.org" in ok and b" NOTIFY=SUCCESS,FAILURE" in ok
    # The same connection again, while Postfix keeps it: reused, no "improper pipelining".
    assert (await up.send("news@shop.example", ["ok@example.org"], DATA, [])).accepted()
    await up.close()
    assert upstreams.mta.log_lines(r"improper command pipelining") == []
    # Both transactions in one session, the refused recipients counted by Postfix too.
    line = await asyncio.to_thread(upstreams.mta.wait_for_log, r"disconnect from .* data=2", 10)
    assert " mail=2 " in line and " rcpt=3/5 " in line


async def test_postfix_closing_an_idle_pooled_connection(upstreams: Upstreams) -> None:
    up = upstreams.client(upstreams.mta.listen_port, tls="none")
    assert (await up.send("news@shop.example", ["ok@example.org"], DATA, [])).accepted()
    await asyncio.to_thread(upstreams.mta.wait_for_log, r"timeout after END-OF-MESSAGE", 10)
    outcome = await up.send("news@shop.example", ["ok@example.org"], DATA, [])
    await up.close()
    assert outcome.accepted() == ["ok@example.org"]
    assert len(await upstreams.delivered(2)) == 2


async def test_postfix_starttls_and_smtps(upstreams: Upstreams) -> None:
    ca = str(upstreams.cert.cert)
    opportunistic = upstreams.client(upstreams.mta.listen_port)
    required = upstreams.client(upstreams.mta.listen_port, tls="required", ca_file=ca)
    untrusted = upstreams.client(upstreams.mta.listen_port, tls="required")
    smtps = upstreams.client(upstreams.mta.smtps_port, "smtps", ca_file=ca)
    for up in (opportunistic, required, smtps):
        got = await up.send("news@shop.example", ["ok@example.org"], DATA, [])
        assert got.accepted(), upstreams.mta.tail()
        await up.close()
    refused = await untrusted.send("news@shop.example", ["ok@example.org"], DATA, [])
    assert refused.replies["ok@example.org"].text.startswith("451 4.7.5")
    await upstreams.delivered(3)
    assert len(upstreams.mta.log_lines(r"TLS connection established from")) >= 3


async def test_postfix_without_extensions(upstreams: Upstreams) -> None:
    """One command at a time, no DSN parameter (a "relayed" notice is owed instead), 8-bit
    converted to quoted-printable, a UTF-8 address answered 553 5.6.7 by the relay."""
    up = upstreams.client(upstreams.mta.bare_port)
    eight = (
        "From: news@shop.example\r\nMIME-Version: 1.0\r\nSubject: accents\r\n"
        "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        "Crème brûlée = dessert \r\n"
    ).encode()

    async def seven_bit(data: bytes) -> bytes:
        from relay.core.downgrade import to_seven_bit

        return to_seven_bit(data)

    outcome = await up.send(
        "news@shop.example",
        ["ok@example.org", "jörg@example.org"],
        eight,
        ["BODY=8BITMIME", "SMTPUTF8", "RET=FULL"],
        rcpt_options={"ok@example.org": ("NOTIFY=SUCCESS",)},
        downgrade=seven_bit,
    )
    await up.close()
    assert outcome.accepted() == ["ok@example.org"]
    assert outcome.replies["jörg@example.org"].text.startswith("553 5.6.7")
    assert outcome.relayed == ["ok@example.org"]
    (txn,) = await upstreams.delivered(1)
    assert b"RET=" not in txn.mail and b"NOTIFY" not in txn.rcpts[0]
    assert txn.data.isascii()
    parsed = email.message_from_bytes(txn.data, policy=email.policy.default)
    assert parsed["Content-Transfer-Encoding"] == "quoted-printable"
    assert parsed.get_payload(decode=True) == "Crème brûlée = dessert \r\n".encode()
    assert upstreams.mta.log_lines(r"improper command pipelining") == []
