"""Policy: the frozen decision tables per pack, with the categories, legacy dates, re-ask delay,
consent lifetime and classification rules that ``classify`` and ``decide`` read.

Stage: pure vocabulary of the core. ``relay.core.policy_rules`` builds a ``Policy`` from the
merged rule set, once per start or SIGHUP reload, and enforces the rules below; the settings'
``[consent]`` and ``[rules]`` keys are deployment choices. ``Policy`` is frozen and picklable.
This module does no I/O: the rule files were read by ``rulefiles``.

Rule 1: every ``[[decision]]`` row names its pack, its conditions, an action and a basis; rows
        are kept in file order per pack (a local row may say ``before = "<id>"`` to be placed
        before a shipped one), first match wins.
Rule 2: the last enabled row of every pack is a catch-all that strips with basis ``none``; a
        pack without one, or with a row after it, is refused (a table must never fall through).
Rule 3: a row whose action lets anything read the recipient's terminal (keep, gateway,
        strip_params: the tracker is still fetched; minimise: the relay's own counter is) must
        rest on a basis; basis ``consent`` needs ``consent = "granted"`` and basis ``legacy``
        needs ``consent = "legacy"``; a row that strips has basis ``none``.
Rule 4: "no consent" means no request reaches the tracker (SPEC section 1; recommendation
        2.1: "its collection, by the server hosting the image, constitutes a reading
        operation on the user's terminal", whatever parameters the URL still carries). A
        no-consent row therefore resolves only to ``neutralise`` or ``remove``: a signature
        whose own no-consent action would still contact the tracker (``strip_params``,
        ``keep``, ``gateway``) or the relay's counter (``minimise``) gets ``remove`` instead
        (``neutralise`` is what detection gives invisible pixels; a visible image is
        removed), and ``relay rules check`` refuses such a signature outright
        (``policy_check``).
Rule 5: every error is a ``RulesError`` naming file:line and the key; unknown keys are refused.
Rule 6: which values come from where. Rule files (compliance): the tables, the packs and their
        per-domain choice, the categories, the legacy dates, the re-ask delay. Settings
        (deployment), when given: the default pack (``[rules] pack``), more sender domains
        (``[rules] packs_by_domain``, over the rule files'), and the consent lifetime and
        notice-version renewal (``[consent]``), which the consent store applies as well. Without
        settings (``relay rules check`` on a bare folder) their defaults are used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from relay.core.classify_rules import Classification
from relay.model import Action, Basis, Category, Purpose


class ConsentCondition(StrEnum):
    """The ``consent =`` condition of a decision row (what the recipient holds for the purpose)."""

    ANY = "any"
    GRANTED = "granted"  # valid consent for the tracker's purpose
    NOT_GRANTED = "not_granted"  # no valid consent (the legacy regime may still apply)
    LEGACY = "legacy"  # no valid consent, but the legacy regime covers the purpose
    NONE = "none"  # neither valid consent nor the legacy regime


class RowAction(StrEnum):
    """The ``action =`` of a decision row: an ``Action`` or one resolved per tracker."""

    KEEP = "keep"
    GATEWAY = "gateway"
    MINIMISE = "minimise"
    STRIP_PARAMS = "strip_params"
    NEUTRALISE = "neutralise"
    REMOVE = "remove"
    NO_CONSENT = "no_consent"  # the tracker signature's own no-consent action
    STRIP = "strip"  # neutralise, or remove when the signature says remove: nothing is fetched


# Row actions after which nothing identifying reaches the tracker: such rows rest on no basis.
STRIPPING = frozenset(
    {RowAction.NO_CONSENT, RowAction.STRIP, RowAction.NEUTRALISE, RowAction.REMOVE}
)
# Row actions after which the recipient's client still makes a request (to the tracker, or to
# the relay's own counter): such rows need a basis (Rule 3).
READING = frozenset({RowAction.KEEP, RowAction.GATEWAY, RowAction.STRIP_PARAMS, RowAction.MINIMISE})
# The only actions that leave the recipient's client nothing to fetch (Rule 4).
NO_REQUEST_ACTIONS = frozenset({Action.NEUTRALISE, Action.REMOVE})


@dataclass(frozen=True, slots=True)
class Row:
    """One decision-table row; ``None`` conditions hold always."""

    id: str
    description: str
    pack: str
    categories: frozenset[Category] | None
    requested: bool | None
    purposes: frozenset[Purpose] | None
    consent: ConsentCondition
    action: RowAction
    basis: Basis
    where: str  # file:line of the row, for explanations

    @property
    def catch_all(self) -> bool:
        return (
            self.categories is None
            and self.requested is None
            and self.purposes is None
            and self.consent is ConsentCondition.ANY
        )


@dataclass(frozen=True, slots=True)
class Pack:
    name: str
    description: str
    rows: tuple[Row, ...]  # enabled rows, in order; the last one is the catch-all


@dataclass(frozen=True)
class Policy:
    digest: str
    packs: Mapping[str, Pack]
    default_pack: str
    packs_by_sender: Mapping[str, str]
    packs_by_recipient: Mapping[str, str]
    default_category: Category
    requested_categories: frozenset[Category]
    list_headers_category: Category
    publication_date: date
    end_of_grace: date
    legacy_timezone: str
    reask_days: int
    lifetime_days: int
    renew_on_notice_change: bool
    notice_version: str
    classification: Classification = field(default_factory=Classification)

    def is_requested(self, category: Category) -> bool:
        return category in self.requested_categories


def pack_for(policy: Policy, sender_domain: str, recipient_domain: str) -> str:
    """The pack for one (sender, recipient): sender domain first, then recipient domain, then
    the default. A domain entry covers its subdomains; the most specific entry wins."""
    for table, domain in (
        (policy.packs_by_sender, sender_domain),
        (policy.packs_by_recipient, recipient_domain),
    ):
        labels = norm_domain(domain).split(".")
        for start in range(len(labels)):
            pack = table.get(".".join(labels[start:]))
            if pack is not None:
                return pack
    return policy.default_pack


def norm_domain(domain: str) -> str:
    return domain.strip().strip(".").lower()


def without_request(no_consent: Action) -> Action:
    """A signature's no-consent action, made one that fetches nothing (Rule 4)."""
    return no_consent if no_consent in NO_REQUEST_ACTIONS else Action.REMOVE


def row_action(row: RowAction, no_consent: Action) -> Action:
    """Resolve a row's action for a tracker whose signature says ``no_consent`` without consent."""
    if row is RowAction.NO_CONSENT:
        return without_request(no_consent)
    if row is RowAction.STRIP:
        return Action.REMOVE if no_consent is Action.REMOVE else Action.NEUTRALISE
    return Action(row.value)
