"""``relay canary``: does anything downstream of the relay put a tracker back?

An ESP behind the relay can add its own open pixel or rewrite links after the relay decided.
``relay canary send`` submits a message without any tracker, through the running relay (so the
whole pipeline and the ESP's per-message controls apply), to a mailbox you can read.
``relay canary inspect DELIVERED.eml`` reads the copy as it arrived (in most webmails: "Show
original" / "View source", saved as a file) and reports every image request and tracker in it
that the relay did not put there: with a recipient who gave no consent there should be none.

Rule: the canary carries a unique token in its subject and body so that the delivered copy can
be matched; it contains no image at all, so any image in the delivered copy came from
downstream (the relay's own links start with ``[web] public_url`` and are reported apart).
"""

from __future__ import annotations

import argparse
import smtplib
import sys
import uuid
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path

from relay.context import build_context
from relay.core.parse import parse_message
from relay.detect.trackers import detect
from relay.inbound.listener import IDENT
from relay.settings import load_settings, split_hostport


def canary_message(sender: str, to: str, token: str) -> bytes:
    domain = sender.rpartition("@")[2] or "relay.invalid"
    lines = [
        f"From: consent-relay canary <{sender}>",
        f"To: <{to}>",
        f"Subject: consent-relay canary {token}",
        f"Date: {format_datetime(datetime.now(UTC))}",
        f"Message-ID: <canary.{token}@{domain}>",
        "X-Relay-Category: marketing",
        "MIME-Version: 1.0",
        'Content-Type: multipart/alternative; boundary="canary"',
        "",
        "--canary",
        "Content-Type: text/plain; charset=utf-8",
        "",
        f"Canary {token}: this message was sent without any image or tracker.",
        "--canary",
        "Content-Type: text/html; charset=utf-8",
        "",
        f"<html><body><p>Canary {token}: this message was sent without any image or tracker.",
        '<a href="https://example.org/">a plain link</a></p></body></html>',
        "--canary--",
        "",
    ]
    return "\r\n".join(lines).encode()


def cmd_send(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    token = uuid.uuid4().hex[:16]
    host, port = split_hostport(settings.smtp.listen)
    data = canary_message(args.sender, args.to, token)
    try:
        with smtplib.SMTP(timeout=60) as smtp:
            _code, banner = smtp.connect(host if host != "0.0.0.0" else "127.0.0.1", port)
            # The canary proves something only if it went through this relay, not through
            # whatever else answers on that port (aiosmtpd greets with the relay's ident).
            if IDENT.encode() not in banner:
                print(
                    f"relay canary: {settings.smtp.listen} (smtp.listen) answers, but not as "
                    f"consent-relay ({banner.decode('latin-1')[:80]!r}); nothing sent",
                    file=sys.stderr,
                )
                return 2
            smtp.sendmail(args.sender, [args.to], data)
    except (OSError, smtplib.SMTPException) as exc:
        print(f"relay canary: the relay at {settings.smtp.listen} refused or is down: {exc}",
              file=sys.stderr)  # fmt: skip
        return 2
    print(f"canary {token} sent to {args.to} through the relay at {settings.smtp.listen}")
    print("Save the delivered copy (webmail: 'Show original' / 'View source') as a file, then:")
    print(f"  relay canary inspect FILE.eml --config {args.config or settings.source}")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    try:
        raw = Path(args.file).read_bytes()
    except OSError as exc:
        print(f"{args.file}: cannot read: {exc.strerror}", file=sys.stderr)
        return 2
    message = parse_message(raw)
    subject = message.header("Subject") or ""
    if "consent-relay canary" not in subject:
        print(f"{args.file}: not a canary (subject {subject!r})", file=sys.stderr)
        return 2
    context = build_context(settings)
    rcpts = tuple(a for a in (message.header("To") or "").replace("<", " ").replace(">", " ")
                  .split() if "@" in a)  # fmt: skip
    detection = detect(message, context.detection, rcpts)
    ours = settings.web.public_url.rstrip("/") + "/"
    added = [c for c in detection.candidates if not c.url.startswith(ours)]
    relay_links = [c for c in detection.candidates if c.url.startswith(ours)]
    clicks = [link for link in detection.links if link.rule]
    for c in added:
        print(f"ADDED DOWNSTREAM  {c.element.value:<12} rule={c.rule} vendor={c.vendor}  {c.url}")
    for link in clicks:
        print(f"LINK REWRITTEN    rule={link.rule}  {link.url}")
    for c in relay_links:
        print(f"relay's own       {c.element.value:<12} {c.url}")
    if not added and not clicks:
        print(f"{args.file}: no tracker added downstream of the relay")
        return 0
    print(f"{args.file}: {len(added)} tracker(s) and {len(clicks)} tracked link(s) were added "
          "after the relay: check [upstream] profile and the ESP's tracking settings")  # fmt: skip
    return 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    canary = subparsers.add_parser("canary", help="check that nothing downstream adds trackers")
    verbs = canary.add_subparsers(dest="verb", required=True, metavar="VERB")
    send = verbs.add_parser("send", help="send a tracker-free canary through the relay")
    send.add_argument("--config", metavar="FILE", help="TOML settings")
    send.add_argument("--to", required=True, metavar="ADDR", help="a mailbox you can read")
    send.add_argument("--sender", default="canary@relay.invalid", metavar="ADDR")
    send.set_defaults(func=cmd_send)
    inspect = verbs.add_parser("inspect", help="report trackers added to a delivered canary")
    inspect.add_argument("file", metavar="DELIVERED.eml")
    inspect.add_argument("--config", metavar="FILE", help="TOML settings")
    inspect.set_defaults(func=cmd_inspect)


__all__ = ["register"]
