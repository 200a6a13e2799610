"""``relay audit recount [--from DATE] [--to DATE]``: the per-day counts and the "tracked without
consent" index rebuilt from the decision records (``store/audit_recount``; issue 16).

Stage: command line (edge). Input: UTC dates, included at both ends; without ``--from`` the
day of the oldest stored record, without ``--to`` today. Output: progress on stderr, then one
line saying how many records were read and how many counts and index entries were corrected.

Rule 1: a bad date, or ``--to`` before ``--from``, is one line on stderr and exit status 2.
Rule 2: safe to run while the relay writes, idempotent, one bucket at a time (the store
        module's Rules 2 and 3).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, date, datetime

from relay.cli.audit_session import PROG, run_with_log
from relay.store.audit import AuditLog
from relay.store.audit_counts import EPOCH_DAY, day_number


def register(
    verbs: argparse._SubParsersAction[argparse.ArgumentParser], common: argparse.ArgumentParser
) -> None:
    recount = verbs.add_parser(
        "recount", parents=[common], help="rebuild the per-day counts from the records"
    )
    recount.add_argument("--from", dest="first", metavar="DATE", help="first UTC day (included)")
    recount.add_argument("--to", dest="last", metavar="DATE", help="last UTC day (included)")
    recount.add_argument("--no-progress", action="store_true", help="no progress bar")
    recount.set_defaults(func=cmd_recount)


def parse_day(text: str, flag: str) -> int:
    """A UTC day number; a ValueError names the flag."""
    try:
        return (date.fromisoformat(text.strip()) - EPOCH_DAY).days
    except ValueError:
        raise ValueError(f"{flag}: not a date: {text!r} (e.g. 2026-04-14)") from None


def cmd_recount(args: argparse.Namespace) -> int:
    try:
        first = parse_day(args.first, "--from") if args.first else None
        last = parse_day(args.last, "--to") if args.last else day_number(datetime.now(UTC))
    except ValueError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    if first is not None and last < first:
        print(f"{PROG}: --to must not be before --from", file=sys.stderr)
        return 2

    async def body(audit: AuditLog) -> int:
        from tqdm import tqdm

        from relay.store.audit_recount import first_day_stored, recount

        start = first
        if start is None:
            start = await first_day_stored(audit.client, audit.keys, audit.timeout)
        if start is None or last < start:
            print(f"{PROG}: no record to count", file=sys.stderr)
            return 0
        with tqdm(unit=" records", file=sys.stderr, disable=args.no_progress) as bar:
            report = await recount(
                audit.client, audit.keys, start, last, timeout=audit.timeout,
                on_progress=bar.update,
            )  # fmt: skip
        span = f"{EPOCH_DAY.fromordinal(EPOCH_DAY.toordinal() + start)} to "
        span += str(EPOCH_DAY.fromordinal(EPOCH_DAY.toordinal() + last))
        unreadable = (
            f", {report.unreadable} unreadable entr(ies) left out" if report.unreadable else ""
        )
        print(
            f"{PROG}: {report.records} record(s) of {span} recounted on {len(report.days)} "
            f"day(s); {report.fields_changed} count(s) and {report.index_changed} "
            f"'tracked without consent' entr(ies) corrected{unreadable}",
            file=sys.stderr,
        )
        return 0

    return run_with_log(args, body)
