"""The decision table of the shipped packs: every row, each SPEC section-2 case, fail-closed,
the legacy boundaries, consent expiry and renewal, the strict pack, plans and the re-ask window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from relay.core.decide import decide, plan, reask_blocked_until
from relay.core.policy import Policy
from relay.core.policy_rules import load_policy
from relay.model import (
    TRACKING_ACTIONS,
    Action,
    Basis,
    Candidate,
    Category,
    ConsentState,
    ElementKind,
    EventType,
    Purpose,
    PurposeConsent,
    Span,
)
from relay.rulefiles import load_rules
from relay.settings import parse_settings

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
PARIS = ZoneInfo("Europe/Paris")
CNIL = "fr-cnil-2026"
REQUESTED = (
    Category.TRANSACTIONAL,
    Category.AUTHENTICATION,
    Category.PUBLIC_SERVICE,
    Category.NEWSLETTER,
)
NOT_REQUESTED = (Category.MARKETING, Category.CONSENT_REQUEST)
SHIPPED = load_policy(load_rules())


def cand(purpose: Purpose, no_consent: Action = Action.NEUTRALISE, cid: int = 0) -> Candidate:
    return Candidate(
        id=cid,
        part_index=0,
        url="https://t.example/o.gif?u=1",
        element=ElementKind.IMG,
        element_text='<img src="https://t.example/o.gif?u=1">',
        rule="test-pixel",
        vendor="test",
        purpose=purpose,
        no_consent_action=no_consent,
        identifying_params=("u",),
        url_span=Span(10, 37),
        removal_span=Span(0, 40),
    )


def granted(
    *purposes: Purpose,
    at: datetime = NOW - timedelta(days=10),
    notice_version: str | None = None,
    available: bool = True,
) -> ConsentState:
    return ConsentState(
        recipient_key="rk",
        purposes={
            p: PurposeConsent(EventType.GRANTED, at, f"ev-{p.value}", notice_version)
            for p in purposes
        },
        available=available,
    )


def legacy(
    collected: datetime = datetime(2025, 6, 1, tzinfo=UTC),
    informed: datetime = datetime(2026, 5, 2, tzinfo=UTC),
    purposes: tuple[Purpose, ...] = (Purpose.CAMPAIGN_PERFORMANCE,),
    objected: bool = False,
    states: dict[Purpose, PurposeConsent] | None = None,
) -> ConsentState:
    return ConsentState(
        recipient_key="rk",
        purposes=states or {},
        collected_at=collected,
        informed_at=informed,
        objected=objected,
        legacy_purposes=purposes,
        event_ids=("ev-collected", "ev-informed"),
    )


NOTHING = ConsentState(recipient_key="rk")
DOWN = ConsentState(recipient_key="rk", available=False)


def run(
    purpose: Purpose,
    category: Category,
    state: ConsentState,
    policy: Policy = SHIPPED,
    pack: str = CNIL,
    no_consent: Action = Action.NEUTRALISE,
) -> tuple[Action, Basis, str]:
    d = decide(cand(purpose, no_consent), category, state, policy, pack, NOW)
    return d.action, d.basis, d.policy_rule


# ---------------------------------------------------------------------------------------------
# SPEC section 2, case by case (fr-cnil-2026)


@pytest.mark.parametrize("purpose", list(Purpose))
@pytest.mark.parametrize("no_consent", [Action.NEUTRALISE, Action.STRIP_PARAMS, Action.REMOVE])
def test_1_consent_request_strips_every_tracker_whatever_the_state(
    purpose: Purpose, no_consent: Action
) -> None:
    state = granted(*Purpose)
    action, basis, rule = run(purpose, Category.CONSENT_REQUEST, state, no_consent=no_consent)
    # strip_params would still contact the tracker: a consent request must not (section 4.2).
    expected = Action.REMOVE if no_consent is Action.REMOVE else Action.NEUTRALISE
    assert (action, basis, rule) == (expected, Basis.NONE, "cnil-consent-request")


def test_2_authentication_security_is_exempt_only_in_authentication_mail() -> None:
    assert run(Purpose.AUTHENTICATION_SECURITY, Category.AUTHENTICATION, NOTHING) == (
        Action.KEEP,
        Basis.EXEMPT,
        "cnil-authentication-security",
    )
    for category in set(Category) - {Category.AUTHENTICATION, Category.CONSENT_REQUEST}:
        assert run(Purpose.AUTHENTICATION_SECURITY, category, NOTHING) == (
            Action.NEUTRALISE,
            Basis.NONE,
            "cnil-default",
        )


@pytest.mark.parametrize("category", REQUESTED)
def test_3_deliverability_is_minimised_in_requested_mail(category: Category) -> None:
    assert run(Purpose.DELIVERABILITY, category, NOTHING) == (
        Action.MINIMISE,
        Basis.EXEMPT,
        "cnil-deliverability-minimise",
    )
    # Consent to another purpose does not change it; consent to deliverability keeps the pixel.
    other = granted(Purpose.CAMPAIGN_PERFORMANCE)
    assert run(Purpose.DELIVERABILITY, category, other)[0] is Action.MINIMISE
    own = granted(Purpose.DELIVERABILITY)
    assert run(Purpose.DELIVERABILITY, category, own) == (
        Action.GATEWAY,
        Basis.CONSENT,
        "cnil-consent",
    )


def test_3_deliverability_in_marketing_needs_consent() -> None:
    assert run(Purpose.DELIVERABILITY, Category.MARKETING, NOTHING) == (
        Action.NEUTRALISE,
        Basis.NONE,
        "cnil-default",
    )


@pytest.mark.parametrize("purpose", list(Purpose))
def test_4_valid_consent_keeps_through_the_gateway(purpose: Purpose) -> None:
    d = decide(cand(purpose), Category.MARKETING, granted(purpose), SHIPPED, CNIL, NOW)
    assert (d.action, d.basis, d.policy_rule) == (Action.GATEWAY, Basis.CONSENT, "cnil-consent")
    assert d.consent_event_ids == (f"ev-{purpose.value}",)


@pytest.mark.parametrize(
    "purpose",
    [Purpose.CAMPAIGN_PERFORMANCE, Purpose.CROSS_CONTEXT_PROFILING, Purpose.FRAUD_DETECTION],
)
def test_consent_purposes_are_stripped_without_consent_even_in_requested_mail(
    purpose: Purpose,
) -> None:
    # Fraud detection needs consent (section 3.1), like the two marketing purposes.
    for category in (*REQUESTED, Category.MARKETING):
        assert run(purpose, category, NOTHING)[2] == "cnil-default"


@pytest.mark.parametrize(
    "state", [EventType.REFUSED, EventType.WITHDRAWN, EventType.EXPIRED, EventType.REQUESTED]
)
def test_a_last_event_other_than_granted_is_no_consent(state: EventType) -> None:
    purpose = Purpose.CAMPAIGN_PERFORMANCE
    consent = ConsentState(recipient_key="rk", purposes={purpose: PurposeConsent(state, NOW, "ev")})
    assert run(purpose, Category.MARKETING, consent)[2] == "cnil-default"


def test_6_the_signature_no_consent_action_applies_when_it_fetches_nothing() -> None:
    for no_consent in (Action.NEUTRALISE, Action.REMOVE):
        action, basis, rule = run(
            Purpose.CAMPAIGN_PERFORMANCE, Category.MARKETING, NOTHING, no_consent=no_consent
        )
        assert (action, basis, rule) == (no_consent, Basis.NONE, "cnil-default")


@pytest.mark.parametrize("pack", ["fr-cnil-2026", "strict"])
@pytest.mark.parametrize(
    "no_consent", [Action.STRIP_PARAMS, Action.KEEP, Action.GATEWAY, Action.MINIMISE]
)
def test_6_no_consent_never_reaches_the_tracker(pack: str, no_consent: Action) -> None:
    # Recommendation 2.1: fetching the image is the read operation, identifier or not. A
    # signature's strip_params (detection's default for a visible image with a known
    # identifying parameter) becomes remove.
    for purpose in Purpose:
        action, basis, _rule = run(
            purpose, Category.MARKETING, NOTHING, pack=pack, no_consent=no_consent
        )
        assert (action, basis) == (Action.REMOVE, Basis.NONE), purpose


# ---------------------------------------------------------------------------------------------
# Expiry and notice renewal


def test_consent_expires_after_the_lifetime() -> None:
    purpose = Purpose.CAMPAIGN_PERFORMANCE
    assert SHIPPED.lifetime_days == 395
    at_limit = granted(purpose, at=NOW - timedelta(days=395))
    too_old = granted(purpose, at=NOW - timedelta(days=395, seconds=1))
    assert run(purpose, Category.MARKETING, at_limit)[2] == "cnil-consent"
    assert run(purpose, Category.MARKETING, too_old)[2] == "cnil-default"
    no_date = ConsentState(
        recipient_key="rk", purposes={purpose: PurposeConsent(EventType.GRANTED, None, "e")}
    )
    assert run(purpose, Category.MARKETING, no_date)[2] == "cnil-default"


def test_lifetime_comes_from_the_settings() -> None:
    settings = parse_settings("[consent]\nlifetime_days = 30\n", env={})
    policy = load_policy(load_rules(), settings)
    purpose = Purpose.CAMPAIGN_PERFORMANCE
    assert run(purpose, Category.MARKETING, granted(purpose), policy)[2] == "cnil-consent"
    old = granted(purpose, at=NOW - timedelta(days=31))
    assert run(purpose, Category.MARKETING, old, policy)[2] == "cnil-default"


def test_notice_version_change_voids_older_grants_when_configured() -> None:
    text = '[consent]\nrenew_on_notice_change = true\nnotice_version = "2"\n'
    policy = load_policy(load_rules(), parse_settings(text, env={}))
    purpose = Purpose.CAMPAIGN_PERFORMANCE
    old = granted(purpose, notice_version="1")
    new = granted(purpose, notice_version="2")
    assert run(purpose, Category.MARKETING, old, policy)[2] == "cnil-default"
    assert run(purpose, Category.MARKETING, new, policy)[2] == "cnil-consent"
    # Without renewal, the version does not matter.
    assert run(purpose, Category.MARKETING, old)[2] == "cnil-consent"


# ---------------------------------------------------------------------------------------------
# Legacy regime (section 7) and its boundary days (Europe/Paris calendar days)


def paris(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=PARIS)


def test_5_legacy_regime_stands_for_consent_to_the_notice_purposes() -> None:
    d = decide(cand(Purpose.CAMPAIGN_PERFORMANCE), Category.MARKETING, legacy(), SHIPPED, CNIL, NOW)
    assert (d.action, d.basis, d.policy_rule) == (Action.GATEWAY, Basis.LEGACY, "cnil-legacy")
    assert d.consent_event_ids == ("ev-collected", "ev-informed")
    # A purpose the notice did not name is not covered.
    assert run(Purpose.CROSS_CONTEXT_PROFILING, Category.MARKETING, legacy())[2] == "cnil-default"


def test_legacy_collection_day_must_be_before_publication() -> None:
    purpose = Purpose.CAMPAIGN_PERFORMANCE
    last_day_before = legacy(collected=paris(2026, 4, 13, 23, 59))
    on_publication = legacy(collected=paris(2026, 4, 14, 0, 30))  # 2026-04-13 22:30 UTC
    assert on_publication.collected_at is not None
    assert on_publication.collected_at.astimezone(UTC).day == 13
    assert run(purpose, Category.MARKETING, last_day_before)[2] == "cnil-legacy"
    assert run(purpose, Category.MARKETING, on_publication)[2] == "cnil-default"


def test_legacy_information_on_the_last_day_of_grace_counts() -> None:
    purpose = Purpose.CAMPAIGN_PERFORMANCE
    last_day = legacy(informed=paris(2026, 7, 14, 23, 59))  # 2026-07-14 21:59 UTC
    day_after = legacy(informed=paris(2026, 7, 15, 0, 30))  # still 2026-07-14 in UTC
    assert day_after.informed_at is not None
    assert day_after.informed_at.astimezone(UTC).day == 14
    assert run(purpose, Category.MARKETING, last_day)[2] == "cnil-legacy"
    assert run(purpose, Category.MARKETING, day_after)[2] == "cnil-default"


def test_legacy_needs_information_objection_ends_it() -> None:
    purpose = Purpose.CAMPAIGN_PERFORMANCE
    not_informed = ConsentState(
        recipient_key="rk",
        collected_at=datetime(2025, 1, 1, tzinfo=UTC),
        legacy_purposes=(purpose,),
    )
    future_notice = legacy(informed=NOW + timedelta(days=1))
    for state in (not_informed, legacy(objected=True), future_notice):
        assert run(purpose, Category.MARKETING, state)[2] == "cnil-default"
    for event in (EventType.REFUSED, EventType.WITHDRAWN):
        opposed = legacy(states={purpose: PurposeConsent(event, NOW, "ev")})
        assert run(purpose, Category.MARKETING, opposed)[2] == "cnil-default"


def test_legacy_does_not_replace_the_deliverability_exemption() -> None:
    state = legacy(purposes=(Purpose.DELIVERABILITY,))
    assert run(Purpose.DELIVERABILITY, Category.TRANSACTIONAL, state)[0] is Action.MINIMISE
    assert run(Purpose.DELIVERABILITY, Category.MARKETING, state)[2] == "cnil-legacy"


def test_valid_consent_wins_over_legacy() -> None:
    purpose = Purpose.CAMPAIGN_PERFORMANCE
    both = legacy(states={purpose: PurposeConsent(EventType.GRANTED, NOW, "ev-g")})
    assert run(purpose, Category.MARKETING, both)[1] is Basis.CONSENT


# ---------------------------------------------------------------------------------------------
# Fail closed


@pytest.mark.parametrize("category", list(Category))
@pytest.mark.parametrize("purpose", list(Purpose))
def test_an_unreadable_state_grants_nothing(category: Category, purpose: Purpose) -> None:
    down = ConsentState(
        recipient_key="rk",
        purposes={purpose: PurposeConsent(EventType.GRANTED, NOW, "ev")},
        collected_at=datetime(2025, 1, 1, tzinfo=UTC),
        informed_at=datetime(2026, 5, 1, tzinfo=UTC),
        legacy_purposes=tuple(Purpose),
        available=False,
    )
    action, basis, _ = run(purpose, category, down)
    assert basis not in (Basis.CONSENT, Basis.LEGACY)
    if action in TRACKING_ACTIONS:
        # Only an exemption survives, and only in its own case.
        assert (purpose, category) == (Purpose.AUTHENTICATION_SECURITY, Category.AUTHENTICATION)


# ---------------------------------------------------------------------------------------------
# Strict pack


def test_strict_pack_has_no_exemption_and_no_legacy() -> None:
    strict = "strict"
    auth = run(Purpose.AUTHENTICATION_SECURITY, Category.AUTHENTICATION, NOTHING, pack=strict)
    assert auth == (Action.NEUTRALISE, Basis.NONE, "strict-default")
    deliver = run(Purpose.DELIVERABILITY, Category.TRANSACTIONAL, NOTHING, pack=strict)
    assert deliver == (Action.NEUTRALISE, Basis.NONE, "strict-default")
    assert run(Purpose.CAMPAIGN_PERFORMANCE, Category.MARKETING, legacy(), pack=strict)[2] == (
        "strict-default"
    )
    consent = granted(Purpose.AUTHENTICATION_SECURITY)
    assert run(Purpose.AUTHENTICATION_SECURITY, Category.AUTHENTICATION, consent, pack=strict) == (
        Action.GATEWAY,
        Basis.CONSENT,
        "strict-consent",
    )
    assert run(Purpose.DELIVERABILITY, Category.CONSENT_REQUEST, granted(*Purpose), pack=strict)[
        2
    ] == ("strict-consent-request")


# ---------------------------------------------------------------------------------------------
# Plans


def test_plan_footer_and_links() -> None:
    consent = granted(Purpose.CAMPAIGN_PERFORMANCE)
    cands = [
        cand(Purpose.CAMPAIGN_PERFORMANCE, cid=0),
        cand(Purpose.DELIVERABILITY, cid=1),
        cand(Purpose.CROSS_CONTEXT_PROFILING, Action.REMOVE, cid=2),
    ]
    p = plan("a@example.org", cands, Category.TRANSACTIONAL, consent, SHIPPED, CNIL, NOW)
    assert [d.action for d in p.decisions] == [Action.GATEWAY, Action.MINIMISE, Action.REMOVE]
    assert [d.candidate_id for d in p.decisions] == [0, 1, 2]
    assert (p.rcpt, p.recipient_key, p.footer, p.needs_links) == ("a@example.org", "rk", True, True)

    minimised = plan("a@x.org", cands[1:], Category.TRANSACTIONAL, NOTHING, SHIPPED, CNIL, NOW)
    assert (minimised.footer, minimised.needs_links) == (False, True)

    stripped = plan("a@x.org", cands, Category.MARKETING, NOTHING, SHIPPED, CNIL, NOW)
    assert (stripped.footer, stripped.needs_links) == (False, False)

    exempt_kept = plan(
        "a@x.org",
        [cand(Purpose.AUTHENTICATION_SECURITY)],
        Category.AUTHENTICATION,
        NOTHING,
        SHIPPED,
        CNIL,
        NOW,
    )
    assert exempt_kept.decisions[0].action is Action.KEEP
    assert (exempt_kept.footer, exempt_kept.needs_links) == (False, False)

    by_legacy = plan("a@x.org", cands[:1], Category.MARKETING, legacy(), SHIPPED, CNIL, NOW)
    assert by_legacy.footer is True
    assert plan("a@x.org", [], Category.MARKETING, NOTHING, SHIPPED, CNIL, NOW).decisions == ()


purposes = st.sampled_from(list(Purpose))
categories = st.sampled_from(list(Category))
events = st.sampled_from([None, *EventType])


@given(
    purposes,
    categories,
    st.dictionaries(purposes, events, max_size=5),
    st.booleans(),
    st.sampled_from([CNIL, "strict"]),
)
def test_properties_of_every_decision(
    purpose: Purpose,
    category: Category,
    states: dict[Purpose, EventType | None],
    available: bool,
    pack: str,
) -> None:
    consent = ConsentState(
        recipient_key="rk",
        purposes={p: PurposeConsent(s, NOW, "ev") for p, s in states.items()},
        available=available,
    )
    d = decide(cand(purpose), category, consent, SHIPPED, pack, NOW)
    assert d.policy_rule in {row.id for row in SHIPPED.packs[pack].rows}
    if d.action in TRACKING_ACTIONS:
        assert d.basis is not Basis.NONE
    if d.basis is Basis.CONSENT:
        assert available and states.get(purpose) is EventType.GRANTED
    if category is Category.CONSENT_REQUEST:
        assert d.action in (Action.NEUTRALISE, Action.REMOVE)


# ---------------------------------------------------------------------------------------------
# Re-ask window


def test_reask_window_after_refusal_withdrawal_or_unanswered_request() -> None:
    last = NOW - timedelta(days=10)
    state = ConsentState(recipient_key="rk", last_solicited_at=last)
    assert reask_blocked_until(state, SHIPPED, NOW) == last + timedelta(days=183)
    old = ConsentState(recipient_key="rk", last_solicited_at=NOW - timedelta(days=183))
    assert reask_blocked_until(old, SHIPPED, NOW) is None
    assert reask_blocked_until(NOTHING, SHIPPED, NOW) is None


def test_reask_window_ends_with_a_later_grant_and_is_not_guessed_when_down() -> None:
    last = NOW - timedelta(days=10)
    answered = ConsentState(
        recipient_key="rk",
        purposes={
            Purpose.CAMPAIGN_PERFORMANCE: PurposeConsent(
                EventType.GRANTED, last + timedelta(hours=1), "ev"
            )
        },
        last_solicited_at=last,
    )
    assert reask_blocked_until(answered, SHIPPED, NOW) is None
    down = ConsentState(recipient_key="rk", last_solicited_at=last, available=False)
    assert reask_blocked_until(down, SHIPPED, NOW) is None


def test_naive_datetimes_are_read_as_utc() -> None:
    naive_now = NOW.replace(tzinfo=None)
    state = ConsentState(recipient_key="rk", last_solicited_at=naive_now - timedelta(days=1))
    until = reask_blocked_until(state, SHIPPED, NOW)
    assert until == NOW + timedelta(days=182)
