"""Recall and harm on emails held out while the kit rules were written (issue 12).

``data/holdout_phishing_pot.json`` was read from phishing_pot emails that the measurement set
(``test_recall``) does not use, on hosts it does not hold, after the ``kit-path``,
``lone-dynamic-image``, proxy and shortener rules were written from the measurement set: it
shows what those rules do on mail they were not written from. Its description says how it
was drawn. Floors: 99% with a declared size; 96% without one (measured 96.5% on 2026-12-01, 166 of
172: what stays out is a header image on an Azure CDN and a campaign's numbered .jpg images on
a CloudFront host, both static file names, and three pages whose only token is after "#",
which no client sends); no content image taken for a tracker.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.detect.test_recall import PLACEMENTS, _context, _found

DATA = json.loads((Path(__file__).parent / "data" / "holdout_phishing_pot.json").read_text())
PIXELS: list[dict[str, Any]] = DATA["pixels"]
CONTENT: list[dict[str, Any]] = DATA["content"]
FLOORS = {True: 0.99, False: 0.96}


@pytest.mark.parametrize("sized", [True, False], ids=["sized", "unsized"])
@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_held_out_pixel_recall(placement: str, sized: bool) -> None:
    make = PLACEMENTS[placement]
    missed = [
        p["url"]
        for p in PIXELS
        if p["url"] not in _found(_context(p["context"]) + make(p["url"], sized))
    ]
    recall = 1 - len(missed) / len(PIXELS)
    print(f"held out {placement} {'sized' if sized else 'unsized'}: {recall:.4f}")
    assert recall >= FLOORS[sized], missed


def test_held_out_set_is_real_and_large_enough() -> None:
    assert len(PIXELS) >= 150 and len(CONTENT) >= 500
    for item in (*PIXELS, *CONTENT):
        assert item["source"].startswith("github.com/rf-peixoto/phishing_pot email/"), item


def test_no_held_out_content_image_is_taken_for_a_tracker() -> None:
    harmed = [
        item["url"]
        for item in CONTENT
        if item["url"] in _found(_context(item["context"]) + item["tag"])
    ]
    assert harmed == []
