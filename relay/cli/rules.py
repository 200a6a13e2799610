"""``relay rules check|explain``: validate the rule files, and print the effective policy in
plain words for compliance staff and lawyers; ``reload_rules`` for SIGHUP.

Stage: command-line edge (reads files through ``rulefiles``). Input: the settings (``--config``)
and optionally a rules folder. Output: text on stdout, errors on stderr, an exit status (SPEC
section 3: 0 done, 1 the check found problems, 2 bad usage or input).

Rule 1: ``check`` validates everything the relay would load at start: the decision tables and
        classification (``load_policy``) and tracker detection (``relay.detect.trackers``);
        the first error is printed as ``file:line: ...`` and the exit status is 1.
        Nothing is half-checked silently: when the detection module cannot be imported,
        ``check`` says so.
Rule 2: ``explain`` words each row from its conditions, so the explanation cannot drift from
        what ``decide`` does; the row's own description and file:line follow.
Rule 3: ``reload_rules`` loads and validates everything before returning, so a caller can swap
        the new objects in at once or keep the running ones when it raises ``RulesError``.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from relay.cli.rules_builtin import builtin_lines
from relay.context import validate_rules
from relay.core.policy import ConsentCondition, Pack, Policy, Row, RowAction
from relay.errors import RulesError, SettingsError
from relay.model import Category, Purpose
from relay.rulefiles import RuleSet, load_rules
from relay.settings import Settings, load_settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``relay rules check [DIR]`` and ``relay rules explain``."""
    rules = subparsers.add_parser("rules", help="validate or explain the rule files")
    verbs = rules.add_subparsers(dest="rules_command", required=True, metavar="VERB")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "--config", metavar="FILE", help="TOML settings (default: $RELAY_CONFIG, ./config.toml)"
    )
    config.add_argument(
        "--local", metavar="DIR", help="local overrides folder (default: [rules] local_dir)"
    )
    check = verbs.add_parser(
        "check", parents=[config], help="validate rule files; errors name file and line"
    )
    check.add_argument("dir", nargs="?", metavar="DIR", help="rules folder (default: [rules] dir)")
    check.set_defaults(func=cmd_check)
    explain = verbs.add_parser("explain", parents=[config], help="the effective policy table")
    explain.add_argument("--pack", metavar="NAME", help="only this pack")
    explain.set_defaults(func=cmd_explain)


def _load(args: argparse.Namespace) -> tuple[RuleSet, Policy, Settings]:
    """Settings, then every rule file through every loader (``SettingsError`` is bad input:
    exit 2; ``RulesError``: exit 1)."""
    settings = load_settings(getattr(args, "config", None))
    shipped = getattr(args, "dir", None) or settings.rules.dir
    local = args.local if args.local is not None else settings.rules.local_dir
    valid = validate_rules(settings, load_rules(shipped, local))
    return valid.rules, valid.policy, settings


def cmd_check(args: argparse.Namespace) -> int:
    try:
        rules, policy, _settings = _load(args)
    except SettingsError as exc:
        print(f"relay rules check: {exc}", file=sys.stderr)
        return 2
    except RulesError as exc:
        print(f"{exc}", file=sys.stderr)
        print("rules check: FAILED", file=sys.stderr)
        return 1
    print(f"rules check: OK, {len(rules.files)} files")
    for name, pack in policy.packs.items():
        default = " (default)" if name == policy.default_pack else ""
        print(f"  pack {name}{default}: {len(pack.rows)} rows")
    counts = Counter(e.table for e in rules.entries)
    enabled = Counter(e.table for e in rules.entries if e.enabled)
    for table in sorted(counts):
        print(f"  [[{table}]]: {enabled[table]} enabled of {counts[table]}")
    for name, items in sorted(rules.lists.items()):
        print(f"  lists/{name}.txt: {len(items)} entries")
    print(f"digest {rules.digest}")
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    try:
        _rules, policy, settings = _load(args)
    except SettingsError as exc:
        print(f"relay rules explain: {exc}", file=sys.stderr)
        return 2
    except RulesError as exc:
        print(f"{exc}", file=sys.stderr)
        return 1
    if args.pack is not None and args.pack not in policy.packs:
        print(f"relay rules explain: no pack {args.pack!r}", file=sys.stderr)
        return 2
    print(explain(policy, only=args.pack, settings=settings))
    return 0


# ---------------------------------------------------------------------------------------------
# Plain words


def explain(policy: Policy, only: str | None = None, settings: Settings | None = None) -> str:
    """The effective policy as text a lawyer can read: the table per pack, then the decisions
    built into the relay (``rules_builtin``)."""
    requested = _names(sorted(policy.requested_categories))
    lines = [
        f"Rules digest {policy.digest}.",
        f'Emails the recipient asked for ("requested"): {requested}.',
        f"A message nothing else classifies is treated as {policy.default_category.value}; "
        f"one with mailing-list headers as {policy.list_headers_category.value}.",
        f"Legacy regime: addresses collected before {policy.publication_date} whose owner was "
        f"informed no later than {policy.end_of_grace} ({policy.legacy_timezone} calendar days) "
        "and did not object.",
        f"Consent lasts {policy.lifetime_days} days"
        + (" and ends when the notice version changes" if policy.renew_on_notice_change else "")
        + f"; no new consent request within {policy.reask_days} days of a refusal, a withdrawal "
        "or an unanswered request.",
        "For each tracker and recipient, the first row that applies decides.",
    ]
    for name, pack in sorted(policy.packs.items(), key=lambda item: item[0] != policy.default_pack):
        if only is None or name == only:
            lines += ["", *_explain_pack(policy, pack)]
    lines += builtin_lines(policy, settings)
    return "\n".join(lines)


def _explain_pack(policy: Policy, pack: Pack) -> list[str]:
    used = [
        f"sender domain {d}" for d, p in sorted(policy.packs_by_sender.items()) if p == pack.name
    ]
    used += [
        f"recipient domain {d}"
        for d, p in sorted(policy.packs_by_recipient.items())
        if p == pack.name
    ]
    if pack.name == policy.default_pack:
        used.insert(0, "every sender not listed elsewhere")
    head = f"Pack {pack.name}: {pack.description}"
    lines = [head, f"  used for: {', '.join(used) or 'no sender (not selected)'}"]
    for number, row in enumerate(pack.rows, start=1):
        lines.append(f"  R{number} {row.id}: {describe_row(row, policy)}")
        lines.append(f"      ({row.description}; {row.where})")
    return lines


_ACTIONS = {
    RowAction.KEEP: "is kept as written",
    RowAction.GATEWAY: "is kept behind the relay's gateway, which checks consent again at each "
    "opening",
    RowAction.MINIMISE: "is rewritten to the relay's day-only counter (the tracker itself is "
    "never contacted; only the day of the last opening is kept)",
    RowAction.STRIP_PARAMS: "loses its identifying parameters",
    RowAction.NEUTRALISE: "is replaced by a transparent inline image (nothing is fetched)",
    RowAction.REMOVE: "is removed",
    RowAction.NO_CONSENT: "gets the no-consent action of its signature: neutralised when it is "
    "an invisible pixel, removed otherwise; nothing is fetched, not even with its identifying "
    "parameters stripped (recommendation 2.1: the request itself reads the terminal)",
    RowAction.STRIP: "is neutralised or removed (nothing is fetched)",
}

_CONSENT = {
    ConsentCondition.ANY: "",
    ConsentCondition.GRANTED: "when the recipient holds valid consent for that purpose",
    ConsentCondition.NOT_GRANTED: "when the recipient has not consented to that purpose",
    ConsentCondition.LEGACY: "when the recipient has not consented but the legacy regime covers "
    "that purpose",
    ConsentCondition.NONE: "when neither consent nor the legacy regime covers that purpose",
}


def describe_row(row: Row, policy: Policy) -> str:
    """One row in plain words, built from its conditions (module Rule 2)."""
    requested = sorted(policy.requested_categories)
    others = sorted(set(Category) - policy.requested_categories)
    if row.categories is not None:
        scope = f"in {_names(sorted(row.categories))} emails"
        if row.requested is not None:
            scope += (
                " the recipient asked for" if row.requested else " the recipient did not ask for"
            )
    elif row.requested is True:
        scope = f"in emails the recipient asked for ({_names(requested)})"
    elif row.requested is False:
        scope = f"in emails the recipient did not ask for ({_names(others)})"
    else:
        scope = "in any email"
    if row.purposes is None:
        what = "any tracker"
    else:
        what = f"a tracker used for {_names(sorted(row.purposes), 'or')}"
    condition = _CONSENT[row.consent]
    subject = f"{scope}, {what}" + (f", {condition}," if condition else "")
    return f"{subject} {_ACTIONS[row.action]} (basis: {row.basis.value})."


def _names(values: list[Category] | list[Purpose], joiner: str = "and") -> str:
    words = [v.value for v in values]
    if len(words) <= 1:
        return "".join(words) or "none"
    return f"{', '.join(words[:-1])} {joiner} {words[-1]}"
