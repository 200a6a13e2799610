"""Policy loading: the merged rule set -> one frozen ``Policy`` (see ``relay.core.policy``).

Stage: loading, once per start or SIGHUP reload. Input: a ``RuleSet`` (and optionally the
settings, whose ``[consent]`` and ``[rules]`` keys are deployment choices). Output: ``Policy``.
The rules this loading enforces (catch-all last, basis per action, file:line errors) are
written in ``relay.core.policy``'s docstring; this module does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from enum import StrEnum
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from relay.core.classify_rules import load_categories, load_classification
from relay.core.policy import (
    READING,
    STRIPPING,
    ConsentCondition,
    Pack,
    Policy,
    Row,
    RowAction,
    norm_domain,
)
from relay.core.policy_check import check_no_consent_actions
from relay.errors import RulesError
from relay.model import Basis, Category, Purpose
from relay.rulefiles import RuleEntry, RuleSet
from relay.settings import ConsentSettings, RulesSettings, Settings

E = TypeVar("E", bound=StrEnum)
# Why each reading action needs a basis (policy Rule 3), for the error message.
_READS = {
    RowAction.KEEP: "keeps the tracker",
    RowAction.GATEWAY: "keeps the tracker behind the gateway",
    RowAction.STRIP_PARAMS: "still sends the request to the tracker (recommendation 2.1: the "
    "request itself is the read operation; use neutralise or remove)",
    RowAction.MINIMISE: "still counts the opening on the relay's day-only counter",
}
_ROW_KEYS = ("pack", "category", "requested", "purpose", "consent", "action", "basis", "before")


def load_policy(rules: RuleSet, settings: Settings | None = None) -> Policy:
    """Validate and freeze the policy; raise ``RulesError`` naming file:line:key."""
    consent = settings.consent if settings is not None else ConsentSettings()
    deploy = settings.rules if settings is not None else RulesSettings()
    packs = _load_packs(rules)
    by_sender = _domain_table(rules, "by_sender_domain", packs)
    for domain, pack in deploy.packs_by_domain.items():
        if pack not in packs:
            raise RulesError(
                f"settings [rules] packs_by_domain {domain!r}: no pack {pack!r} "
                f"(packs: {', '.join(sorted(packs))})"
            )
        by_sender[norm_domain(domain)] = pack
    if deploy.pack not in packs:
        raise RulesError(
            f"settings [rules] pack: no pack {deploy.pack!r} (packs: {', '.join(sorted(packs))})"
        )
    categories = load_categories(rules)
    check_no_consent_actions(rules, packs, categories[1])
    legacy = _legacy(rules)
    return Policy(
        digest=rules.digest,
        packs=packs,
        default_pack=deploy.pack,
        packs_by_sender=by_sender,
        packs_by_recipient=_domain_table(rules, "by_recipient_domain", packs),
        default_category=categories[0],
        requested_categories=categories[1],
        list_headers_category=categories[2],
        publication_date=legacy[0],
        end_of_grace=legacy[1],
        legacy_timezone=legacy[2],
        reask_days=_reask_days(rules),
        lifetime_days=consent.lifetime_days,
        renew_on_notice_change=consent.renew_on_notice_change,
        notice_version=consent.notice_version,
        classification=load_classification(rules),
    )


def _plain(rules: RuleSet, name: str, allowed: Sequence[str]) -> Mapping[str, Any]:
    """A plain table, with unknown keys refused."""
    table: Mapping[str, Any] = rules.tables.get(name, {})
    for key in table:
        if key not in allowed:
            raise RulesError(
                f"{rules.where(f'{name}.{key}')}: [{name}] key {key!r}: unknown key "
                f"(allowed: {', '.join(allowed)})"
            )
    return table


def _load_packs(rules: RuleSet) -> dict[str, Pack]:
    declared = _plain_packs(rules)
    rows_by_pack: dict[str, list[Row]] = {name: [] for name in declared}
    befores: list[tuple[RuleEntry, Row]] = []
    for entry in rules.of("decision", include_disabled=True):
        row = _row(entry, declared)
        if not entry.enabled:
            continue
        if "before" in entry.data:
            befores.append((entry, row))
        else:
            rows_by_pack[row.pack].append(row)
    for entry, row in befores:
        _place_before(entry, row, rows_by_pack[row.pack])
    packs: dict[str, Pack] = {}
    for name, rows in rows_by_pack.items():
        _check_catch_all(rules, name, rows)
        packs[name] = Pack(name, declared[name], tuple(rows))
    return packs


def _plain_packs(rules: RuleSet) -> dict[str, str]:
    declared: dict[str, str] = {}
    for name, table in rules.tables.get("pack", {}).items():
        where = rules.where(f"pack.{name}")
        if not isinstance(table, dict):
            raise RulesError(f"{where}: [pack.{name}]: must be a table with a description")
        for key in table:
            if key != "description":
                raise RulesError(
                    f"{rules.where(f'pack.{name}.{key}')}: [pack.{name}] key {key!r}: "
                    "unknown key (allowed: description)"
                )
        description = table.get("description")
        if not isinstance(description, str) or not description:
            raise RulesError(f"{where}: [pack.{name}]: missing required key 'description'")
        declared[name] = description
    if not declared:
        raise RulesError(f"{', '.join(rules.files) or '<rules>'}: no [pack.<name>] defined")
    return declared


def _place_before(entry: RuleEntry, row: Row, rows: list[Row]) -> None:
    target = entry.data["before"]
    for index, other in enumerate(rows):
        if other.id == target:
            rows.insert(index, row)
            return
    raise entry.error("before", f"no enabled row {target!r} in pack {row.pack!r}")


def _check_catch_all(rules: RuleSet, pack: str, rows: list[Row]) -> None:
    if not rows:
        raise RulesError(f"{rules.where(f'pack.{pack}')}: pack {pack!r} has no enabled row")
    for index, row in enumerate(rows):
        if row.catch_all and index != len(rows) - 1:
            after = rows[index + 1]
            raise RulesError(
                f"{after.where}: [[decision]] {after.id!r}: comes after the catch-all row "
                f"{row.id!r} of pack {pack!r} and can never match "
                f"(add before = {row.id!r} to place it)"
            )
    last = rows[-1]
    if not last.catch_all or last.action not in STRIPPING or last.basis is not Basis.NONE:
        raise RulesError(
            f"{last.where}: [[decision]] {last.id!r}: the last row of pack {pack!r} must be a "
            "catch-all (no category, requested, purpose or consent condition) with a stripping "
            'action (no_consent, strip, neutralise, remove) and basis = "none"'
        )


def _row(entry: RuleEntry, packs: Mapping[str, str]) -> Row:
    entry.check(_ROW_KEYS, required=("pack", "action", "basis"))
    pack = entry.data["pack"]
    if pack not in packs:
        raise entry.error("pack", f"no pack {pack!r} (declared: {', '.join(sorted(packs))})")
    requested = entry.data.get("requested")
    if requested is not None and not isinstance(requested, bool):
        raise entry.error("requested", "must be true or false")
    before = entry.data.get("before")
    if before is not None and not isinstance(before, str):
        raise entry.error("before", "must be the id of a row, in quotes")
    row = Row(
        id=entry.id,
        description=str(entry.data["description"]),
        pack=pack,
        categories=_enum_list(entry, "category", Category),
        requested=requested,
        purposes=_enum_list(entry, "purpose", Purpose),
        consent=_enum_value(entry, "consent", ConsentCondition, ConsentCondition.ANY),
        action=_enum_value(entry, "action", RowAction, RowAction.NO_CONSENT),
        basis=_enum_value(entry, "basis", Basis, Basis.NONE),
        where=entry.where(),
    )
    _check_basis(entry, row)
    return row


def _check_basis(entry: RuleEntry, row: Row) -> None:
    if row.action in READING and row.basis is Basis.NONE:
        raise entry.error(
            "basis", f"action {row.action.value!r} {_READS[row.action]}: needs a basis"
        )
    if row.basis is Basis.CONSENT and row.consent is not ConsentCondition.GRANTED:
        raise entry.error("basis", 'basis "consent" needs the condition consent = "granted"')
    if row.basis is Basis.LEGACY and row.consent is not ConsentCondition.LEGACY:
        raise entry.error("basis", 'basis "legacy" needs the condition consent = "legacy"')
    if row.action in STRIPPING and row.basis is not Basis.NONE:
        raise entry.error("basis", f'action {row.action.value!r} strips: basis must be "none"')


def _enum_value(entry: RuleEntry, key: str, enum: type[E], default: E) -> E:
    raw = entry.data.get(key, default.value)
    try:
        return enum(raw)
    except ValueError:
        choices = ", ".join(e.value for e in enum)
        raise entry.error(key, f"{raw!r} is not one of: {choices}") from None


def _enum_list(entry: RuleEntry, key: str, enum: type[E]) -> frozenset[E] | None:
    if key not in entry.data:
        return None
    raw = entry.data[key]
    if not isinstance(raw, list) or not raw:
        raise entry.error(key, f'must be a non-empty list such as ["{next(iter(enum)).value}"]')
    values: set[E] = set()
    for item in raw:
        try:
            values.add(enum(item))
        except ValueError:
            choices = ", ".join(e.value for e in enum)
            raise entry.error(key, f"{item!r} is not one of: {choices}") from None
    return frozenset(values)


def _domain_table(rules: RuleSet, name: str, packs: Mapping[str, Pack]) -> dict[str, str]:
    _plain(rules, "packs", ("by_sender_domain", "by_recipient_domain"))
    table = rules.tables.get("packs", {}).get(name, {})
    where = rules.where(f"packs.{name}")
    if not isinstance(table, dict):
        raise RulesError(f"{where}: [packs.{name}]: must be a table of domain = pack")
    result: dict[str, str] = {}
    for domain, pack in table.items():
        if pack not in packs:
            raise RulesError(
                f"{rules.where(f'packs.{name}.{domain}')}: [packs.{name}] key {domain!r}: "
                f"no pack {pack!r} (packs: {', '.join(sorted(packs))})"
            )
        result[norm_domain(domain)] = pack
    return result


def _legacy(rules: RuleSet) -> tuple[date, date, str]:
    table = _plain(rules, "legacy", ("publication_date", "end_of_grace", "timezone"))
    dates: list[date] = []
    for key, default in (
        ("publication_date", date(2026, 4, 14)),
        ("end_of_grace", date(2026, 7, 14)),
    ):
        value = table.get(key, default)
        # TOML has a date type (2026-04-14, unquoted); a datetime is refused as ambiguous.
        if not isinstance(value, date) or hasattr(value, "hour"):
            raise RulesError(
                f"{rules.where(f'legacy.{key}')}: [legacy] key {key!r}: must be a "
                f"date written like 2026-04-14 (no quotes), not {value!r}"
            )
        dates.append(value)
    if dates[1] < dates[0]:
        raise RulesError(
            f"{rules.where('legacy.end_of_grace')}: [legacy] key 'end_of_grace': "
            "is before publication_date"
        )
    zone = table.get("timezone", "Europe/Paris")
    try:
        ZoneInfo(str(zone))
    except (ZoneInfoNotFoundError, ValueError):
        raise RulesError(
            f"{rules.where('legacy.timezone')}: [legacy] key 'timezone': "
            f'unknown time zone {zone!r} (e.g. "Europe/Paris", "UTC")'
        ) from None
    return dates[0], dates[1], str(zone)


def _reask_days(rules: RuleSet) -> int:
    days = _plain(rules, "reask", ("days",)).get("days", 183)
    if isinstance(days, bool) or not isinstance(days, int) or days < 0:
        raise RulesError(
            f"{rules.where('reask.days')}: [reask] key 'days': "
            f"must be a whole number of days, not {days!r}"
        )
    return days
