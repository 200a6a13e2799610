"""The CPU budget of detection: what is not read in time is filtered fail-closed.

The clock is an input of the pure core (the relay passes ``time.process_time``); these tests
pass a clock that ticks once per look, so that where the budget runs out is exact.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime

from relay.context import build_context
from relay.core.filtering import filter_message
from relay.core.parse import parse_message
from relay.core.recipients import recipient_key
from relay.detect.budget import Budget
from relay.detect.trackers import BUDGET_RULE, detect, load_detection
from relay.model import Action, ConsentState, Envelope, EventType, Purpose, PurposeConsent
from relay.rulefiles import load_rules
from relay.settings import parse_settings

RULES = load_detection(load_rules())
PIXEL = "https://u1.ct.sendgrid.net/wf/open?upn=Zk4cH8bq2FnWx3T5o1mA9z7kPq"


def ticking(start: int = 0) -> Callable[[], float]:
    counter = itertools.count(start)
    return lambda: float(next(counter))


def _mime(*htmls: str) -> bytes:
    parts = "".join(
        f"--b\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n" for html in htmls
    )
    return (
        "From: news@shop.example\r\nTo: a@example.org\r\nSubject: x\r\nMessage-ID: <b@x>\r\n"
        'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b"\r\n\r\n'
        f"{parts}--b--\r\n"
    ).encode()


FIRST = f'<p>short</p><img src="{PIXEL}" width="1" height="1">'
# Many images: the scan looks at the budget every 64 of them.
SECOND = (
    "".join(f'<img src="https://cdn.shop.example/p{n}.png" width="100">' for n in range(300))
    + '<img src="https://t.hidden.example/o.gif?u=Xk2bT9L0qR5yPz3mVv8nZw">'
    + '<td style="background:url(//bg.example/b.png)">'
)
THIRD = '<img src="https://cdn.shop.example/logo.png" srcset="//a.example/2x.png 2x">'


def test_parts_not_read_in_time_have_every_fetchable_value_neutralised() -> None:
    message = parse_message(_mime(FIRST, SECOND, THIRD))
    # One tick per look: the first part takes two looks, the second runs out mid-way.
    found = detect(message, RULES, [], budget=Budget(ticking(), 4))
    assert found.unfinished == (1, 2)
    first = [c for c in found.candidates if c.part_index == 0]
    assert [(c.rule, c.detected_by) for c in first] == [("sendgrid-open", "signature")]
    failed = [c for c in found.candidates if c.part_index in (1, 2)]
    assert {c.rule for c in failed} == {BUDGET_RULE}
    assert {c.detected_by for c in failed} == {"fail-closed"}
    urls = {c.url for c in failed}
    assert "https://t.hidden.example/o.gif?u=Xk2bT9L0qR5yPz3mVv8nZw" in urls
    assert "//bg.example/b.png" in urls
    assert {"https://cdn.shop.example/logo.png", "//a.example/2x.png 2x"} <= urls
    assert len(failed) == len(urls) == 300 + 2 + 2


def test_without_a_budget_nothing_is_unfinished() -> None:
    found = detect(parse_message(_mime(FIRST, SECOND, THIRD)), RULES, [])
    assert found.unfinished == ()
    assert BUDGET_RULE not in {c.rule for c in found.candidates}


def test_filter_message_neutralises_for_every_recipient_and_says_so() -> None:
    settings = parse_settings('[secrets]\nlink_key = "k"\n[smtp]\ncpu_budget = 4.0\n', env={})
    context = build_context(settings)
    now = datetime.now(UTC)
    key = settings.address_key
    granted = PurposeConsent(EventType.GRANTED, now, "ev1")
    states = {
        "a@example.org": ConsentState(recipient_key("a@example.org", key)),
        "b@example.org": ConsentState(
            recipient_key("b@example.org", key), {Purpose.CAMPAIGN_PERFORMANCE: granted}
        ),
    }
    envelope = Envelope("news@shop.example", tuple(states))
    raw = _mime(FIRST, SECOND, THIRD)
    result = filter_message(context, raw, envelope, states, now, clock=ticking())
    assert result.unfinished_parts == (1, 2)
    forced = {c.id for c in result.candidates if c.rule == BUDGET_RULE}
    assert forced
    for plan in result.plans:  # the consenting recipient too: nothing read, nothing kept
        for decision in plan.decisions:
            if decision.candidate_id in forced:
                assert (decision.action, decision.policy_rule) == (Action.NEUTRALISE, BUDGET_RULE)
    for group in result.groups:
        assert b"t.hidden.example" not in group.data
        assert b"cdn.shop.example/p7.png" not in group.data


def test_a_generous_budget_changes_nothing() -> None:
    settings = parse_settings('[secrets]\nlink_key = "k"\n', env={})
    context = build_context(settings)
    now = datetime.now(UTC)
    rkey = recipient_key("a@example.org", settings.address_key)
    states = {"a@example.org": ConsentState(rkey)}
    envelope = Envelope("news@shop.example", ("a@example.org",))
    raw = _mime(FIRST, SECOND, THIRD)
    with_clock = filter_message(context, raw, envelope, states, now, clock=lambda: 0.0)
    without = filter_message(context, raw, envelope, states, now)
    assert with_clock.unfinished_parts == ()
    assert [g.data for g in with_clock.groups] == [g.data for g in without.groups]


# What the scan reads since issue 12's late additions, written in a part it never finishes:
# shapes from tests/detect/test_other_fetches.py (sources cited there).
OTHER_FETCHES = (
    SECOND
    + '<link rel="stylesheet" href="https://t.hidden.example/css?u=Xk2bT9L0qR5yPz3mVv8nZw">'
    + '<svg><image xlink:href="https://t.hidden.example/svg.png?u=1"/>'
    + '<image href="//t.hidden.example/svg2.png"/></svg>'
    + '<div style="background:u\\72l(https://t.hidden.example/esc.gif)">x</div>'
    + '<style>@import"https://t.hidden.example/imp.css";'
    + '.h{background:image-set(url("//t.hidden.example/s1.png") 1x,"//t.hidden.example/s2.png" 2x,'
    + "'//t.hidden.example/s3.png' 3x)}</style>"
    + '<div style="background:image-set(&quot;//t.hidden.example/s4.png&quot; 1x)">x</div>'
    + '<video poster="https://t.hidden.example/poster.jpg"></video>'
    + '<a href="https://shop.example/sale">links are not fetched</a>'
)


def test_every_fetch_kind_of_an_unfinished_part_is_neutralised() -> None:
    message = parse_message(_mime(FIRST, OTHER_FETCHES))
    found = detect(message, RULES, [], budget=Budget(ticking(), 4))
    assert found.unfinished == (1,)
    urls = {c.url for c in found.candidates if c.part_index == 1}
    assert {
        "https://t.hidden.example/css?u=Xk2bT9L0qR5yPz3mVv8nZw",
        "https://t.hidden.example/svg.png?u=1",
        "//t.hidden.example/svg2.png",
        "https://t.hidden.example/esc.gif",
        "https://t.hidden.example/imp.css",
        "//t.hidden.example/s1.png",
        "//t.hidden.example/s2.png",
        "//t.hidden.example/s3.png",
        "//t.hidden.example/s4.png",
        "https://t.hidden.example/poster.jpg",
    } <= urls
    assert "https://shop.example/sale" not in urls
