"""Build the pure core's ``FilterContext`` from settings and rule files (reads files, once).

Rule 1: everything is validated before anything is returned, so a reload either yields a
        complete new context or raises ``RulesError`` and leaves the running one in place.
Rule 2: worker processes build their own context from the same settings, so no rule object
        is pickled per message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relay.core.controllers import build_controllers
from relay.core.dkim_sign import parse_key_table
from relay.core.filtering import FilterContext
from relay.core.footer import check_wording
from relay.core.links import LinkMinter, LinkSigner
from relay.core.policy import Policy
from relay.core.policy_rules import load_policy
from relay.detect.trackers import DetectionRules, load_detection
from relay.errors import RulesError, SettingsError
from relay.rulefiles import RuleSet, load_rules
from relay.settings import Settings


def footer_wording(rules: RuleSet) -> dict[str, Mapping[str, str]]:
    """``[footer.fr]`` / ``[footer.en]`` tables of the rule files -> language -> wording
    (``RulesError`` naming file:line for an unknown key or a field a sentence cannot fill)."""
    table: Mapping[str, Any] = rules.tables.get("footer", {})
    for dotted, problem in check_wording(table):
        raise RulesError(f"{rules.where(dotted)}: {dotted}: {problem}")
    return {
        lang: {k: str(v) for k, v in values.items()}
        for lang, values in table.items()
        if isinstance(values, dict)
    }


def _read_key_file(path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"dkim key file {path}: {exc.strerror}") from None


def load_rule_set(settings: Settings) -> RuleSet:
    return load_rules(settings.rules.dir, settings.rules.local_dir)


@dataclass(frozen=True)
class ValidatedRules:
    rules: RuleSet
    detection: DetectionRules
    policy: Policy
    footer_wording: Mapping[str, Mapping[str, str]]


def check_unread(rules: RuleSet) -> None:
    """Raise ``RulesError`` naming the first table no loader asked for (call after loading):
    a misspelt table name is an error, never silently ignored."""
    unread = rules.unread()
    if unread:
        others = [u.rsplit(": ", 1)[-1] for u in unread[1:]]
        also = f"; also {', '.join(others)}" if others else ""
        raise RulesError(f"{unread[0]}: unknown table: no part of the relay reads it{also}")


def validate_rules(settings: Settings, rules: RuleSet | None = None) -> ValidatedRules:
    """Every loader over every rule file; ``RulesError`` (file:line:key) on the first problem.
    ``relay rules check``, start-up and SIGHUP all go through here."""
    rules = rules or load_rule_set(settings)
    detection = load_detection(rules)
    policy = load_policy(rules, settings)
    wording = footer_wording(rules)
    check_unread(rules)
    return ValidatedRules(rules, detection, policy, wording)


def build_context(settings: Settings, rules: RuleSet | None = None) -> FilterContext:
    valid = validate_rules(settings, rules)
    signer = LinkSigner.from_settings(settings.secrets)
    return FilterContext(
        detection=valid.detection,
        policy=valid.policy,
        minter=LinkMinter(settings.web.public_url, signer),
        footer_wording=valid.footer_wording,
        address_key=settings.address_key,
        malformed=settings.smtp.malformed,
        signed=settings.smtp.signed,
        cpu_budget=settings.smtp.cpu_budget,
        esp_profile=settings.upstream.profile,
        ses_no_tracking_set=settings.upstream.ses_no_tracking_set,
        esp_tracking=settings.upstream.esp_tracking,
        dkim_mode=settings.dkim.mode,
        dkim_keys=parse_key_table(settings.dkim.keys, read_key=_read_key_file),
        dkim_replace_all=settings.dkim.replace_all,
        controllers=build_controllers(settings.controllers),
    )
