"""Detection over the labelled corpus: every labelled tracker found, no decoy touched.

The messages are parsed with the stdlib ``email`` package here, in the test only, to get the
decoded text of each part (the relay's own parser is tested on its own); ``Part`` objects are
built from it so that ``detect`` sees what the pipeline gives it.
"""

from __future__ import annotations

import email
import email.policy
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from relay.core.parse import parse_message
from relay.detect.trackers import Detection, DetectionRules, attribute_url, detect, load_detection
from relay.model import Candidate, ElementKind, ParsedMessage, Part
from relay.rulefiles import load_rules

EDITABLE = ("text/html", "text/plain", "text/x-amp-html")


def stdlib_message(raw: bytes) -> ParsedMessage:
    """A ParsedMessage whose parts carry decoded text (offsets other than text are dummies)."""
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    parts: list[Part] = []
    for leaf in msg.walk():
        if leaf.is_multipart():
            continue
        ctype = leaf.get_content_type()
        text = None
        if ctype in EDITABLE:
            payload = leaf.get_payload(decode=True)
            assert isinstance(payload, bytes)
            text = payload.decode(leaf.get_content_charset() or "utf-8", "replace")
        parts.append(
            Part(
                index=len(parts),
                content_type=ctype,
                charset=leaf.get_content_charset() or "",
                cte=str(leaf.get("Content-Transfer-Encoding", "7bit")).lower(),
                header_start=0,
                body_start=0,
                body_end=0,
                text=text,
            )
        )
    return ParsedMessage(raw=raw, headers=(), header_end=0, parts=tuple(parts))


@dataclass(frozen=True)
class Sample:
    name: str
    message: ParsedMessage
    label: dict[str, Any]

    def html(self) -> str:
        for part in self.message.parts:
            if part.content_type == "text/html" and part.text is not None:
                return part.text
        raise AssertionError(f"{self.name}: no text/html part")


@pytest.fixture(scope="module")
def rules() -> DetectionRules:
    return load_detection(load_rules())


@pytest.fixture(scope="module")
def samples(corpus_dir: Path) -> list[Sample]:
    labels = json.loads((corpus_dir / "labels.json").read_text(encoding="utf-8"))
    return [
        Sample(entry["file"], stdlib_message((corpus_dir / entry["file"]).read_bytes()), entry)
        for entry in labels
    ]


def _detect(sample: Sample, rules: DetectionRules) -> Detection:
    return detect(sample.message, rules, [sample.label["rcpt"]])


def _by_url(detection: Detection) -> dict[str, list[Candidate]]:
    found: dict[str, list[Candidate]] = {}
    for candidate in detection.candidates:
        found.setdefault(candidate.url, []).append(candidate)
    return found


def test_corpus_has_sixteen_labelled_messages(samples: list[Sample]) -> None:
    assert len(samples) == 16
    assert sum(len(s.label["trackers"]) for s in samples) >= 30


def test_every_labelled_tracker_is_found(samples: list[Sample], rules: DetectionRules) -> None:
    missing = []
    for sample in samples:
        found = _by_url(_detect(sample, rules))
        for tracker in sample.label["trackers"]:
            if attribute_url(tracker["url"]) not in found:
                missing.append((sample.name, tracker["vendor"], tracker["where"], tracker["url"]))
    assert missing == []


def test_no_decoy_is_a_candidate(samples: list[Sample], rules: DetectionRules) -> None:
    harmed = []
    hard = 0
    for sample in samples:
        found = _by_url(_detect(sample, rules))
        for decoy in sample.label["decoys"]:
            hard += bool(decoy.get("hard"))
            if attribute_url(decoy["url"]) in found:
                harmed.append((sample.name, decoy["url"]))
    assert harmed == []
    assert hard > 50  # the hard decoys (CDNs, dividers, hidden logos, cid/data, links) were there


def test_click_tracking_links_are_reported_not_candidates(
    samples: list[Sample], rules: DetectionRules
) -> None:
    for sample in samples:
        detection = _detect(sample, rules)
        link_rules = {link.url: link.rule for link in detection.links}
        for decoy in sample.label["decoys"]:
            if decoy["element"].startswith("<a "):
                assert link_rules[attribute_url(decoy["url"])] is not None, decoy["url"]


def test_url_span_is_the_url_as_written(samples: list[Sample], rules: DetectionRules) -> None:
    for sample in samples:
        html = sample.html()
        labelled = {attribute_url(t["url"]): t for t in sample.label["trackers"]}
        for candidate in _detect(sample, rules).candidates:
            written = html[candidate.url_span.start : candidate.url_span.end]
            assert attribute_url(written) == candidate.url
            tracker = labelled.get(candidate.url)
            if tracker is not None:  # exactly the characters between the element's quotes
                assert f"'{written}'" in tracker["element"] or f'"{written}"' in tracker["element"]


def test_removal_span_covers_the_labelled_img(samples: list[Sample], rules: DetectionRules) -> None:
    checked = 0
    for sample in samples:
        html = sample.html()
        found = _by_url(_detect(sample, rules))
        for tracker in sample.label["trackers"]:
            candidate = found[attribute_url(tracker["url"])][0]
            removed = html[candidate.removal_span.start : candidate.removal_span.end]
            url_inside = candidate.removal_span.start <= candidate.url_span.start
            assert url_inside and candidate.url_span.end <= candidate.removal_span.end
            if tracker["element"].startswith("<img"):
                assert removed == tracker["element"], sample.name
                assert candidate.element is ElementKind.IMG
                checked += 1
            elif tracker["where"] == "vml":
                assert removed.startswith("<v:image") and removed.endswith("/>")
                assert candidate.element is ElementKind.VML
            elif tracker["where"] == "td_bg_style":
                assert removed.startswith("background-image:url(") and removed.endswith(";")
                assert candidate.element is ElementKind.STYLE_ATTR
    assert checked >= 15


def test_vendor_trackers_get_vendor_rules(samples: list[Sample], rules: DetectionRules) -> None:
    expected = {
        "ses": "ses-open",
        "mailgun": "mailgun-open",
        "mailchimp": "mailchimp-open",
        "sendgrid": "sendgrid-open",
        "klaviyo": "klaviyo-open",
        "sfmc": "sfmc-open",
        "hubspot-sidekick": "hubspot-sales-open",
    }
    for sample in samples:
        found = _by_url(_detect(sample, rules))
        for tracker in sample.label["trackers"]:
            rule = found[attribute_url(tracker["url"])][0].rule
            if tracker["vendor"] in expected:
                assert rule == expected[tracker["vendor"]], tracker["url"]
            else:
                assert rule in ("tiny-size", "opaque-token", "outlook-only-image"), rule


def test_candidate_ids_are_dense(samples: list[Sample], rules: DetectionRules) -> None:
    for sample in samples:
        ids = [c.id for c in _detect(sample, rules).candidates]
        assert ids == list(range(len(ids)))


def test_reference_message(corpus_dir: Path, rules: DetectionRules) -> None:
    message = stdlib_message((corpus_dir / "reference-67k.eml").read_bytes())
    detection = detect(message, rules, ["reader@example.org"])
    urls = {c.url: c for c in detection.candidates}
    assert set(urls) == {
        "https://t.example.net/o/abc123.gif",
        "https://u123.ct.sendgrid.net/wf/open?upn=abcdef0123456789",
    }
    assert urls["https://t.example.net/o/abc123.gif"].element is ElementKind.VML
    assert urls["https://t.example.net/o/abc123.gif"].rule == "outlook-only-image"
    assert len(detection.links) == 120


def test_reference_detection_time(corpus_dir: Path, rules: DetectionRules) -> None:
    """Detection cost on the 67 KB reference (printed; a loose bound so that CI noise passes)."""
    message = stdlib_message((corpus_dir / "reference-67k.eml").read_bytes())
    detect(message, rules, ["reader@example.org"])
    rounds = 50
    start = time.perf_counter()
    for _ in range(rounds):
        detect(message, rules, ["reader@example.org"])
    per_message = (time.perf_counter() - start) / rounds
    print(f"detect reference-67k: {per_message * 1e6:.0f} us/message")
    assert per_message < 0.02


def test_same_trackers_through_the_relay_parser(
    samples: list[Sample], corpus_dir: Path, rules: DetectionRules
) -> None:
    """The relay's own MIME parser feeds detect the same trackers, with spans on its text."""
    for sample in samples:
        message = parse_message((corpus_dir / sample.name).read_bytes())
        detection = detect(message, rules, [sample.label["rcpt"]])
        expected = _detect(sample, rules)
        assert [(c.url, c.rule) for c in detection.candidates] == [
            (c.url, c.rule) for c in expected.candidates
        ]
        texts = {p.index: p.text for p in message.parts}
        for candidate in detection.candidates:
            text = texts[candidate.part_index]
            assert text is not None
            written = text[candidate.url_span.start : candidate.url_span.end]
            assert attribute_url(written) == candidate.url
