"""Cross-file check: no tracker signature or heuristic may name a no-consent action that still
reads the recipient's terminal, for a purpose whose no-consent path reaches that action.

Stage: loading (pure), called by ``policy_rules.load_policy`` once the packs are built, so that
``relay rules check``, start-up and SIGHUP all refuse such a rule file.

Rule 1: "no consent" means no request reaches the tracker (SPEC section 1; recommendation 2.1:
        displaying the image "requires a query to be made over the network" and "its
        collection, by the server hosting the image, constitutes a reading operation on the
        user's terminal", IP address and user agent included). Only ``neutralise`` and
        ``remove`` fetch nothing; ``strip_params`` drops the identifier but the recipient's
        client still calls the vendor, and ``keep``, ``gateway``, ``minimise`` all make a
        request.
Rule 2: an explicit ``no_consent`` other than those two is refused when some pack, for some
        category, sends a recipient without consent for the rule's purpose to a row whose
        action is ``no_consent`` (the row that would apply it). The error names the file, the
        line, the key, the pack, the category and the row. A ``no_consent`` that no pack could
        ever apply is left alone (it says nothing about a recipient without consent).
Rule 3: values this check cannot read (an unknown purpose or action) are left to the
        detection loader, which reports them with their own message.
"""

from __future__ import annotations

from collections.abc import Mapping

from relay.core.policy import NO_REQUEST_ACTIONS, ConsentCondition, Pack, Row, RowAction
from relay.model import Action, Category, Purpose
from relay.rulefiles import RuleEntry, RuleSet

# Tables whose entries may name a no-consent action.
_TABLES = ("tracker", "heuristic")
# Conditions that hold for a recipient with neither consent nor the legacy regime.
_NO_CONSENT = frozenset({ConsentCondition.ANY, ConsentCondition.NOT_GRANTED, ConsentCondition.NONE})


def _holds_without_consent(
    row: Row, category: Category, purpose: Purpose, requested: frozenset[Category]
) -> bool:
    if row.categories is not None and category not in row.categories:
        return False
    if row.requested is not None and (category in requested) != row.requested:
        return False
    if row.purposes is not None and purpose not in row.purposes:
        return False
    return row.consent in _NO_CONSENT


def applying_row(
    pack: Pack, purpose: Purpose, requested: frozenset[Category]
) -> tuple[Category, Row] | None:
    """The first (category, row) where a recipient without consent gets the signature's own
    no-consent action in ``pack``, or None when no category leads there."""
    for category in Category:
        row = next(
            (r for r in pack.rows if _holds_without_consent(r, category, purpose, requested)),
            None,
        )
        if row is not None and row.action is RowAction.NO_CONSENT:
            return category, row
    return None


def _purpose(entry: RuleEntry) -> Purpose | None:
    try:
        return Purpose(entry.data.get("purpose", Purpose.CAMPAIGN_PERFORMANCE.value))
    except ValueError:
        return None  # Rule 3


def check_no_consent_actions(
    rules: RuleSet, packs: Mapping[str, Pack], requested: frozenset[Category]
) -> None:
    """Raise ``RulesError`` for the first entry that breaks Rule 2."""
    for table in _TABLES:
        for entry in rules.of(table):
            raw = entry.data.get("no_consent")
            if raw is None:
                continue
            try:
                action = Action(raw)
            except ValueError:
                continue  # Rule 3
            purpose = _purpose(entry)
            if action in NO_REQUEST_ACTIONS or purpose is None:
                continue
            for name, pack in packs.items():
                found = applying_row(pack, purpose, requested)
                if found is None:
                    continue
                category, row = found
                raise entry.error(
                    "no_consent",
                    f"{action.value!r} still makes the recipient's client send a request "
                    f"(recommendation 2.1: the request itself is the read operation), and "
                    f"purpose {purpose.value} needs consent: in pack {name}, a {category.value} "
                    f"email to a recipient without consent reaches row {row.id!r} ({row.where}), "
                    'which applies it; use "neutralise" (invisible pixel) or "remove"',
                )
