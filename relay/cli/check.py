"""``relay check``: the dry run. Decisions per recipient, and the rewritten messages with --out.

Nothing is sent and nothing is recorded: consent is read from the configured Redis when one
answers (otherwise every recipient counts as having no events), the pure core decides, and the
result is printed (one JSON object per message with ``--json``). The consent read is that of
the message's controller (its From domain), or of ``--controller ID``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from relay.core.filtering import FilterResult, filter_message
from relay.core.recipients import recipient_key
from relay.errors import RelayError
from relay.model import Category, ConsentState, Envelope
from relay.settings import Settings, load_settings


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    check = sub.add_parser("check", parents=[common], help="dry run: decisions per recipient")
    check.add_argument("messages", nargs="+", metavar="MESSAGE.eml")
    check.add_argument("--rcpt", action="append", default=[], metavar="ADDR")
    check.add_argument("--category", choices=[c.value for c in Category])
    check.add_argument("--json", action="store_true", help="one JSON object per message")
    check.add_argument("--out", metavar="DIR", help="write each recipient group's message here")
    check.add_argument(
        "--controller", metavar="ID", help="decide for this controller (default: by From domain)"
    )
    check.set_defaults(func=cmd_check)


def _recipients(raw: bytes, explicit: Sequence[str]) -> tuple[str, ...]:
    if explicit:
        return tuple(explicit)
    from email.parser import BytesHeaderParser
    from email.utils import getaddresses

    headers = BytesHeaderParser().parsebytes(raw)
    found = getaddresses(headers.get_all("To", []) + headers.get_all("Cc", []))
    return tuple(addr for _name, addr in found if "@" in addr)


def _consent_states(
    settings: Settings, rcpts: Sequence[str], controller: str
) -> dict[str, ConsentState]:
    """Consent from the configured Redis when one answers; otherwise "no events recorded"."""
    from relay.core.controllers import build_controllers
    from relay.store.consent import RedisConsentStore
    from relay.store.redis_conn import async_client, running_url
    from relay.store.redis_keys import Keys

    url = running_url(settings.redis)
    if url is None:
        return {}

    async def read() -> dict[str, ConsentState]:
        client = async_client(url, settings.redis)
        try:
            await client.ping()
        except Exception:
            await client.aclose()
            return {}
        store = RedisConsentStore(
            client,
            Keys(settings.redis.prefix),
            settings.address_key,
            settings.consent,
            timeout=settings.redis.timeout,
            controllers=build_controllers(settings.controllers),
        )
        try:
            return await store.states(rcpts, datetime.now(UTC), controller)
        finally:
            await client.aclose()

    return asyncio.run(read())


def result_json(path: str, result: FilterResult) -> dict[str, object]:
    recipients = []
    for plan in result.plans:
        trackers = []
        for decision in plan.decisions:
            c = result.candidates[decision.candidate_id]
            trackers.append(
                {
                    "url": c.url,
                    "element": c.element.value,
                    "rule": c.rule,
                    "detected_by": c.detected_by,
                    "vendor": c.vendor,
                    "purpose": c.purpose.value,
                    "basis": decision.basis.value,
                    "action": decision.action.value,
                    "policy_rule": decision.policy_rule,
                }
            )
        recipients.append(
            {
                "rcpt": plan.rcpt,
                "category": result.category.value,
                "category_reason": result.category_reason,
                "pack": result.packs.get(plan.rcpt, ""),
                "footer_injected": plan.footer,
                "trackers": trackers,
                # Why this recipient's copy would not be delivered (a signed part), if so.
                **(
                    {"withheld": result.withheld[plan.rcpt]} if plan.rcpt in result.withheld else {}
                ),
            }
        )
    return {
        "file": path,
        "message_id": result.message_id,
        "category": result.category.value,
        "category_reason": result.category_reason,
        "rules_digest": result.rules_digest,
        "controller": result.controller.id if result.controller else None,
        "recipients": recipients,
        "links": [{"url": link.url, "rule": link.rule} for link in result.links],
        "defects": list(result.defects),
        "unfinished_parts": list(result.unfinished_parts),
    }


def _print_human(data: dict[str, object]) -> None:
    print(f"{data['file']}: {data['message_id']}")
    print(
        f"  category {data['category']} ({data['category_reason']}), rules {data['rules_digest']}"
    )
    controller = data["controller"] or "none (no consent-based tracker: no controller's domain)"
    print(f"  controller {controller}")
    for rcpt in data["recipients"]:  # type: ignore[attr-defined]
        footer = "footer link added" if rcpt["footer_injected"] else "no footer link"
        print(f"  {rcpt['rcpt']}  [{rcpt['pack']}; {footer}]")
        if "withheld" in rcpt:
            print(f"    NOT DELIVERED: {rcpt['withheld']}")
        if not rcpt["trackers"]:
            print("    no tracker found")
        for t in rcpt["trackers"]:
            print(
                f"    {t['action']:<12} {t['purpose']:<24} basis={t['basis']:<8} "
                f"rule={t['rule']} [{t['detected_by']}] ({t['policy_rule']})"
            )
            print(f"      {t['url'][:110]}")


def cmd_check(args: argparse.Namespace) -> int:
    from relay.context import build_context

    settings = load_settings(args.config)
    if not settings.secrets.link_key:
        # Links are only previewed here; a throwaway key keeps `check` usable without secrets.
        secrets = dataclasses.replace(settings.secrets, link_key="relay-check-preview")
        settings = dataclasses.replace(settings, secrets=secrets)
    context = dataclasses.replace(build_context(settings), report_links=True)
    if args.controller and context.controllers.get(args.controller) is None:
        known = ", ".join(context.controllers.ids)
        print(f"--controller: unknown controller {args.controller!r} (known: {known})",
              file=sys.stderr)  # fmt: skip
        return 2
    status = 0
    for path in args.messages:
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            print(f"{path}: cannot read: {exc.strerror}", file=sys.stderr)
            status = 2
            continue
        if args.category:
            raw = f"X-Relay-Category: {args.category}\r\n".encode() + raw
        rcpts = _recipients(raw, args.rcpt)
        if not rcpts:
            print(f"{path}: no recipient: give --rcpt or a To/Cc header", file=sys.stderr)
            status = 2
            continue
        envelope = Envelope(mail_from="", rcpt_tos=rcpts)
        owner = context.controllers.resolve(args.controller) if args.controller else None
        owner = owner or context.controllers.for_message(raw, "")
        states = _consent_states(settings, rcpts, owner.id) if owner else {}
        for rcpt in rcpts:
            states.setdefault(rcpt, ConsentState(recipient_key(rcpt, settings.address_key)))
        try:
            result = filter_message(
                context,
                raw,
                envelope,
                states,
                datetime.now(UTC),
                args.controller,
                clock=time.process_time,
            )
        except RelayError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            status = 2
            continue
        data = result_json(path, result)
        if args.json:
            print(json.dumps(data, ensure_ascii=False))
        else:
            _print_human(data)
        if args.out:
            _write_groups(Path(args.out), Path(path).stem, result)
    return status


def _write_groups(out: Path, stem: str, result: FilterResult) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for number, group in enumerate(result.groups):
        (out / f"{stem}.{number}.eml").write_bytes(group.data)
        (out / f"{stem}.{number}.rcpts").write_text("\n".join(group.rcpts) + "\n")
