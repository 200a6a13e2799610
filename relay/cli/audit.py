"""``relay audit show|search|export|report``: the auditors' view of the decision log (SPEC 3);
``recount`` is ``audit_recount``.

Stage: command line (edge). Input: arguments and the configured Redis. Output: decision records
printed for people (with the basis of every tracker decision), as JSON, or exported as JSON
Lines / CSV.

Rule 1: times are ISO-8601; a date alone means midnight UTC, a time without an offset is UTC.
        Ranges are half-open ``[--since, --until)``, so consecutive exports never overlap.
Rule 2: a bad time or format is one line on stderr and exit status 2; ``show`` of an unknown
        message id is exit status 1 (the check found nothing), never a traceback.
Rule 3: with ``[redis] url = "embedded"`` the command uses the relay's running server when one
        answers, else starts one on the same data for its own duration (``redis_conn.resolve``).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime, timedelta
from typing import IO

from relay.cli import audit_recount
from relay.cli.audit_session import PROG, run_with_log
from relay.cli.export_file import output_file
from relay.store.audit import AuditLog
from relay.store.audit_record import DecisionRecord, canonical_json, iso


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = subparsers.add_parser(
        "audit", help="decision records: show, search, export, report, recount"
    )
    audit.add_argument("--config", metavar="FILE", help="TOML settings")
    verbs = audit.add_subparsers(dest="audit_command", required=True, metavar="VERB")
    # --config is accepted before or after the verb; SUPPRESS keeps the earlier value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="settings")

    show = verbs.add_parser("show", parents=[common], help="decisions for one message")
    show.add_argument("--message-id", required=True, metavar="ID")
    show.add_argument("--json", action="store_true", help="one JSON object (SPEC section 3)")
    show.set_defaults(func=cmd_show)

    search = verbs.add_parser("search", parents=[common], help="records by recipient and time")
    search.add_argument("--rcpt", metavar="ADDR", help="address or recipient key")
    search.add_argument("--since", metavar="T", help="ISO-8601 time, included")
    search.add_argument("--until", metavar="T", help="ISO-8601 time, excluded")
    search.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    search.add_argument("--json", action="store_true", help="one JSON record per line")
    search.set_defaults(func=cmd_search)

    export = verbs.add_parser("export", parents=[common], help="JSON Lines or CSV, reproducible")
    export.add_argument("--since", required=True, metavar="T", help="ISO-8601 time, included")
    export.add_argument("--until", required=True, metavar="T", help="ISO-8601 time, excluded")
    export.add_argument("--format", required=True, choices=("jsonl", "csv"))
    export.add_argument("--out", metavar="FILE", help="write here (default: standard output)")
    export.add_argument("--no-progress", action="store_true", help="no progress bar")
    export.set_defaults(func=cmd_export)

    report = verbs.add_parser("report", parents=[common], help="the auditors' report, HTML")
    report.add_argument("--since", required=True, metavar="T", help="first UTC day (included)")
    report.add_argument("--until", required=True, metavar="T", help="UTC time, excluded")
    report.add_argument("--out", required=True, metavar="FILE.html", help="write here")
    report.add_argument("--controller", metavar="ID", help="only this controller's mail")
    report.add_argument("--full-addresses", action="store_true", help="do not mask addresses")
    report.add_argument("--no-progress", action="store_true", help="no progress bar")
    report.set_defaults(func=cmd_report)

    audit_recount.register(verbs, common)


def parse_time(text: str, flag: str) -> datetime:
    """Rule 1; a ValueError names the flag."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"{flag}: not an ISO-8601 time: {text!r} (e.g. 2026-04-14 or 2026-04-14T09:30:00Z)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def required_range(args: argparse.Namespace) -> tuple[datetime, datetime] | None:
    """``[--since, --until)`` of a command that needs both, or None once the reason is printed."""
    try:
        since = parse_time(args.since, "--since")
        until = parse_time(args.until, "--until")
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return None
    if until <= since:
        print(f"{PROG}: --until must be later than --since", file=sys.stderr)
        return None
    return since, until


# ---------------------------------------------------------------------------------------------
# show


def print_record(record: DecisionRecord, out: IO[str]) -> None:
    """One recipient's decisions, with the basis of each (issue 4: the basis must be visible)."""
    footer = "withdrawal link added to the footer" if record.footer_injected else "no footer link"
    lines = [
        f"  {record.rcpt}  (recipient key {record.recipient_key})",
        f"    category {record.category} ({record.category_reason}); pack {record.pack or '-'}",
        f"    received {iso(record.received_at)}, decided {iso(record.decided_at)}, "
        f"relay id {record.relay_id}",
        f"    envelope sender <{record.mail_from}>, From: {record.header_from or '-'}",
        f"    upstream reply: {record.upstream_reply or '-'}",
        f"    rules {record.rules_digest or '-'}, relay {record.relay_version}; {footer}",
        "    consent events relied on: " + (", ".join(record.consent_event_ids) or "none"),
    ]
    if not record.trackers:
        lines.append("    no tracker found")
    for number, t in enumerate(record.trackers, start=1):
        lines.append(
            f"    {number}. {t.action:<12} basis={t.basis:<7} purpose={t.purpose} "
            f"rule={t.rule} policy={t.policy_rule} element={t.element}"
            + (f" vendor={t.vendor}" if t.vendor else "")
        )
        lines.append(f"       {t.url}")
        if t.consent_event_ids:
            lines.append(f"       consent events: {', '.join(t.consent_event_ids)}")
    out.write("\n".join(lines) + "\n")


def cmd_show(args: argparse.Namespace) -> int:
    async def body(audit: AuditLog) -> int:
        records = await audit.by_message(args.message_id)
        if not records:
            print(f"{PROG}: no decision record for message {args.message_id}", file=sys.stderr)
            return 1
        if args.json:
            recipients = [r.to_json() for r in records]
            data = {"message_id": records[0].message_id, "recipients": recipients}
            print(json.dumps(data, ensure_ascii=False, sort_keys=True))
            return 0
        print(f"message {records[0].message_id}: {len(records)} recipient record(s)")
        for record in records:
            print_record(record, sys.stdout)
        return 0

    return run_with_log(args, body)


# ---------------------------------------------------------------------------------------------
# search


def _summary(record: DecisionRecord) -> str:
    actions: dict[str, int] = {}
    for t in record.trackers:
        key = f"{t.action}/{t.basis}"
        actions[key] = actions.get(key, 0) + 1
    done = ", ".join(f"{n}x {k}" for k, n in sorted(actions.items())) or "no tracker"
    return (
        f"{iso(record.decided_at)}  {record.rcpt}  {record.message_id}  {record.category}  "
        f"[{done}]  {record.upstream_reply[:40]}"
    )


def cmd_search(args: argparse.Namespace) -> int:
    try:
        since = parse_time(args.since, "--since") if args.since else None
        until = parse_time(args.until, "--until") if args.until else None
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if args.limit < 1:
        print(f"{PROG}: --limit must be at least 1", file=sys.stderr)
        return 2

    async def body(audit: AuditLog) -> int:
        records = await audit.search(args.rcpt, since, until, args.limit)
        for record in records:
            print(canonical_json(record.to_json()) if args.json else _summary(record))
        if len(records) == args.limit:
            print(f"{PROG}: stopped at --limit {args.limit}; narrow the range", file=sys.stderr)
        return 0

    return run_with_log(args, body)


# ---------------------------------------------------------------------------------------------
# export


def cmd_export(args: argparse.Namespace) -> int:
    times = required_range(args)
    if times is None:
        return 2
    since, until = times

    async def body(audit: AuditLog) -> int:
        # Written beside and renamed, or to standard output as UTF-8 (``export_file``).
        with output_file(args.out) as out:
            count = await audit.export(since, until, args.format, out, not args.no_progress)
        print(f"{PROG}: exported {count} record(s)", file=sys.stderr)
        return 0

    return run_with_log(args, body)


def cmd_report(args: argparse.Namespace) -> int:
    """The report covers whole UTC days: ``--since`` rounded down, ``--until`` up (said on
    stderr when that widens the range), so that its per-day counts are exact."""
    from relay.store.audit_query import AuditReader
    from relay.web.audit.params import DayRange
    from relay.web.audit.report import default_templates, write_report

    times = required_range(args)
    if times is None:
        return 2
    since, until = times
    last = (until - timedelta(microseconds=1)).date()
    span = DayRange(since.date(), last)
    if span.since != since or span.until != until:
        print(f"{PROG}: the report covers whole UTC days: {span.first} to {last}", file=sys.stderr)

    async def body(audit: AuditLog) -> int:
        from tqdm import tqdm

        with (
            tqdm(unit=" records", file=sys.stderr, disable=args.no_progress) as bar,
            output_file(args.out) as out,
        ):
            facts = await write_report(
                AuditReader(audit), default_templates(), span, args.controller, out,
                full_addresses=args.full_addresses, on_progress=bar.update,
            )  # fmt: skip
        print(
            f"{PROG}: report of {facts.summary.records} record(s), {facts.listed} tracked "
            f"without consent, written to {args.out}",
            file=sys.stderr,
        )
        return 0

    return run_with_log(args, body)


__all__ = ["parse_time", "print_record", "register"]
