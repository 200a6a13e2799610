"""Decision: tracker candidate x message category x recipient's consent -> action and basis.

Stage: pure, once per (recipient, tracker). Input: a ``Candidate``, the message ``Category``,
the recipient's ``ConsentState``, the ``Policy`` and the recipient's pack name, and ``now``
(passed in, never read from the clock, so that a decision can be replayed). Output: a
``Decision`` naming the decision-table row that matched, or a ``RecipientPlan`` for all the
trackers of a message. It never does I/O and never guesses a consent it cannot prove.

Rule 1: the pack's rows are read top to bottom and the first row whose conditions hold decides
        (``relay.core.policy`` guarantees a final catch-all that strips).
Rule 2: fail closed. A consent state that could not be read (``available`` False) grants
        nothing: neither consent nor the legacy regime, so every consent-based tracker goes.
Rule 3: valid consent for a purpose: the last decisive event for it is ``granted``, its date is
        known, it is not older than ``lifetime_days`` (0: no limit), and, when the settings ask
        for renewal on a notice change, it was given under the current notice version. The
        consent store (``consent_state``) applies lifetime and renewal too and reports such a
        grant as ``expired``; the check is repeated here so the table never relies on it.
Rule 4: legacy regime (recommendation section 7): collected on a calendar day strictly before
        the publication date, informed on or before the end-of-grace day (days counted in the
        rule files' time zone), informed no later than now, not objected, the purpose named in
        the notice, and no refusal or withdrawal for that purpose since. The text tolerates
        tracking while the notice is still pending within the three months; the SPEC requires
        the notice first, and so do we.
Rule 5: the re-ask window runs ``reask_days`` from the last refusal, withdrawal or consent
        request (an unanswered request counts as a refusal, section 4.2) unless the recipient
        granted something after it. An unreadable state gives no window: the caller decides
        (the consent request itself is stripped of every tracker anyway).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from relay.core.policy import ConsentCondition, Policy, Row, row_action
from relay.model import (
    TRACKING_ACTIONS,
    Action,
    Basis,
    Candidate,
    Category,
    ConsentState,
    Decision,
    EventType,
    Purpose,
    PurposeConsent,
    RecipientPlan,
)

# Events for a purpose after which the legacy regime no longer covers it.
_OPPOSED = frozenset({EventType.REFUSED, EventType.WITHDRAWN})


@dataclass(frozen=True, slots=True)
class _Facts:
    """What one recipient holds for one purpose."""

    grant: PurposeConsent | None  # the valid grant, if any
    legacy: bool


def decide(
    candidate: Candidate,
    category: Category,
    consent: ConsentState,
    policy: Policy,
    pack: str,
    now: datetime,
) -> Decision:
    """The action for one tracker and one recipient (module Rule 1)."""
    return _decide(
        candidate, category, consent, policy, pack, _facts(consent, candidate.purpose, policy, now)
    )


def plan(
    rcpt: str,
    candidates: Sequence[Candidate],
    category: Category,
    consent: ConsentState,
    policy: Policy,
    pack: str,
    now: datetime,
) -> RecipientPlan:
    """Every tracker's decision for one recipient, and what the output then needs.

    ``footer``: a tracker stays on the basis of consent or the legacy regime, so the email must
    carry a withdrawal link. ``needs_links``: the output has per-recipient URLs (gateway or
    minimise pixels, or the footer).
    """
    facts: dict[Purpose, _Facts] = {}
    decisions = []
    for candidate in candidates:
        if candidate.purpose not in facts:
            facts[candidate.purpose] = _facts(consent, candidate.purpose, policy, now)
        found = facts[candidate.purpose]
        decisions.append(_decide(candidate, category, consent, policy, pack, found))
    footer = any(
        d.action in TRACKING_ACTIONS and d.basis in (Basis.CONSENT, Basis.LEGACY) for d in decisions
    )
    links = footer or any(d.action in (Action.GATEWAY, Action.MINIMISE) for d in decisions)
    return RecipientPlan(rcpt, consent.recipient_key, tuple(decisions), footer, links)


def reask_blocked_until(consent: ConsentState, policy: Policy, now: datetime) -> datetime | None:
    """Until when a consent request to this recipient is refused, or None (module Rule 5)."""
    last = consent.last_solicited_at
    if not consent.available or last is None or policy.reask_days <= 0:
        return None
    last = _utc(last)
    for state in consent.purposes.values():
        if state.state is EventType.GRANTED and state.at is not None and _utc(state.at) > last:
            return None  # the recipient answered the last request by granting
    until = last + timedelta(days=policy.reask_days)
    return until if _utc(now) < until else None


def valid_grant(
    consent: ConsentState, purpose: Purpose, policy: Policy, now: datetime
) -> PurposeConsent | None:
    """The recipient's grant for ``purpose`` if it is valid now (module Rule 3)."""
    if not consent.available:
        return None
    state = consent.purposes.get(purpose)
    if state is None or state.state is not EventType.GRANTED or state.at is None:
        return None
    if policy.lifetime_days and _utc(now) - _utc(state.at) > timedelta(days=policy.lifetime_days):
        return None
    # The consent store applies the same renewal rule when it derives the state; a version it
    # did not pass on (None) is therefore left to it rather than voiding every grant.
    version = state.notice_version
    if policy.renew_on_notice_change and version is not None and version != policy.notice_version:
        return None
    return state


def legacy_covers(consent: ConsentState, purpose: Purpose, policy: Policy, now: datetime) -> bool:
    """Whether the legacy regime stands in for consent to ``purpose`` (module Rule 4)."""
    if not consent.available or consent.objected or purpose not in consent.legacy_purposes:
        return False
    collected, informed = consent.collected_at, consent.informed_at
    if collected is None or informed is None or _utc(informed) > _utc(now):
        return False
    state = consent.purposes.get(purpose)
    if state is not None and state.state in _OPPOSED:
        return False
    zone = policy.legacy_timezone
    return (
        _local_day(collected, zone) < policy.publication_date
        and _local_day(informed, zone) <= policy.end_of_grace
    )


def _facts(consent: ConsentState, purpose: Purpose, policy: Policy, now: datetime) -> _Facts:
    grant = valid_grant(consent, purpose, policy, now)
    legacy = grant is None and legacy_covers(consent, purpose, policy, now)
    return _Facts(grant, legacy)


def _decide(
    candidate: Candidate,
    category: Category,
    consent: ConsentState,
    policy: Policy,
    pack: str,
    facts: _Facts,
) -> Decision:
    rows = policy.packs[pack].rows
    # The catch-all is last (checked at load), so the loop always finds a row; rows[-1] only
    # keeps the function total.
    row = next((r for r in rows if _matches(r, candidate, category, policy, facts)), rows[-1])
    action = row_action(row.action, candidate.no_consent_action)
    evidence: tuple[str, ...] = ()
    if row.basis is Basis.CONSENT and facts.grant is not None and facts.grant.event_id:
        evidence = (facts.grant.event_id,)
    elif row.basis is Basis.LEGACY:
        evidence = consent.event_ids
    return Decision(candidate.id, action, row.basis, row.id, evidence)


def _matches(
    row: Row, candidate: Candidate, category: Category, policy: Policy, facts: _Facts
) -> bool:
    if row.categories is not None and category not in row.categories:
        return False
    if row.requested is not None and policy.is_requested(category) != row.requested:
        return False
    if row.purposes is not None and candidate.purpose not in row.purposes:
        return False
    granted = facts.grant is not None
    match row.consent:
        case ConsentCondition.GRANTED:
            return granted
        case ConsentCondition.NOT_GRANTED:
            return not granted
        case ConsentCondition.LEGACY:
            return not granted and facts.legacy
        case ConsentCondition.NONE:
            return not granted and not facts.legacy
    return True


def _utc(moment: datetime) -> datetime:
    """Aware UTC; a naive datetime is taken to be UTC already (the store writes UTC)."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


@lru_cache(maxsize=8)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def _local_day(moment: datetime, zone: str) -> date:
    return _utc(moment).astimezone(_zone(zone)).date()
