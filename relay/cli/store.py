"""``relay store migrate``: move data an older relay wrote to today's key names.

Stage: CLI edge. Input: the settings file. Output: one line per kind of data moved, or one line
naming what is wrong; exit 0, or 2 when the store cannot be reached or is a cluster.

Rule 1: run with every relay stopped (``relay serve`` refuses to start while old keys remain,
        so that recipients' consent and the audit trail are never silently out of sight).
Rule 2: idempotent and resumable (``relay.store.layout_migrate``): run it again after an
        interruption; a second run on migrated data moves nothing.
"""

from __future__ import annotations

import argparse
import sys

from relay.errors import RelayError
from relay.settings import load_settings
from relay.settings_redis import is_cluster_url
from relay.store.layout_migrate import migrate
from relay.store.redis_conn import resolve, sync_client

PROG = "relay store"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    store = subparsers.add_parser("store", help="the Redis data: migrate an older key layout")
    verbs = store.add_subparsers(dest="store_command", required=True, metavar="VERB")
    run = verbs.add_parser("migrate", help="move data of a relay before hash tags to today's keys")
    run.add_argument("--config", metavar="FILE", help="TOML settings")
    run.set_defaults(func=cmd_migrate)


def cmd_migrate(args: argparse.Namespace) -> int:
    try:
        settings = load_settings(args.config)
        if is_cluster_url(settings.redis.url):
            raise RelayError(
                "redis.url: a cluster never held the old layout: migrate on the server that "
                "holds it, then move the data with valkey-cli --cluster import"
            )
        url, server = resolve(settings.redis)
    except RelayError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    client = sync_client(url, settings.redis)
    try:
        report = migrate(client, settings.redis.prefix)  # type: ignore[arg-type]
    except Exception as exc:  # any Redis failure is one line, never a traceback
        print(f"{PROG}: cannot migrate: {exc} (run it again: it goes on where it stopped)",
              file=sys.stderr)  # fmt: skip
        return 2
    finally:
        client.close()
        if server is not None:
            server.stop()
    for line in report.lines():
        print(line)
    return 0
