"""Helpers for the detection tests (no tests here): rules loaded from the detection files alone,
and messages built from HTML strings (no MIME parsing involved)."""

from __future__ import annotations

import shutil
from pathlib import Path

from relay.detect.trackers import Detection, DetectionRules, detect, load_detection
from relay.model import Candidate, ParsedMessage, Part
from relay.rulefiles import SHIPPED_RULES, load_rules

DETECTION_FILES = ("trackers.toml", "heuristics.toml", "lists/content_cdns.txt")


def copy_detection_rules(target: Path) -> Path:
    """The shipped detection rule files only, so that these tests do not depend on the other
    stages' rule files."""
    for name in DETECTION_FILES:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHIPPED_RULES / name, target / name)
    return target


def detection_rules(folder: Path) -> DetectionRules:
    return load_detection(load_rules(copy_detection_rules(folder)))


def part(index: int, text: str, content_type: str = "text/html") -> Part:
    return Part(
        index=index,
        content_type=content_type,
        charset="utf-8",
        cte="8bit",
        header_start=0,
        body_start=0,
        body_end=len(text),
        text=text,
    )


def message(*parts: Part) -> ParsedMessage:
    return ParsedMessage(raw=b"", headers=(), header_end=0, parts=parts)


def run(
    rules: DetectionRules, html: str, recipients: tuple[str, ...] = ("ana@example.org",)
) -> Detection:
    return detect(message(part(0, html)), rules, recipients)


def only(detection: Detection) -> Candidate:
    assert len(detection.candidates) == 1, [c.url for c in detection.candidates]
    return detection.candidates[0]


def at(html: str, start: int, end: int) -> str:
    return html[start:end]
