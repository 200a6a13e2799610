"""``relay inactive --days N``: recipients whose last minimised open is older than N days.

Stage: CLI edge. Input: the settings file, ``--days N``, ``--controller ID`` (optional when
one controller is configured). Output: one line per recipient
(``recipient key``, ``last open day`` as YYYY-MM-DD, address when the relay still knows it),
oldest first, or one JSON object per line with ``--json``; exit status 0, or 2 when the store
cannot be reached or the arguments are wrong.

Rule 1: the only data read is what the deliverability minimisation keeps (SPEC section 2):
        the day of the last open per recipient key, overwritten at each open. A recipient
        who never opened a minimised email has no entry and is not listed: absence of data
        is not inactivity.
Rule 2: addresses come from the web side's rkey -> address records (kept while links in sent
        emails may still be used); a recipient whose record expired is listed by key only.
Rule 4: the days are kept in buckets (``Keys.last_open_bucket``, one hash slot each on a Redis
        Cluster); each bucket is read by its name in one command, so the answer is the same on
        one server and on a cluster, also while a slot migrates. Rows are ordered by day, then
        recipient key, across the buckets.
Rule 5: the days are each controller's own (``link_store`` Rule 7): the list is the one of the
        controller named, never of another's opens.
Rule 3: image proxies (Gmail's image proxy, Apple Mail Privacy Protection, security scanners)
        fetch images without a human opening the email; a recent day therefore does not prove
        a reader, and list cleaning should use a generous N.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime, timedelta

from relay.core.controllers import build_controllers
from relay.errors import RelayError
from relay.settings import load_settings
from relay.store.fanout import sync_get_many
from relay.store.link_store import day_number, member_owner
from relay.store.redis_conn import resolve, sync_client
from relay.store.redis_keys import Keys

_EPOCH = date(1970, 1, 1)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    inactive = subparsers.add_parser(
        "inactive", help="recipients whose last open day is older than N days"
    )
    inactive.add_argument("--config", metavar="FILE", help="TOML settings")
    inactive.add_argument("--days", type=int, required=True, metavar="N")
    inactive.add_argument("--json", action="store_true", help="one JSON object per line")
    inactive.add_argument(
        "--controller", metavar="ID", help="the controller ([controllers.<id>]); optional if one"
    )
    inactive.set_defaults(func=cmd_inactive)


def _text(value: object) -> str | None:
    if value is None:
        return None
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def inactive_since(
    url: str, keys: Keys, days: int, now: datetime, timeout: float = 2.0, scope: str = ""
) -> list[tuple[str, date, str | None]]:
    """(rkey, last open day, address or None) for last opens before ``today - days`` of the
    controller whose key scope is ``scope`` (Rule 5)."""
    from relay.settings import RedisSettings

    client = sync_client(url, RedisSettings(url=url, timeout=timeout))
    try:
        cutoff = day_number(now) - days  # the day N days ago is not yet "older than N days"
        pipe = client.pipeline(transaction=False)
        for bucket in keys.last_open_buckets():
            pipe.zrangebyscore(keys.last_open_bucket(bucket), "-inf", f"({cutoff}", withscores=True)
        # With scores, each item is a (member, score) pair; the stubs cover every reply shape.
        rows = []
        for found in pipe.execute():
            for item in found:
                owner, rkey = member_owner(_text(item[0]) or "")
                if owner == scope:
                    rows.append((rkey, float(item[1])))
        rows.sort(key=lambda row: (row[1], row[0]))
        rkeys = [member for member, _score in rows]
        addresses = sync_get_many(client, [keys.recipient_address(r) for r in rkeys])
    finally:
        client.close()
    return [
        (rkey, _EPOCH + timedelta(days=int(row[1])), _text(address))
        for rkey, row, address in zip(rkeys, rows, addresses, strict=True)
    ]


def cmd_inactive(args: argparse.Namespace) -> int:
    if args.days < 0:
        print("relay inactive: --days must be 0 or more", file=sys.stderr)
        return 2
    settings = load_settings(args.config)
    try:
        owner = build_controllers(settings.controllers).resolve(args.controller)
        url, server = resolve(settings.redis)
    except (RelayError, ValueError) as exc:
        print(f"relay inactive: {exc}", file=sys.stderr)
        return 2
    try:
        rows = inactive_since(
            url, Keys(settings.redis.prefix), args.days, datetime.now(UTC),
            settings.redis.timeout, owner.scope,
        )  # fmt: skip
    except Exception as exc:  # any Redis failure is one line, never a traceback
        print(f"relay inactive: cannot read the store: {exc}", file=sys.stderr)
        return 2
    finally:
        if server is not None:
            server.stop()
    for rkey, day, address in rows:
        if args.json:
            print(json.dumps({"recipient_key": rkey, "last_open": day.isoformat(),
                              "address": address}))  # fmt: skip
        else:
            print(f"{rkey}\t{day.isoformat()}\t{address or ''}")
    return 0
