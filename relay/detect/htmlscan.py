"""HTML scanner of the trackers stage: every place an email client would fetch an image from.

Stage: detection (pure). Input: the decoded text of one text/html or text/x-amp-html part.
Output: ``Found`` image references (URL as written, its span, the smallest removable unit, the
element's declared size and the app's ``data-relay-purpose`` label). It does not decide what is
a tracker (``trackers.py`` does) and never builds a DOM: one pass of one compiled regex reads
the text the way a browser's tokenizer does (``htmlgrammar``) and stops only at the tags that
can fetch something; only those tags' attributes are then read.

Rule 1: places looked at: ``img``/``image``/``amp-img``/``amp-anim``/``input type=image``
        ``src`` and ``srcset``, ``source srcset`` (``<picture>``), VML ``v:image``/``v:fill``/
        ``v:imagedata`` ``src``, any tag's ``background`` attribute and ``url()`` in its
        ``style`` attribute, and ``url()`` in ``<style>`` blocks (all media included); the
        other fetches (``<link>``, media, objects, frames, SVG images) and the first
        ``<base href>`` through ``fetchattrs``.
Rule 2: ordinary comments are skipped whole (to ``-->`` or ``--!>``), as are the contents of
        raw text elements (``<title>``, ``<textarea>``, ``<script>`` ...); Outlook conditional
        comments (``<!--[if mso]>``) are scanned, because Outlook renders what is inside them.
Rule 3: tag and attribute names are case-insensitive; values may be double-, single- or not
        quoted and may span lines; of two attributes of the same name the first counts, as in
        HTML. Offsets always index the text as given (entities included).
Rule 4: removal units: the whole tag for an image element (with ``</amp-img>``, ``</img>`` or a
        VML closing tag when one follows); one srcset candidate with its separating comma; one
        CSS declaration with its ``;``; one ``background`` attribute with its leading space.
Rule 5: linear time on any input: the scan is one ``finditer`` whose every match consumes what
        it read (see ``htmlgrammar`` Rule 3); what a found tag needs afterwards (its closing
        tag, a CSS block's bounds) is looked up without searching the text again per tag.
Rule 6: the same reading in C when the extension is built (``_tagscan.c``, compiled by ``make
        install``): it skips what the quiet run skips and hands over each tag to read with the
        regex's groups (spans, end, head strings), reading the text as given with ASCII-only
        case folding, as HTML does; for the plain ``<img src>`` of the fast path below it finds
        the URL's span too. The regex stays the definition: tests/detect/test_tagscan.py
        compares the two readers item for item; without a compiler the regex is used. The C
        reader is linear too (its Rule 4) and reads the whole text in one call, a few ms per
        MB at most (bench/adversarial_bench.py), before the budget is next looked at.
Speed, for the 60 KB reference newsletter: the regex reader 0.66 ms, the C one 0.14 ms (of which
the C tokenizer 0.09 ms); for the 17 KB average of the bench corpus, 0.22 and 0.05 ms with the
size table warm (README, performance). The usual ``<img src>`` is read inline from the groups
rather than by ``_image_element``. tests/detect/test_htmlscan_reference.py checks both readers
against a plain tokenizer written character by character after the HTML standard, on generated
and hostile HTML.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterator
from typing import Any

from relay.detect.budget import Budget
from relay.detect.cssurls import BlockSizes, BoxSize, css_urls
from relay.detect.fetchattrs import FETCH_ATTRIBUTES, base_href, fetching_attributes
from relay.detect.htmlattrs import (
    Attrs,
    Element,
    Found,
    attr_value,
    eq_value,
    read_attrs,
    srcset_found,
    style_and_background,
    trimmed,
    with_space,
)
from relay.detect.htmlgrammar import (
    ATTRIBUTE,
    ATTRS,
    ELEMENT_NAME_END,
    IMAGE_ELEMENTS,
    QUIET,
    QUIET_NO_HOOKS,
    RAW_TEXT_HOOKED,
    STYLE,
    TAG_END,
    first_attr,
    numbered,
)
from relay.detect.imagesizes import SIZES, new_size
from relay.model import ElementKind

native_scan: Callable[[str, tuple[int, ...]], list[Any]] | None
try:
    from relay.detect._tagscan import scan as native_scan
except ImportError:  # not compiled (no C compiler where it was installed): the regex alone
    native_scan = None

# The attributes the scanner reads are captured by named groups inside one element regex, so
# that a whole tag is read by the regex engine in one call (no per-attribute Python loop). Each
# alternative starts with a literal letter outside any group, so the engine skips the ones that
# cannot match with one comparison. The empty group ``at_label`` marks where the label
# attribute's name continues after its "d". An atomic group, not a possessive quantifier:
# Python 3.11 mis-reports group spans under "*+".
_ELEMENT_ATTRS = (
    r"(?>(?:[ \t\n\r\f/]++"
    rf"|s(?:{first_attr('src', 'rc')}|{first_attr('srcset', 'rcset')}"
    rf"|{first_attr('style', 'tyle')})"
    rf"|w{first_attr('width', 'idth')}"
    rf"|h{first_attr('height', 'eight')}"
    rf"|b{first_attr('background', 'ackground')}"
    rf"|d(?P<at_label>){first_attr('label', 'ata-relay-purpose')}"
    rf"|{ATTRIBUTE}"
    r")*)"
)

# One match per thing to read, each preceded by the quiet run the engine skips (Rule 5): a
# <style> element, an image element, or another tag with a hook (background, url()).
_SCAN_PATTERN = (
    r"(?:@QUIET@)*+(?P<at>)"
    rf"(?:{STYLE}"
    rf"|<(?P<name>{IMAGE_ELEMENTS}){ELEMENT_NAME_END}(?:(?=<)|{_ELEMENT_ATTRS}{TAG_END})"
    rf"|<(?P<raw>)(?:{RAW_TEXT_HOOKED})"
    rf"|<(?P<tag>[a-z][^ \t\n\r\f/<>]*+)(?:(?=<)|{ATTRS}{TAG_END})"
    r"|\Z)"
)
_HOOKED = numbered(_SCAN_PATTERN.replace("@QUIET@", QUIET))
_UNHOOKED = numbered(_SCAN_PATTERN.replace("@QUIET@", QUIET_NO_HOOKS))
_SCAN = re.compile(_HOOKED)
_SCAN_ANYCASE = re.compile(_HOOKED, re.IGNORECASE)
# For a text without any hook word (see htmlgrammar.QUIET_NO_HOOKS): same result, faster.
_SCAN_UNHOOKED = re.compile(_UNHOOKED)
_SCAN_UNHOOKED_ANYCASE = re.compile(_UNHOOKED, re.IGNORECASE)
_HOOK_WORDS = re.compile(r"background|url\(|-set\(|\\", re.IGNORECASE)
# htmlattrs.css_hook for a text that may not be lower-cased.
_CSS_HOOK = re.compile(r"url\(|-set\(|\\", re.I | re.A)

# What the scan reads of one match: its group spans (re.Match.regs), its end, the strings of the
# groups in _HEAD, and the URL span of a plain image already found (Rule 6; None from the regex).
Item = tuple[tuple[tuple[int, int], ...], int, tuple[str | None, ...], tuple[int, int] | None]
Matches = Callable[[str], tuple[str, Iterator[Item]]]

_SPACE = " \t\r\n\f"  # HTML whitespace, as htmlattrs.trimmed strips it
_PAREN_LIMIT = 16
# How many scan matches between two looks at the CPU budget (a look costs a clock read).
_BUDGET_EVERY = 64


_SRC_KINDS = {
    "img": ElementKind.IMG,
    "image": ElementKind.IMG,
    "amp-img": ElementKind.AMP_IMG,
    "amp-anim": ElementKind.AMP_IMG,
    "v:image": ElementKind.VML,
    "v:fill": ElementKind.VML,
    "v:imagedata": ElementKind.VML,
}
_SRCSET_ELEMENTS = frozenset({"img", "image", "source", "amp-img", "amp-anim"})
_G = _SCAN.groupindex
_G_WIDTH, _G_HEIGHT, _G_STYLE = _G["width"], _G["height"], _G["style"]
_G_SRC, _G_SRCSET, _G_LABEL, _G_AT_LABEL = (_G[g] for g in ("src", "srcset", "label", "at_label"))
_G_CSS, _G_NAME, _G_TAG, _G_AT = _G["css"], _G["name"], _G["tag"], _G["at"]
_G_BACKGROUND, _G_RAW = _G["background"], _G["raw"]
_START_TAG = re.compile(rf"(?P<name>[^ \t\n\r\f/>]*+){ATTRS}{TAG_END}")
# Groups read first for every match: width, height, style (the size key), then name, srcset, label.
_HEAD = tuple(_G[g] for g in ("width", "height", "style", "name", "srcset", "label"))
# The group numbers _tagscan.scan fills in (its enum G_*; the head is _HEAD in its order).
LAYOUT = (_SCAN.groups, *(_G[g] for g in ("at", "css", "name", "src", "srcset", "style", "width",
          "height", "background", "at_label", "label", "raw", "tag")))  # fmt: skip
_URL_START = operator.itemgetter(2)  # Found.url_start


def _new_size(
    head: tuple[str | None, ...], text: str, lower: str, regs: tuple[tuple[int, int], ...]
) -> BoxSize:
    return new_size(head, text, lower, regs[_G_WIDTH], regs[_G_HEIGHT], regs[_G_STYLE])


def _hooked_tag(text: str, start: int, attrs_start: int, end: int) -> list[Found]:
    """``background`` attribute and style ``url()`` of a tag the scan stopped at."""
    # The final ">" (if the tag has one) starts no attribute: reading up to ``end`` is exact,
    # and keeps a quoted value that runs to the end of the text whole.
    element = Element(text, start, end, read_attrs(text, attrs_start, end))
    return style_and_background(element)


def _raw_tag(text: str, lower: str, name_start: int) -> list[Found]:
    """The start tag of a raw text element the scan stopped at: a hook, or an <iframe>."""
    tag = _START_TAG.match(lower, name_start)
    if tag is None:
        return []
    tag_start, name_end = name_start - 1, tag.end("name")
    found = _hooked_tag(text, tag_start, name_end, tag.end())
    if name_end == name_start + 6 and lower[name_start:name_end].lower() == "iframe":
        found += fetching_attributes(text, "iframe", tag_start, name_end, tag.end())
    return found


def _image_element(text: str, lower: str, item: Item, name: str) -> list[Found]:
    """src and srcset of an image element, and its own background and style url() if any."""
    regs, end, head, _plain = item
    start = regs[_G_AT][0]
    kind = _SRC_KINDS.get(name)
    if name == "input":  # rare: read its type the slower, general way
        type_span = read_attrs(text, start + 6, end).get("type")
        if type_span and text[type_span[0] : type_span[1]].strip().lower() == "image":
            kind = ElementKind.INPUT_IMAGE
    src = regs[_G_SRC]
    srcset = regs[_G_SRCSET] if name in _SRCSET_ELEMENTS else (-1, -1)
    found: list[Found] = []
    style = regs[_G_STYLE]
    if regs[_G_BACKGROUND][1] > regs[_G_BACKGROUND][0] or (
        style[0] >= 0 and _CSS_HOOK.search(lower, style[0], style[1])
    ):
        found.extend(_hooked_tag(text, start, start + 1 + len(name), end))
    if name in FETCH_ATTRIBUTES:  # link, media, objects, SVG images (fetchattrs)
        found.extend(fetching_attributes(text, name, start, start + 1 + len(name), end))
    if (kind is None or src[0] < 0) and srcset[0] < 0:
        return found
    size = SIZES.get(head) or _new_size(head, text, lower, regs)
    label: str | None = None
    label_start = label_end = -1
    label_span = regs[_G_LABEL]
    if label_span[0] >= 0:
        value_start, value_end = attr_value(text, eq_value(text, label_span))
        label = text[value_start:value_end]
        label_start = with_space(text, regs[_G_AT_LABEL][0] - 1)  # the group follows the "d"
        label_end = label_span[1]
    if kind is not None and src[0] >= 0:
        url_start, url_end = attr_value(text, eq_value(text, src))
        if url_start < url_end:
            raw = text[url_start:url_end]
            # removal_end is the tag's end until removal_end() looks for a closing tag.
            found.append(Found(kind, raw, url_start, url_end, start, end, start, end, size,
                               label, label_start, label_end))  # fmt: skip
    if srcset[0] >= 0:
        attrs: Attrs = {"srcset": (*attr_value(text, eq_value(text, srcset)), 0)}
        element = Element(text, start, end, attrs)
        element.size, element.label = size, label
        element.label_start, element.label_end = label_start, label_end
        srcset_kind = ElementKind.SOURCE_SRCSET if name == "source" else ElementKind.IMG_SRCSET
        found.extend(srcset_found(element, srcset_kind, attrs["srcset"]))
    return found


def _style_block(text: str, start: int, end: int) -> list[Found]:
    refs = css_urls(text, start, end)
    sizes = BlockSizes(text, start, end)
    return [
        Found(ElementKind.STYLE_BLOCK, ref.raw, ref.url_start, ref.url_end, ref.decl_start,
              ref.decl_end, ref.decl_start, ref.decl_end, sizes.at(ref.url_start), None, -1, -1)
        for ref in refs
    ]  # fmt: skip


def _has_url(lower: str) -> bool:
    """Whether "url(" occurs: found from its "(", which memchr finds many times faster than a
    four-character word (most HTML has few parentheses); past a few, one word search."""
    paren = lower.find("(", 3)
    for _ in range(_PAREN_LIMIT):
        if paren < 0:
            return False
        if lower.startswith("url", paren - 3):
            return True
        paren = lower.find("(", paren + 1)
    return "url(" in lower


def _folded(text: str) -> tuple[str, re.Pattern[str]]:
    """The text the scan reads and the regex to read it with: a lower-cased copy when lower-
    casing keeps every offset (always for ASCII), else the text itself with IGNORECASE; and
    the faster regex when no hook word occurs in the text."""
    lower = text.lower()
    if text.isascii() or len(lower) == len(text):  # every character became exactly one
        hooked = "background" in lower or _has_url(lower) or "-set(" in lower or "\\" in lower
        return lower, _SCAN if hooked else _SCAN_UNHOOKED
    hooked = _HOOK_WORDS.search(text) is not None
    return text, _SCAN_ANYCASE if hooked else _SCAN_UNHOOKED_ANYCASE


def _not_image(text: str, lower: str, regs: tuple[tuple[int, int], ...], end: int) -> list[Found]:
    """What a match other than an image element holds (style block, hooked tag, raw text)."""
    css_start, css_end = regs[_G_CSS]
    if css_start >= 0:  # a style block
        return _style_block(text, css_start, css_end)
    if regs[_G_TAG][0] >= 0:  # another tag with a hook word
        return _hooked_tag(text, regs[_G_AT][0], regs[_G_TAG][1], end)
    if regs[_G_RAW][0] >= 0:  # a raw text element whose start tag has a hook
        return _raw_tag(text, lower, regs[_G_RAW][0])
    return []  # the end of the text


def regex_matches(text: str) -> tuple[str, Iterator[Item]]:
    """The text the scan reads (see ``_folded``) and the matches of the one-pass regex."""
    lower, pattern = _folded(text)
    return lower, ((m.regs, m.end(), m.group(*_HEAD), None) for m in pattern.finditer(lower))


def native_matches(text: str) -> tuple[str, Iterator[Item]]:
    """Rule 6: the same items, read by the C tokenizer (``_tagscan``) from the text as given."""
    assert native_scan is not None
    return text, iter(native_scan(text, LAYOUT))


def scan_html(text: str, budget: Budget | None = None) -> list[Found]:
    """All image references of one HTML text, in document order. With a ``budget``, raise
    ``BudgetExceeded`` as soon as it runs out (every few tags), leaving the text unread."""
    return scan_document(text, budget)[0]


def scan_document(
    text: str, budget: Budget | None = None, matches: Matches | None = None
) -> tuple[list[Found], tuple[int, int] | None]:
    """``scan_html``'s references, and the span of the document's base URL: the ``href`` of
    its first ``<base>`` that has one (fetchattrs Rule 3), or None. ``matches`` chooses the
    reader (tests compare them); by default the C one when it is built (Rule 6)."""
    found: list[Found] = []
    base: tuple[int, int] | None = None
    lower, scanned = (matches or DEFAULT_MATCHES)(text)
    sizes = SIZES
    append = found.append
    new = tuple.__new__
    img = ElementKind.IMG
    for number, item in enumerate(scanned):
        if budget is not None and not number % _BUDGET_EVERY:
            budget.check()
        # The head holds the groups the common image needs (strings of the scanned text), in
        # an order that lets the tuple serve as the size cache key (see below).
        regs, match_end, head, plain = item
        if plain is not None:  # the C reader found a plain image's URL (Rule 6)
            url_start, url_end = plain
            if url_start < url_end:
                size = sizes.get(head) or _new_size(head, text, lower, regs)
                start = regs[_G_AT][0]
                append(new(Found, (img, text[url_start:url_end], url_start, url_end, start,
                                   match_end, start, match_end, size, None, -1, -1)))  # fmt: skip
            continue
        name, srcset, label = head[3], head[4], head[5]
        if name is None:  # a style block, or a tag or raw text element with a hook word
            found.extend(_not_image(text, lower, regs, match_end))
            continue
        name = name.lower()  # as written when the text was not lower-cased (Rule 6)
        if base is None and name == "base":  # the first with an href counts
            base = base_href(text, regs[_G_AT][0] + 5, match_end)
        url_start, url_end = eq_value(text, regs[_G_SRC]) if regs[_G_SRC][0] >= 0 else (-1, -1)
        # The common newsletter image, an <img> with a src but no srcset, label, background or
        # style url(), is read here without a call: _image_element's result at a third of the
        # cost.
        style = regs[_G_STYLE]
        if (
            name == "img"
            and url_start >= 0
            and srcset is None
            and label is None
            and regs[_G_BACKGROUND][0] == regs[_G_BACKGROUND][1]
            and (style[0] < 0 or not _CSS_HOOK.search(lower, style[0], style[1]))
        ):
            if url_start < url_end and text[url_start] in "\"'":
                url_start += 1
                url_end -= 1 if text[url_end - 1] == text[url_start - 1] else 0
            if url_start < url_end and (text[url_start] in _SPACE or text[url_end - 1] in _SPACE):
                url_start, url_end = trimmed(text, url_start, url_end)
            if url_start < url_end:
                # The key holds the width, height and style as scanned (lower-cased on the regex
                # path: the size readers ignore case, so equal keys mean equal sizes).
                size = sizes.get(head) or _new_size(head, text, lower, regs)
                start, end = regs[_G_AT][0], match_end
                # tuple.__new__ builds the NamedTuple without its Python-level __new__.
                append(new(Found, (img, text[url_start:url_end], url_start, url_end, start, end,
                                   start, end, size, None, -1, -1)))  # fmt: skip
            continue
        found.extend(_image_element(text, lower, item, name))
    found.sort(key=_URL_START)
    return found, base


DEFAULT_MATCHES: Matches = regex_matches if native_scan is None else native_matches
