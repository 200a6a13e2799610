"""Detection benchmark: microseconds per message for ``trackers.detect`` on the corpus.

Run: ``.venv/bin/python bench/detect_bench.py [FILE.eml ...]`` (default: the reference message).
Prints the best of several rounds (the machine is shared: the minimum is the cost, the rest is
noise) beside the cost of the HTML scan alone (images) and of the href pass alone (links), so a
regression shows which side moved.
"""

from __future__ import annotations

import email
import email.policy
import sys
import time
from collections.abc import Callable
from pathlib import Path

from relay.detect.hrefs import hrefs
from relay.detect.htmlscan import scan_html
from relay.detect.trackers import detect, load_detection
from relay.model import ParsedMessage, Part
from relay.rulefiles import load_rules

CORPUS = Path(__file__).resolve().parents[1] / "examples"


def _message(path: Path) -> ParsedMessage:
    msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    parts: list[Part] = []
    for leaf in msg.walk():
        if leaf.is_multipart():
            continue
        payload = leaf.get_payload(decode=True)
        text = None
        if leaf.get_content_type().startswith("text/") and isinstance(payload, bytes):
            text = payload.decode(leaf.get_content_charset() or "utf-8", "replace")
        parts.append(Part(len(parts), leaf.get_content_type(), "", "", 0, 0, 0, text))
    return ParsedMessage(path.read_bytes(), (), 0, tuple(parts))


def best_of(run: Callable[[], object], rounds: int = 7, inner: int = 50) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(inner):
            run()
        best = min(best, (time.perf_counter() - start) / inner)
    return best


def main(argv: list[str]) -> None:
    rules = load_detection(load_rules())
    paths = [Path(a) for a in argv] or [CORPUS / "reference-67k.eml"]
    for path in paths:
        message = _message(path)
        html = "".join(
            p.text for p in message.parts if p.text is not None and p.content_type == "text/html"
        )
        detection = detect(message, rules, ["reader@example.org"])
        scan = best_of(lambda html=html: scan_html(html))  # type: ignore[misc]
        links = best_of(lambda html=html: hrefs(html))  # type: ignore[misc]
        full = best_of(lambda m=message: detect(m, rules, ["reader@example.org"]))  # type: ignore[misc]
        print(
            f"{path.name}: html {len(html) / 1024:.0f} KiB, "
            f"{len(detection.candidates)} candidates, {len(detection.links)} links: "
            f"detect {full * 1e6:.0f} us/msg ({1 / full:.0f} msg/s), "
            f"scan alone {scan * 1e6:.0f} us, "
            f"hrefs alone {links * 1e6:.0f} us"
        )


if __name__ == "__main__":
    main(sys.argv[1:])
