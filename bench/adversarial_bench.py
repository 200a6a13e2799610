"""Growth of the filter's cost on hostile or broken input: time per MB from 0.1 to 10 MB.

Run: ``.venv/bin/python bench/adversarial_bench.py [--sizes 0.1,0.3,1,3,10] [--only NAME]``

Each pattern repeats a hostile unit (a tag without ">", an unclosed quote, ``url(`` without
``)``, a comment that never ends, a MIME boundary storm ...) to the given size and runs the
relay's own stages on it: ``scan`` is the trackers stage alone (``detect`` on a parsed HTML
part), ``closed`` (with ``--fail-closed``) the fail-closed reader of a part the scan did not
finish (``detect.failclosed``) on the same HTML, ``parse`` the MIME parser on the raw
message. A stage whose cost is linear shows the same time per MB at every size; a quadratic
one multiplies it by ten from 1 to 10 MB. The last
column, growth, is the time per MB at the largest size over the one at a tenth of it (1 MB for
10): 1 is linear, 10 quadratic. Up to 1 MB each cell is the least of three runs. A pattern is
stopped at the first size that takes more than ``--limit`` seconds (then marked ``STOPPED``),
so that a super-linear pattern cannot hold the machine.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial

from relay.core.parse import parse_message
from relay.detect.failclosed import fetchable_spans
from relay.detect.trackers import detect, load_detection
from relay.model import ParsedMessage, Part
from relay.rulefiles import load_rules

MB = 1_000_000
RCPT = "alice@example.org"

# name -> (unit repeated to the size, text before it, text after it)
HTML_PATTERNS: dict[str, tuple[str, str, str]] = {
    "td-background-no-gt": ("<td background background ", "", ""),
    "img-open-no-gt": ("<img ", "", ""),
    "img-src-unclosed-quote": ('<img src="x ', "", ""),
    "img-attrs-no-value": ("<img a b c d e f ", "", ""),
    "style-url-open": ("url(", "<style>", ""),
    "style-url-no-semicolon": ("background:url(//t.example/a.gif) ", "<style>a{", "}</style>"),
    "style-no-brace-url": ("x url(//t.example/a.gif) ", "<style>", "</style>"),
    "style-comment-open": ("/* url(//t.example/a.gif) ", "<style>", ""),
    "style-attr-url": ("url(//t.example/a.gif) ", '<div style="', '">'),
    "style-attr-width": ("width:1px;", '<img src="//t.example/a.gif" style="', '">'),
    "style-block-open": ("<style>", "", ""),
    "comment-open": ("<!-- ", "", ""),
    "mso-comment": ("<!--[if mso]><v:image ", "", ""),
    "background-words-in-text": ("background ", "<p>", "</p>"),
    "url-words-in-text": ("url(x) ", "<p>", "</p>"),
    "lt-in-text": ("< background ", "", ""),
    "quote-gt-quote": ('<td background="a>b" x="', "", ""),
    "a-href-no-gt": ("<a ", "", ""),
    "a-href-open-quote": ('<a href="x ', "", ""),
    "srcset-commas": (",", '<img srcset="', '">'),
    "srcset-parens": ("(", '<img srcset="a.png 1x', '">'),
    "amp-img-no-close": ('<amp-img src="//t.example/p.gif" width="1" height="1">', "", ""),
    "input-no-gt": ("<input type=image ", "", ""),
    "entities-in-src": ("&#x61;", '<img src="//t.example/', '">'),
    "braces": ("{{ relay:", "", ""),
    "link-no-gt": ("<link rel=stylesheet ", "", ""),
    "base-repeated": ('<base href="//t.example/"><img src=p.gif>', "", ""),
    "video-poster-no-gt": ("<video poster=x ", "", ""),
    "css-escaped-url-open": ("u\\72l(", "<style>", ""),
    "css-backslashes": ("\\", '<div style="', '">'),
    "image-set-open": ("image-set(", "<style>a{b:", ""),
    "image-set-parens": ("(", "<style>a{b:image-set(", ""),
    "import-comments": ("@import /**/", "<style>", ""),
    "import-comment-open": ("@import/*", "<style>", ""),
    "svg-image-href-no-gt": ("<image xlink:href=x ", "<svg>", ""),
    "legacy-entities": ("&amp", '<img src="//t.example/p.gif?', '">'),
    "pixels": ('<img src="//t{n}.example/p.gif" width="1" height="1">', "", ""),
}


def _html_message(html: str) -> ParsedMessage:
    part = Part(0, "text/html", "utf-8", "8bit", 0, 0, len(html), html)
    return ParsedMessage(html.encode("utf-8", "replace"), (), 0, (part,))


def build_html(name: str, size: int) -> str:
    unit, before, after = HTML_PATTERNS[name]
    if "{n}" in unit:  # distinct hosts: a message of many different pixels
        out: list[str] = [before]
        length, n = len(before), 0
        while length < size:
            piece = unit.replace("{n}", str(n))
            out.append(piece)
            length += len(piece)
            n += 1
        return "".join(out) + after
    return before + unit * max(1, size // len(unit)) + after


def build_mime(name: str, size: int) -> bytes:
    head = b"From: a@example.org\r\nTo: b@example.org\r\nSubject: x\r\n"
    if name == "mime-many-parts":
        part = b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n"
        body = part * max(1, size // len(part)) + b"--b--\r\n"
        return head + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + body
    if name == "mime-boundary-prefix":
        # lines that start like the boundary but go on: each is a near miss
        line = b"--bb-not-the-boundary\r\n"
        body = b"--bb\r\n\r\n" + line * max(1, size // len(line)) + b"--bb--\r\n"
        return head + b'Content-Type: multipart/mixed; boundary="bb"\r\n\r\n' + body
    if name == "mime-header-lines":
        line = b"X-A: " + b"a" * 60 + b"\r\n"
        return head + line * max(1, size // len(line)) + b"\r\nbody\r\n"
    if name == "mime-no-blank-line":
        line = b"X-A: b\r\n"
        return line * max(1, size // len(line))
    raise KeyError(name)


MIME_PATTERNS = (
    "mime-many-parts",
    "mime-boundary-prefix",
    "mime-header-lines",
    "mime-no-blank-line",
)


def timed(work: Callable[[], object], repeat: int = 1) -> float:
    """The least CPU time of ``repeat`` runs (the others met a busy cache or a collection)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        work()
        best = min(best, time.process_time() - start)
    return best


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="0.1,0.3,1,3,10", help="sizes in MB, comma-separated")
    parser.add_argument("--only", action="append", default=[], help="run only these patterns")
    parser.add_argument("--limit", type=float, default=20.0, help="seconds after which to stop")
    parser.add_argument(
        "--fail-closed", action="store_true", help="also time the fail-closed reader (closed)"
    )
    args = parser.parse_args(argv)
    sizes = [float(s) for s in args.sizes.split(",")]
    rules = load_detection(load_rules())
    names = [*HTML_PATTERNS, *MIME_PATTERNS]
    if args.only:
        names = [n for n in names if n in args.only]
    print("ms per MB of CPU time (process time, least of 3 runs up to 1 MB), by input size;")
    print("growth = at the largest size / at a tenth of it (1 linear, 10 quadratic)")
    print(f"{'pattern':<26} {'stage':<6}" + "".join(f"{s:>9g}MB" for s in sizes) + "  growth")
    tenth = min(range(len(sizes)), key=lambda i: abs(sizes[i] - sizes[-1] / 10))
    worst = 0.0
    rows = [(n, "scan" if n in HTML_PATTERNS else "parse") for n in names]
    if args.fail_closed:
        rows += [(n, "closed") for n in names if n in HTML_PATTERNS]
    for name, stage in rows:
        cells: list[float] = []
        stopped = False
        for size_mb in sizes:
            size = int(size_mb * MB)
            repeat = 3 if size_mb <= 1 else 1  # small sizes are the noisy ones
            if stage == "scan":
                message = _html_message(build_html(name, size))
                seconds = timed(partial(detect, message, rules, [RCPT]), repeat)
            elif stage == "closed":
                seconds = timed(partial(fetchable_spans, build_html(name, size)), repeat)
            else:
                raw = build_mime(name, size)
                seconds = timed(partial(parse_message, raw), repeat)
            cells.append(1000 * seconds / size_mb)
            if seconds > args.limit:
                stopped = True
                break
        shown = "".join(f"{c:11.1f}" for c in cells) + " " * 11 * (len(sizes) - len(cells))
        base = cells[min(tenth, len(cells) - 1)]
        ratio = cells[-1] / base if base > 0 else 0.0
        worst = max(worst, ratio)
        tail = "   STOPPED" if stopped else f"   {ratio:5.2f}"
        print(f"{name:<26} {stage:<6}{shown}{tail}")
        sys.stdout.flush()
    print(f"worst growth: {worst:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
