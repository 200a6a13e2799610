"""Candidates of the trackers stage: a reference and its verdict -> a ``Candidate``.

Stage: detection (pure). Input: an image reference, its verdict (or the app's label) and the
part's text. Output: the ``Candidate`` the rewrite and decide stages work on, with the spans to
edit. Also the fail-closed candidates of a part the scan did not finish (``failclosed``).

Rule 1: default action without consent: the rule's ``no_consent``, else ``neutralise`` for an
        invisible image, ``strip_params`` when identifying parameters are known, else
        ``remove`` (SPEC section 2, item 6).
Rule 2: an app label (``data-relay-purpose``) overrides the purpose; an unknown label counts as
        ``campaign_performance`` (SPEC section 1: the strictest common case).
"""

from __future__ import annotations

import html
import html.entities
import re

from relay.detect.failclosed import fetchable_spans
from relay.detect.htmlattrs import Found
from relay.detect.image_facts import visible_size
from relay.detect.removal import AmpIndex, removal_end
from relay.detect.verdicts import BY_FAIL_CLOSED, BY_LABEL, Ref, Verdict
from relay.model import Action, Candidate, ElementKind, Purpose, Span

APP_LABEL_RULE = "app-label"
BUDGET_RULE = "cpu-budget"
ELEMENT_TEXT_LIMIT = 300
# Character references a browser decodes inside an attribute value (WHATWG HTML 13.2.5.72):
# numeric ones with or without ";", named ones with ";", and the legacy names that HTML lets go
# without ";" (``&amp``, ``&lt``, ``&copy`` ...) unless "=" or a letter or digit follows.
_LEGACY = sorted((n for n in html.entities.html5 if not n.endswith(";")), key=len, reverse=True)
_ENTITY = re.compile(
    r"&(?:#[0-9]{1,7};?|#[xX][0-9a-fA-F]{1,6};?|(?P<named>[A-Za-z][A-Za-z0-9]{1,31};)"
    rf"|(?:{'|'.join(_LEGACY)})(?![A-Za-z0-9=]))"
)


def _reference(m: re.Match[str]) -> str:
    named = m.group("named")
    if named is not None and named not in html.entities.html5:
        return m.group()  # an unknown name: kept as written, as browsers do
    return html.unescape(m.group())


_URL_SPACE = re.compile(r"[\t\n\r]")


def attribute_url(raw: str) -> str:
    """The URL a client fetches for an attribute value: references decoded, tabs and line
    breaks dropped (as the URL parser does), surrounding spaces trimmed."""
    url = _ENTITY.sub(_reference, raw) if "&" in raw else raw
    if "\n" in url or "\r" in url or "\t" in url:
        url = _URL_SPACE.sub("", url)
    return url.strip()


def _default_action(explicit: Action | None, invisible: bool, params: tuple[str, ...]) -> Action:
    if explicit is not None:
        return explicit
    if invisible:
        return Action.NEUTRALISE
    return Action.STRIP_PARAMS if params else Action.REMOVE


def _label_purpose(label: str | None) -> Purpose | None:
    if label is None:
        return None
    try:
        return Purpose(label.strip().lower())
    except ValueError:
        # SPEC section 1: a tracker whose purpose is unknown is treated as the strictest case.
        return Purpose.CAMPAIGN_PERFORMANCE


def _element_text(text: str, found: Found) -> str:
    shown = text[found.elem_start : found.elem_end]
    if len(shown) > ELEMENT_TEXT_LIMIT:
        return shown[: ELEMENT_TEXT_LIMIT - 3] + "..."
    return shown


def candidate(
    number: int, ref: Ref, verdict: Verdict | None, text: str, amp: AmpIndex | None
) -> Candidate | None:
    found = ref.found
    label = _label_purpose(found.label)
    if verdict is None:
        if label is None:
            return None
        invisible = not visible_size(found.size)
        verdict = Verdict(APP_LABEL_RULE, "", label, None, (), invisible, BY_LABEL)
    purpose = label if label is not None else verdict.purpose
    return Candidate(
        id=number,
        part_index=ref.part_index,
        url=ref.url,
        element=found.kind,
        element_text=_element_text(text, found),
        rule=verdict.rule,
        vendor=verdict.vendor,
        purpose=purpose,
        no_consent_action=_default_action(verdict.no_consent, verdict.invisible, verdict.params),
        identifying_params=verdict.params,
        url_span=Span(found.url_start, found.url_end),
        removal_span=Span(found.removal_start, removal_end(text, found, amp)),
        width=found.size.width,
        height=found.size.height,
        purpose_attr_span=(
            Span(found.label_start, found.label_end) if found.label_start >= 0 else None
        ),
        labelled=label is not None,
        detected_by=verdict.detected_by,
    )


def fail_closed(number: int, part_index: int, text: str) -> list[Candidate]:
    """Every fetchable value of an unfinished part, neutralised for everyone (Rule 6)."""
    found: list[Candidate] = []
    for start, end in fetchable_spans(text):
        span = Span(start, end)
        found.append(
            Candidate(
                id=number + len(found),
                part_index=part_index,
                url=attribute_url(text[start:end]),
                element=ElementKind.OTHER,
                element_text=text[start:end][:ELEMENT_TEXT_LIMIT],
                rule=BUDGET_RULE,
                vendor="",
                purpose=Purpose.CAMPAIGN_PERFORMANCE,
                no_consent_action=Action.NEUTRALISE,
                identifying_params=(),
                url_span=span,
                removal_span=span,
                detected_by=BY_FAIL_CLOSED,
            )
        )
    return found
