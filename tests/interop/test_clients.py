"""Client libraries and programs applications really send with, each submitting one message
(text and HTML with a content image and an open pixel) to the relay: it is delivered once, on
the first attempt, byte-faithful but for the neutralised pixel; DSN requests, where the client
can make them, reach the envelope as written.

Installed by ``.ci/run``: Debian's msmtp, mutt, ruby-mail, php-cli with libphp-phpmailer and
swaks; nodemailer from npm into ``RELAY_NODE_MODULES``; Django from PyPI (a test dependency).
Without them the tests skip, and fail under ``RELAY_REQUIRE_TOOLS=1``.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.interop.conftest import (
    HTML,
    NEUTRAL,
    TEXT,
    Front,
    assert_delivered_once_faithfully,
)
from tests.support.harness import PIXEL

pytestmark = [pytest.mark.timeout(120), pytest.mark.interop]

RCPT = "alice@example.org"
SENDER = "app@shop.example"
NODE_MODULES = Path(os.environ.get("RELAY_NODE_MODULES", "/opt/relay-test-node/node_modules"))
PHPMAILER = Path("/usr/share/php/libphp-phpmailer/autoload.php")


def _run(args: list[str], *, stdin: bytes | None = None, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(
        args, input=stdin, capture_output=True, timeout=60, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    out = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0, out
    return out


def _require_path(path: Path, what: str) -> None:
    if not path.exists():
        if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
            pytest.fail(f"{what} is required (RELAY_REQUIRE_TOOLS=1): {path}")
        pytest.skip(f"{what} not installed ({path})")


async def test_nodemailer(front: Front) -> None:
    node = require_tool("node")
    _require_path(NODE_MODULES / "nodemailer", "nodemailer")
    script = f"""
const nodemailer = require({str(NODE_MODULES / "nodemailer")!r});
const t = nodemailer.createTransport({{host: "127.0.0.1", port: {front.port}, secure: false,
  ignoreTLS: true}});
t.sendMail({{from: "{SENDER}", to: "{RCPT}", subject: "interop nodemailer",
  text: {TEXT.format(client="nodemailer")!r}, html: {HTML.format(client="nodemailer")!r},
  dsn: {{id: "NM-Env+1", return: "headers", notify: ["failure", "delay"], recipient: "{SENDER}"}}
}}).then(info => {{ console.log(info.response); process.exit(0); }},
         err => {{ console.error(err); process.exit(1); }});
"""
    out = await asyncio.to_thread(_run, [node, "-e", script])
    assert "250" in out
    assert_delivered_once_faithfully(front, RCPT)
    _raw, envelope = front.seen[0]
    assert any(o.upper().startswith("ENVID=") for o in envelope.mail_options)
    assert envelope.rcpt_options[0][0].upper() == "NOTIFY=FAILURE,DELAY"


def _django_send(port: int) -> int:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(EMAIL_BACKEND="django.core.mail.backends.smtp.EmailBackend")
        django.setup()
    from django.core.mail import EmailMultiAlternatives, get_connection

    connection = get_connection(host="127.0.0.1", port=port, use_tls=False, timeout=30)
    mail = EmailMultiAlternatives(
        "interop django", TEXT.format(client="Django"), SENDER, [RCPT], connection=connection
    )
    mail.attach_alternative(HTML.format(client="Django"), "text/html")
    sent: int = mail.send()
    return sent


async def test_django(front: Front) -> None:
    pytest.importorskip("django")
    assert await asyncio.to_thread(_django_send, front.port) == 1
    assert_delivered_once_faithfully(front, RCPT)


async def test_phpmailer(front: Front) -> None:
    php = require_tool("php")
    _require_path(PHPMAILER, "libphp-phpmailer")
    script = f"""
require {str(PHPMAILER)!r};
$m = new PHPMailer\\PHPMailer\\PHPMailer(true);
$m->isSMTP(); $m->Host = '127.0.0.1'; $m->Port = {front.port};
$m->SMTPAutoTLS = false; $m->SMTPAuth = false;
$m->dsn = 'FAILURE';
$m->setFrom('{SENDER}'); $m->addAddress('{RCPT}');
$m->Subject = 'interop phpmailer'; $m->isHTML(true);
$m->Body = {HTML.format(client="PHPMailer")!r}; $m->AltBody = {TEXT.format(client="PHPMailer")!r};
$m->send(); echo "sent\\n";
"""
    out = await asyncio.to_thread(_run, [php, "-r", script])
    assert "sent" in out
    assert_delivered_once_faithfully(front, RCPT)
    assert front.seen[0][1].rcpt_options == (("NOTIFY=FAILURE",),)


def _mime(client: str) -> bytes:
    """The message the command-line programs below are given (they send it as it is)."""
    return (
        f"From: {SENDER}\r\nTo: {RCPT}\r\nSubject: interop {client}\r\n"
        f"Message-ID: <{client}@shop.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/alternative; boundary="alt"\r\n\r\n'
        f"--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{TEXT.format(client=client)}\r\n"
        f"--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{HTML.format(client=client)}\r\n"
        "--alt--\r\n"
    ).encode()


async def test_msmtp(front: Front) -> None:
    msmtp = require_tool("msmtp")
    args = [msmtp, "--host=127.0.0.1", f"--port={front.port}", "--tls=off", "--auth=off",
            f"--from={SENDER}", "--dsn-notify=never", "--dsn-return=headers", RCPT]  # fmt: skip
    await asyncio.to_thread(_run, args, stdin=_mime("msmtp"))
    delivered = assert_delivered_once_faithfully(front, RCPT)
    assert b"Message-ID: <msmtp@shop.example>" in delivered
    _raw, envelope = front.seen[0]
    assert envelope.rcpt_options == (("NOTIFY=NEVER",),)
    assert "RET=HDRS" in envelope.mail_options


async def test_mutt(front: Front, tmp_path: Path) -> None:
    mutt = require_tool("mutt")
    muttrc = tmp_path / "muttrc"
    muttrc.write_text(
        f'set smtp_url="smtp://127.0.0.1:{front.port}"\nset from="{SENDER}"\n'
        'set ssl_starttls=no\nset ssl_force_tls=no\nset record=""\nset hostname="shop.example"\n'
        'set content_type="text/html"\nset send_charset="utf-8"\nset dsn_notify="failure"\n'
    )
    body = HTML.format(client="mutt").encode() + b"\n"
    await asyncio.to_thread(
        _run, [mutt, "-n", "-F", str(muttrc), "-s", "interop mutt", "--", RCPT],
        stdin=body, env={"HOME": str(tmp_path)},
    )  # fmt: skip
    copies = front.sink.handler.copies_for(RCPT)
    assert len(copies) == 1 and len(front.seen) == 1
    raw, _envelope = front.seen[0]
    assert b"Subject: interop mutt" in copies[0].data
    assert copies[0].data.split(b"\r\n\r\n")[0] == raw.split(b"\r\n\r\n")[0]
    assert PIXEL.encode() not in copies[0].data and NEUTRAL.encode() in copies[0].data
    assert copies[0].data.replace(NEUTRAL.encode(), PIXEL.encode()) == raw


async def test_ruby_mail(front: Front) -> None:
    ruby = require_tool("ruby")
    script = f"""
require "mail"
m = Mail.new do
  from "{SENDER}"; to "{RCPT}"; subject "interop ruby-mail"
  text_part do body {TEXT.format(client="ruby-mail")!r} end
  html_part do content_type "text/html; charset=UTF-8"; body {HTML.format(client="ruby-mail")!r} end
end
m.delivery_method :smtp, address: "127.0.0.1", port: {front.port}, enable_starttls_auto: false
m.deliver!
puts "sent"
"""
    out = await asyncio.to_thread(_run, [ruby, "-e", script])
    assert "sent" in out
    assert_delivered_once_faithfully(front, RCPT)


async def test_swaks_pipelined(front: Front, tmp_path: Path) -> None:
    swaks = require_tool("swaks")
    data = tmp_path / "message.eml"
    data.write_bytes(_mime("swaks"))
    out = await asyncio.to_thread(
        _run, [swaks, "--server", f"127.0.0.1:{front.port}", "--from", SENDER, "--to", RCPT,
               "--data", str(data), "--pipeline"],
    )  # fmt: skip
    assert "250 2.0.0" in out
    assert_delivered_once_faithfully(front, RCPT)
