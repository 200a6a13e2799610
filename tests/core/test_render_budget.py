"""The memory bound of one message (filtering Rule 5): renderings held at once stay within
``[smtp] max_render_bytes``; what is left is rendered in the next batch, never dropped."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from relay.context import build_context
from relay.core.filtering import FilterResult, filter_message
from relay.core.recipients import recipient_key
from relay.model import ConsentState, Envelope
from relay.pipeline import without_groups
from tests.support.harness import make_settings, message

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
# A placeholder gives every recipient a rendering of its own (a per-recipient link).
DATA = message("<p>{{relay:preferences_url}}</p>" + "<p>filler</p>\r\n" * 200)
RCPTS = tuple(f"r{n}@example.org" for n in range(10))


def _filter(tmp_path: Path, budget: int, skip: frozenset[str] = frozenset()) -> FilterResult:
    context = build_context(make_settings(tmp_path, "redis://unused", "file:./x"))
    states = {r: ConsentState(recipient_key=recipient_key(r, context.address_key)) for r in RCPTS}
    envelope = Envelope("app@shop.example", RCPTS)
    return filter_message(context, DATA, envelope, states, NOW, skip=skip, budget=budget)


def test_rendering_stops_at_the_budget_and_names_what_is_left(tmp_path: Path) -> None:
    result = _filter(tmp_path, budget=3 * len(DATA) + 2000)
    rendered = [g.rcpts for g in result.groups]
    assert sum(len(g.data) for g in result.groups) <= 3 * len(DATA) + 2000
    assert len(rendered) == 3
    assert [*rendered, *result.unrendered] == [(r,) for r in RCPTS]


def test_skipped_recipients_are_not_rendered_and_one_group_always_is(tmp_path: Path) -> None:
    result = _filter(tmp_path, budget=1, skip=frozenset(RCPTS[:8]))
    assert [g.rcpts for g in result.groups] == [(RCPTS[8],)]
    assert result.unrendered == ((RCPTS[9],),)
    assert len(result.plans) == 10  # every recipient still decided, for the audit trail


def test_a_result_without_its_groups_keeps_every_other_field(tmp_path: Path) -> None:
    """The pipeline hands the renderings to the sender (filtering Rule 5)."""
    result = _filter(tmp_path, 10**9)
    assert result.groups
    bare = without_groups(result)
    assert bare.groups == () and result.groups  # the original keeps them
    assert bare == dataclasses.replace(result, groups=())
