"""``relay consent record|show|import|verify|export``: the consent store from the command line.

Stage: CLI edge. Input: arguments and the settings file. Output: text (or JSON) on stdout,
problems on stderr, an exit status (0 done, 1 problems found: bad rows or a broken chain,
2 bad usage, bad input or the store could not be reached).

Rule 1: every error a user can cause is one line naming what is wrong, never a traceback.
Rule 2: with ``[redis] url = "embedded"`` the command uses the relay's running server (found
        through ``<data_dir>/server.port``) or starts one on the same data folder for the
        duration of the command (``relay.store.redis_conn.resolve``).
Rule 3: events recorded here are ``actor = admin`` and carry the rules digest. A ``granted``
        or ``informed`` event needs ``--method``, ``--source`` and ``--notice-version``
        (proof before reliance, ``consent_proof`` Rule 6; exit 2 naming what is missing);
        other events default to method ``admin`` and the configured notice version.
Rule 4: every verb reads or writes one controller's consent: ``--controller ID``, which may be
        left out when there is one (``verify`` without it checks every controller's chains).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from relay.context import load_rule_set
from relay.core.controllers import build_controllers
from relay.core.recipients import normalise
from relay.errors import RelayError
from relay.model import ConsentEvent, ConsentState, EventType, Purpose
from relay.settings import Settings, load_settings
from relay.store.consent import RedisConsentStore
from relay.store.consent_import import ImportFileError, import_csv
from relay.store.consent_proof import (
    METHODS,
    check_proof,
    format_time,
    parse_time,
    validate_event,
)
from relay.store.redis_conn import async_client, resolve
from relay.store.redis_keys import Keys


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    consent = subparsers.add_parser("consent", help="record, show, import and verify consent")
    consent.add_argument("--config", metavar="FILE", help="TOML settings")
    verbs = consent.add_subparsers(dest="consent_command", required=True, metavar="VERB")
    # --config is accepted before or after the verb; SUPPRESS keeps the earlier value.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS, help="settings")
    common.add_argument(
        "--controller", metavar="ID", help="the controller ([controllers.<id>]); optional if one"
    )

    record = verbs.add_parser("record", parents=[common], help="append one consent event")
    record.add_argument("address", metavar="ADDR")
    record.add_argument("--event", required=True, choices=[e.value for e in EventType])
    record.add_argument(
        "--purpose", action="append", default=[], choices=[p.value for p in Purpose]
    )
    record.add_argument("--at", metavar="ISO8601", help="when it happened (default: now)")
    record.add_argument("--source", metavar="S", help="where the consent came from (free text)")
    record.add_argument("--evidence", action="append", default=[], metavar="K=V")
    record.add_argument(
        "--method", choices=METHODS, help="how it was given (required for granted/informed)"
    )
    record.add_argument(
        "--notice-version",
        help="notice shown (required for granted/informed; others: the [consent] setting)",
    )
    record.set_defaults(func=cmd_record)

    show = verbs.add_parser("show", parents=[common], help="state per purpose and proofs")
    show.add_argument("address", metavar="ADDR")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func=cmd_show)

    imp = verbs.add_parser("import", parents=[common], help="bulk import from CSV, idempotent")
    imp.add_argument("file", metavar="FILE.csv")
    imp.add_argument("--no-progress", action="store_true", help="no progress bar")
    imp.set_defaults(func=cmd_import)

    verify = verbs.add_parser("verify", parents=[common], help="check the proof hash chains")
    verify.add_argument("address", metavar="ADDR", nargs="?")
    verify.set_defaults(func=cmd_verify)

    export = verbs.add_parser("export", parents=[common], help="every proof, JSON Lines or CSV")
    export.add_argument("--format", required=True, choices=("jsonl", "csv"))
    export.add_argument("--out", metavar="FILE", help="write here (default: standard output)")
    export.add_argument("--no-progress", action="store_true", help="no progress bar")
    export.set_defaults(func=cmd_export)


def _settings(args: argparse.Namespace) -> Settings:
    settings = load_settings(getattr(args, "config", None))
    if not settings.address_key and settings.source == "<defaults>":
        raise RelayError(
            "no configuration: ./config.toml not found and $RELAY_CONFIG unset; run "
            "`relay init` (or `make run`) to create one, or pass --config FILE"
        )
    if not settings.address_key:
        raise RelayError(
            f"{settings.source}: secrets.address_key (or secrets.link_key, or "
            "$RELAY_ADDRESS_KEY) must be set: recipient keys are derived from it"
        )
    return settings


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[RedisConsentStore]:
    # Events recorded here carry the digest of the rules in force, like the relay's own.
    digest = load_rule_set(settings).digest
    url, server = resolve(settings.redis)
    client = async_client(url, settings.redis)
    try:
        # A store that cannot be reached is one clear line (cli.main), not a read that fails
        # closed and reports "no consent" as if that were the state.
        await client.ping()
        yield RedisConsentStore(
            client,
            Keys(settings.redis.prefix),
            settings.address_key,
            settings.consent,
            rules_digest=digest,
            timeout=settings.redis.timeout,
            controllers=build_controllers(settings.controllers),
        )
    finally:
        await client.aclose()
        if server is not None:
            server.stop()


def _run(
    args: argparse.Namespace, body: Callable[[Settings, RedisConsentStore], Awaitable[int]]
) -> int:
    """Settings, store, body; user errors become one line on stderr and exit status 2."""
    try:
        settings = _settings(args)

        async def main() -> int:
            async with open_store(settings) as store:
                return await body(settings, store)

        return asyncio.run(main())
    except (RelayError, ValueError, OSError) as exc:
        print(f"relay consent: {exc}", file=sys.stderr)
        return 2


def _evidence(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--evidence: expected K=V, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


# The proof fields (consent_proof Rule 6) as this command's options.
_PROOF_OPTIONS = {"method": "--method", "source": "--source", "notice.version": "--notice-version"}


def cmd_record(args: argparse.Namespace) -> int:
    async def body(settings: Settings, store: RedisConsentStore) -> int:
        event = ConsentEvent(
            event=EventType(args.event),
            purposes=tuple(Purpose(p) for p in args.purpose),
            address=args.address,
            occurred_at=parse_time(args.at, "--at") if args.at else datetime.now(UTC),
            actor="admin",
            method=args.method or "admin",
            source={"note": args.source} if args.source else {},
            notice={"version": args.notice_version or settings.consent.notice_version},
            evidence=_evidence(args.evidence),
            controller=args.controller or "",
        )
        # Defaults fill in the other events' proof; a grant or a legacy notice must say it.
        defaulted = [
            field
            for field, given in (("method", args.method), ("notice.version", args.notice_version))
            if not given
        ]
        check_proof(
            validate_event(event, datetime.now(UTC)), defaulted=defaulted, names=_PROOF_OPTIONS
        )
        stored = await store.record(event)
        purposes = ", ".join(p.value for p in stored.purposes) or "-"
        print(
            f"recorded {stored.event.value} ({purposes}) for {stored.address} "
            f"at {format_time(stored.occurred_at)} (controller {stored.controller}): "
            f"event {stored.id}"
        )
        return 0

    return _run(args, body)


def _time(moment: datetime | None) -> str | None:
    return format_time(moment) if moment else None


def state_json(state: ConsentState) -> dict[str, Any]:
    """A ``ConsentState`` as JSON-ready data (also what ``show --json`` prints)."""
    return {
        "recipient_key": state.recipient_key,
        "controller": state.controller,
        "available": state.available,
        "purposes": {
            p.value: {
                "state": pc.state.value if pc.state else None,
                "at": _time(pc.at),
                "event_id": pc.event_id,
                "notice_version": pc.notice_version,
            }
            for p, pc in sorted(state.purposes.items())
        },
        "collected_at": _time(state.collected_at),
        "informed_at": _time(state.informed_at),
        "objected": state.objected,
        "legacy_purposes": [p.value for p in state.legacy_purposes],
        "last_solicited_at": _time(state.last_solicited_at),
        "event_ids": list(state.event_ids),
    }


def _print_state(address: str, data: dict[str, Any]) -> None:
    print(f"recipient {address}  (key {data['recipient_key']}; controller {data['controller']})")
    print(f"  {'purpose':<26}{'state':<11}{'since':<29}event")
    for purpose in Purpose:
        entry = data["purposes"].get(purpose.value)
        if entry is None:
            print(f"  {purpose.value:<26}-")
            continue
        print(f"  {purpose.value:<26}{entry['state']:<11}{entry['at']:<29}{entry['event_id']}")
    legacy = ", ".join(data["legacy_purposes"]) or "-"
    print(
        f"  collected {data['collected_at'] or '-'}; informed {data['informed_at'] or '-'} "
        f"(legacy purposes: {legacy}); objected: {'yes' if data['objected'] else 'no'}; "
        f"last solicited {data['last_solicited_at'] or '-'}"
    )


def _flat(name: str, values: dict[str, str]) -> str:
    shown = " ".join(f"{k}={v}" for k, v in values.items() if v)
    return f" {name}[{shown}]" if shown else ""


def _print_history(records: list[dict[str, Any]]) -> None:
    print(f"history ({len(records)} events, in the order recorded):")
    for r in records:
        purposes = ",".join(r["purposes"]) or "-"
        print(f"  {r['occurred_at']}  {r['event']:<10} {purposes}")
        print(
            f"      actor={r['actor']} method={r['method']} recorded={r['recorded_at']}"
            f"{_flat('source', r['source'])}{_flat('notice', r['notice'])}"
            f"{_flat('evidence', r['evidence'])}"
        )
        print(f"      id={r['id']} hash={r['hash'][:16]} prev={r['prev'][:16] or '-'}")


def cmd_show(args: argparse.Namespace) -> int:
    async def body(settings: Settings, store: RedisConsentStore) -> int:
        now = datetime.now(UTC)
        state = (await store.states([args.address], now, args.controller))[args.address]
        if not state.available:
            raise RelayError("the consent store could not be read (see the log above)")
        raw, _fields = await store.raw_records(state.recipient_key, state.controller)
        # A record from before controllers names none: it belongs to the one holding it.
        records = [{"controller": state.controller, **json.loads(r)} for r in raw]
        data = state_json(state)
        if args.json:
            out = {"address": normalise(args.address), **data, "history": records}
            print(json.dumps(out, indent=2, ensure_ascii=False))
        else:
            _print_state(normalise(args.address), data)
            _print_history(records)
        return 0

    return _run(args, body)


def cmd_import(args: argparse.Namespace) -> int:
    async def body(settings: Settings, store: RedisConsentStore) -> int:
        path = Path(args.file)
        if not path.is_file():
            raise ImportFileError(f"{path}: no such file")
        report = await import_csv(
            store,
            path,
            on_bad=lambda message: tqdm.write(message, file=sys.stderr),
            progress=not args.no_progress,
            controller=args.controller or "",
        )
        print(
            f"{path}: {report.rows} rows: {report.added} events added, "
            f"{report.skipped} already imported, {report.bad} bad rows"
        )
        return 1 if report.bad else 0

    return _run(args, body)


def cmd_verify(args: argparse.Namespace) -> int:
    async def body(settings: Settings, store: RedisConsentStore) -> int:
        report = await store.verify(args.address, args.controller)
        for problem in report.problems:
            print(problem)
        verdict = "chains intact" if report.ok else f"{len(report.problems)} problem(s) found"
        print(f"{report.recipients} recipients, {report.events} events checked: {verdict}")
        return 0 if report.ok else 1

    return _run(args, body)


def cmd_export(args: argparse.Namespace) -> int:
    """``relay consent export``: every proof, with a progress bar on stderr."""
    from relay.cli.export_file import output_file
    from relay.store.consent_export import export_consent

    async def body(settings: Settings, store: RedisConsentStore) -> int:
        # Without --controller: every controller's proofs, one after the other.
        chosen = [store.controller(args.controller)] if args.controller else None
        owners = chosen or list(store.controllers.by_id.values())
        bar = tqdm(unit=" recipients", file=sys.stderr, disable=args.no_progress)
        with bar, output_file(args.out) as out:
            recipients, events = await export_consent(
                store.client, store.keys, settings.address_key, args.format, out,
                [(c.id, c.scope) for c in owners], on_progress=bar.update,
            )  # fmt: skip
        print(
            f"relay consent: exported {events} event(s) of {recipients} recipient(s)",
            file=sys.stderr,
        )
        return 0

    return _run(args, body)
