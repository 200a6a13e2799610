"""Speed of the filter core without SMTP: parse, detect, render (first and extra recipient).

Run: ``.venv/bin/python bench/filter_bench.py [--corpus DIR] [--seconds S]``

It then times detection and the whole core on the reference message twice in the same run:
with every shipped signature and with the first signature set only (``rules/trackers.toml``,
the 72 open-pixel shapes before ``rules/vendors/``), and prints the ratio: the matcher's cost
must not grow with the number of signatures (the ratio stays within 1.10).

Measured on ``reference-67k.eml`` and on a 5 KB and a 500 KB variant built from it by scaling
its product rows (the rows holding trackers are kept exactly once), to show that the cost is
linear in the size. Every message is a fresh copy of the bytes, so the first rendering of each
pays for its layout (line index, base64 wrapping) as it would in the relay; the extra rendering
is another recipient's variant of an already rendered message.
"""

from __future__ import annotations

import argparse
import binascii
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from relay.core.parse import parse_message
from relay.core.rewrite import TRANSPARENT_GIF, edits_for, render
from relay.model import Action, Basis, Candidate, Decision, Edit, ParsedMessage, Span

ROW = '<tr><td class="content"'
ROW_END = "</td></tr>"
COPIES = 64  # distinct message objects cycled through, more than the layout cache holds
RCPT = "alice@example.org"

Detector = Callable[[ParsedMessage], Sequence[Candidate]]


def _detector(shipped: Path | None = None) -> Detector | None:
    try:
        from relay.detect.trackers import detect, load_detection
        from relay.rulefiles import load_rules
    except ImportError:
        return None
    rules = load_detection(load_rules(shipped or ""))
    return lambda message: detect(message, rules, [RCPT], with_links=False).candidates


def first_signature_set(into: Path) -> Path:
    """A copy of the shipped rules without ``vendors/``: the signature set of trackers.toml."""
    from relay.rulefiles import SHIPPED_RULES

    shutil.copytree(SHIPPED_RULES, into, ignore=shutil.ignore_patterns("vendors"))
    return into


def _pipeline_core(shipped: Path | None = None) -> Callable[[bytes], object]:
    """The relay's own pure core (filtering.filter_message) for two recipients: one without
    consent (neutralised, shared rendering) and one who granted campaign_performance (gateway
    links and a footer: a rendering of its own). Classify, decide and link minting included."""
    from datetime import UTC, datetime

    from relay.context import build_context
    from relay.core.filtering import filter_message
    from relay.core.recipients import recipient_key
    from relay.model import ConsentState, Envelope, EventType, Purpose, PurposeConsent
    from relay.settings import parse_settings

    text = '[secrets]\nlink_key = "bench"\n'
    if shipped is not None:
        text += f'[rules]\ndir = "{shipped}"\n'
    settings = parse_settings(text, env={})
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
    return lambda raw: filter_message(context, raw, envelope, states, now)


def scaled(raw: bytes, target: int) -> bytes:
    """``raw`` with its HTML product rows repeated or cut to make about ``target`` bytes."""
    message = parse_message(raw)
    html = next(p for p in message.parts if p.content_type == "text/html")
    text = html.text or ""
    first, last = text.index(ROW), text.rindex(ROW)
    end = text.index(ROW_END, last) + len(ROW_END)
    rows = [ROW + r for r in text[first:end].split(ROW)[1:]]
    special = [r for r in rows if "v:" in r or "sendgrid" in r]
    plain = [r for r in rows if r not in special]
    fixed = len(raw) - (html.body_end - html.body_start)
    row_size = len(binascii.b2a_qp(plain[0].encode()))
    count = max(1, (target - fixed - sum(len(r) for r in special)) // row_size)
    body_rows = special[:1] + [plain[i % len(plain)] for i in range(count)] + special[1:]
    new_text = text[:first] + "".join(body_rows) + text[end:]
    body = binascii.b2a_qp(new_text.encode("utf-8"))
    return raw[: html.body_start] + body + raw[html.body_end :]


def rate(work: Callable[[int], object], seconds: float) -> float:
    """Best of three runs of calls per second."""
    best = 0.0
    for _ in range(3):
        calls = 0
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / 3:
            for _ in range(10):
                work(calls)
                calls += 1
        best = max(best, calls / elapsed)
    return best


def plan(message: ParsedMessage, detector: Detector | None) -> tuple[list[Edit], list[Edit]]:
    """Edits of two recipients: one without consent (neutralise), one through the gateway."""
    found = detector(message) if detector is not None else []
    if not found:
        text = message.parts[1].text or ""
        at = text.index("https://u123.ct.sendgrid.net")
        return [Edit(1, Span(at, text.index('"', at)), TRANSPARENT_GIF)], []
    neutral = [Decision(c.id, Action.NEUTRALISE, Basis.NONE, "bench") for c in found]
    gateway = [Decision(c.id, Action.GATEWAY, Basis.CONSENT, "bench") for c in found]
    urls = {c.id: f"https://relay.example/g/{c.id}?t=tok" for c in found}
    return edits_for(found, neutral, {}), edits_for(found, gateway, urls)


def bench(name: str, raw: bytes, detector: Detector | None, seconds: float) -> dict[str, float]:
    copies = [bytes(bytearray(raw)) for _ in range(COPIES)]
    parsed = [parse_message(c) for c in copies]
    first_edits, other_edits = plan(parsed[0], detector)
    other_edits = other_edits or first_edits
    figures = {"parse": rate(lambda i: parse_message(copies[i % COPIES]), seconds)}
    if detector is not None:
        figures["detect"] = rate(lambda i: detector(parsed[i % COPIES]), seconds)
    for message in parsed:  # a rendering on a fresh message object: cache cold each time
        render(message, first_edits)
    figures["render_first"] = rate(
        lambda i: render(parse_message(copies[i % COPIES]), first_edits), seconds
    )
    figures["render_first"] = 1 / max(1e-9, 1 / figures["render_first"] - 1 / figures["parse"])
    warm = parsed[0]
    render(warm, first_edits)
    figures["render_extra"] = rate(lambda i: render(warm, other_edits), seconds)

    def core(i: int) -> None:
        message = parse_message(copies[i % COPIES])
        edits, other = plan(message, detector)
        render(message, edits)
        render(message, other or edits)

    figures["core_2_rcpts"] = rate(core, seconds)
    pipeline = _pipeline_core()
    figures["filter_message"] = rate(lambda i: pipeline(copies[i % COPIES]), seconds)
    kb = len(raw) / 1024
    per = "  ".join(f"{k} {v:9.0f}/s" for k, v in figures.items())
    print(f"{name:<18} {kb:7.1f} KB  {per}")
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "examples"
    parser.add_argument("--corpus", type=Path, default=default)
    parser.add_argument("--seconds", type=float, default=1.5, help="time per figure")
    args = parser.parse_args(argv)
    reference = args.corpus / "reference-67k.eml"
    if not reference.is_file():
        print(f"filter_bench: {reference} not found (use --corpus DIR)", file=sys.stderr)
        return 2
    raw = reference.read_bytes()
    detector = _detector()
    print(f"detection stage: {'relay.detect.trackers' if detector else 'not available'}")
    print("msgs/s, best of 3; render_first excludes parse; core = parse+detect+2 renders;")
    print("filter_message = the relay's whole pure core, 2 recipients (classify, decide, footer)")
    results = {}
    for name, data in (
        ("5KB variant", scaled(raw, 5_000)),
        ("reference-67k", raw),
        ("500KB variant", scaled(raw, 500_000)),
    ):
        results[name] = (len(data), bench(name, data, detector, args.seconds))
    print("cost per KB (us), to compare sizes:")
    for name, (size, figures) in results.items():
        costs = "  ".join(f"{k} {1e6 / v / (size / 1024):6.2f}" for k, v in figures.items())
        print(f"  {name:<16} {costs}")
    ref = results["reference-67k"][1]
    ratio = ref["render_extra"] and (1 / ref["render_extra"]) / (1 / ref["core_2_rcpts"])
    print(f"extra recipient / whole core on reference: {100 * ratio:.1f}%")
    compare_signature_sets(raw, args.seconds)
    return 0


def compare_signature_sets(raw: bytes, seconds: float) -> None:
    """Detection and filter_message on the reference with both signature sets, interleaved
    round by round so that the machine's load drifts the same for both."""
    from relay.rulefiles import load_rules

    with tempfile.TemporaryDirectory() as tmp:
        first = first_signature_set(Path(tmp) / "rules")
        sets = {"first": first, "full": None}
        counts = {k: len(load_rules(v or "").of("tracker")) for k, v in sets.items()}
        detectors = {k: _detector(v) for k, v in sets.items()}
        cores = {k: _pipeline_core(v) for k, v in sets.items()}
        parsed = parse_message(raw)
        best: dict[str, float] = {}
        for _ in range(3):
            for name in sets:
                detector = detectors[name]
                if detector is not None:
                    d = rate(lambda i, det=detector: det(parsed), seconds / 3)  # type: ignore[misc]
                    best[f"detect {name}"] = max(best.get(f"detect {name}", 0.0), d)
                core = cores[name]
                f = rate(lambda i, c=core: c(raw), seconds / 3)  # type: ignore[misc]
                best[f"filter {name}"] = max(best.get(f"filter {name}", 0.0), f)
    print(
        f"signature sets on reference-67k: first {counts['first']} open-pixel rules, "
        f"full {counts['full']}"
    )
    for stage in ("detect", "filter"):
        first_rate, full_rate = best.get(f"{stage} first", 0.0), best.get(f"{stage} full", 0.0)
        if first_rate and full_rate:
            print(
                f"  {stage:<7} first {first_rate:8.0f}/s  full {full_rate:8.0f}/s  "
                f"cost full/first {first_rate / full_rate:.3f}"
            )


if __name__ == "__main__":
    raise SystemExit(main())
