"""Recipients -> upstream groups: who shares one rendering, and which are rendered now.

Input: each recipient's plan and a renderer (``filtering._Renderer``). Output: the rendered
groups, and in ``Batch.left`` the groups left for a later batch.

Rule 1: recipients whose output carries no per-recipient link and whose decisions are equal
        share one rendering (and so one upstream transaction); the others get one each.
Rule 2: the memory of one message is bounded (filtering Rule 6): a group whose recipients are
        all in ``skip`` is not rendered, and once the renderings could pass ``budget`` bytes
        the groups left are listed instead; the first group is always rendered.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

from relay.model import GatewayLink, RecipientPlan, RenderedGroup


class Renderer(Protocol):
    def render(
        self, rplan: RecipientPlan, esp_may_track: bool = True, fill_consent: bool = True
    ) -> tuple[bytes, tuple[GatewayLink, ...], tuple[tuple[str, str], ...]]: ...


class Batch:
    """Which groups one call renders (Rule 2)."""

    def __init__(self, skip: Collection[str], budget: int, estimate: int) -> None:
        self.skip = skip
        self.budget = budget
        self.estimate = estimate  # a rendering is about as large as the message
        self.used = 0
        self.left: list[tuple[str, ...]] = []

    def take(self, rcpts: tuple[str, ...]) -> bool:
        if all(r in self.skip for r in rcpts):
            return False
        if self.left or (self.budget and self.used and self.used + self.estimate > self.budget):
            self.left.append(rcpts)
            return False
        return True

    def rendered(self, data: bytes) -> None:
        self.used += len(data)


def group_and_render(
    renderer: Renderer,
    plans: Sequence[RecipientPlan],
    placeholders: bool,
    esp_may_track: Mapping[str, bool],
    fill_consent: Mapping[str, bool],
    batch: Batch,
) -> tuple[RenderedGroup, ...]:
    shared: dict[tuple[Any, ...], list[str]] = {}
    shared_plan: dict[tuple[Any, ...], RecipientPlan] = {}
    groups: list[RenderedGroup] = []
    for rplan in plans:
        esp = esp_may_track.get(rplan.rcpt, True)
        if rplan.needs_links or rplan.footer or placeholders:
            if batch.take((rplan.rcpt,)):
                fill = fill_consent.get(rplan.rcpt, True)
                data, links, controls = renderer.render(rplan, esp, fill)
                batch.rendered(data)
                groups.append(RenderedGroup((rplan.rcpt,), data, links, controls))
            continue
        key = (esp, *((d.candidate_id, d.action) for d in rplan.decisions))
        shared.setdefault(key, []).append(rplan.rcpt)
        shared_plan.setdefault(key, rplan)
    for key, rcpts in shared.items():
        if batch.take(tuple(rcpts)):
            data, links, controls = renderer.render(shared_plan[key], bool(key[0]))
            batch.rendered(data)
            groups.append(RenderedGroup(tuple(rcpts), data, links, controls))
    return tuple(groups)
