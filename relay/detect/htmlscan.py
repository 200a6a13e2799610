"""HTML scanner of the trackers stage: every place an email client would fetch an image from.

Stage: detection (pure). Input: the decoded text of one text/html or text/x-amp-html part.
Output: ``Found`` image references (URL as written, its span, the smallest removable unit, the
element's declared size and the app's ``data-relay-purpose`` label) and the links' hrefs. It does
not decide what is a tracker (``trackers.py`` does) and never builds a DOM: one compiled regex
pass finds the interesting tags, then only those tags' attributes are read.

Rule 1: places looked at: ``img``/``amp-img``/``amp-anim``/``input type=image`` ``src`` and
        ``srcset``, ``source srcset`` (``<picture>``), VML ``v:image``/``v:fill``/``v:imagedata``
        ``src``, any tag's ``background`` attribute and ``url()`` in its ``style`` attribute,
        and ``url()`` in ``<style>`` blocks (all media, ``@media print`` included).
Rule 2: ordinary comments are skipped whole; Outlook conditional comments (``<!--[if mso]>``)
        are scanned, because Outlook renders what is inside them.
Rule 3: tag and attribute names are case-insensitive; values may be double-, single- or not
        quoted and may span lines. Offsets always index the text as given (entities included).
Rule 4: removal units: the whole tag for an image element (with ``</amp-img>``, ``</img>`` or a
        VML closing tag when one follows); one srcset candidate with its separating comma; one
        CSS declaration with its ``;``; one ``background`` attribute with its leading space.
Speed (about 0.25 ms for the 60 KB reference newsletter, half of it in the regex engine): the usual
``<img src>`` is read inline rather than by ``_image_element``, the hook words and comment or
style bodies are searched without per-character backtracking, and plain hrefs come out of the
regex already split. tests/test_trackers_speed_equivalence.py checks each shortcut against the
straightforward code on generated HTML.
"""

from __future__ import annotations

import bisect
import operator
import re

from relay.detect.cssurls import NO_SIZE, BoxSize, block_bounds, css_size, css_urls
from relay.detect.htmlattrs import (
    Attrs,
    Element,
    Found,
    attr_value,
    pixel_value,
    read_attrs,
    srcset_found,
    style_and_background,
    trimmed,
    with_space,
)
from relay.model import ElementKind

# Attribute list of a start tag: quoted values are consumed whole so that a ">" inside a value
# does not end the tag. Possessive quantifiers keep a tag without ">" from backtracking.
_ATTRS = r"""(?:[^>"']++|"[^"]*+"|'[^']*+')*+"""
ATTRS_LAZY = r"""(?:[^>"']|"[^"]*"|'[^']*')*?"""

# An attribute value: quoted, or unquoted up to whitespace or ">".
_VALUE = r"""(?:"[^"]*+"|'[^']*+'|[^\s"'>]++)"""

# The attributes the scanner reads are captured by named groups inside one element regex, so
# that a whole tag is read by the regex engine in one call (no per-attribute Python loop). Each
# alternative starts with a literal letter outside any group: the engine then skips the ones
# that cannot match with a single comparison, instead of entering each group first (about 20%
# of the scan). Alternatives sharing a first letter keep their order, so the result is the
# same as trying src, srcset, width, height, style, data-relay-purpose in turn. The empty group
# ``at_label`` marks where the label attribute's name continues after its "d".
# An atomic group, not a possessive quantifier: Python 3.11 mis-reports group spans under "*+".
_ELEMENT_ATTRS = (
    r"(?>(?:\s*(?:"
    rf"s(?:rc\s*=\s*(?P<src>{_VALUE})|rcset\s*=\s*(?P<srcset>{_VALUE})"
    rf"|tyle\s*=\s*(?P<style>{_VALUE}))"
    rf"|width\s*=\s*(?P<width>{_VALUE})"
    rf"|height\s*=\s*(?P<height>{_VALUE})"
    rf"|d(?P<at_label>)ata-relay-purpose\s*=\s*(?P<label>{_VALUE})"
    rf"|[^\s\"'>/=]++(?:\s*=\s*{_VALUE})?|[^>]))*)"
)

# The scan runs case-sensitively on a lower-cased copy of the text (same offsets): this is about
# twice as fast as IGNORECASE. All branches start with "<", which the engine searches quickly.
_SCAN_PATTERN = (
    # An ordinary comment (not "<!--[if ...]>"): consumed, so nothing inside is seen (Rule 2).
    # "<!-->" and "<!--->" are complete (empty) comments, as in "<!--[if !mso]><!-->".
    # The bodies of comments and style blocks run to the first end marker; they are read in
    # runs of characters that cannot start one ("[^-]++") rather than by a lazy "[\s\S]*?",
    # which tries the end marker after every character (half the scan of a CSS-heavy email).
    r"<(?:!--(?!\[if)(?:>|->|(?:[^-]++|-(?!->))*+(?:-->|\Z))"
    # A style block: its CSS is searched for url().
    r"|style(?=[\s>])" + _ATTRS + r">(?P<css>(?:[^<]++|<(?!/style\s*>))*+)(?:</style\s*>|\Z)"
    # The elements that fetch an image.
    r"|(?P<name>img|source|amp-img|amp-anim|input|v:image|v:fill|v:imagedata)(?=[\s/>])"
    + _ELEMENT_ATTRS
    + r">)"
)
_SCAN = re.compile(_SCAN_PATTERN)
_SCAN_ANYCASE = re.compile(_SCAN_PATTERN, re.IGNORECASE)
# Other tags with a background attribute or a url() in their style are found from these words.
_URL_HOOK = re.compile(re.escape("url("))
_URL_HOOK_SPELLINGS = re.compile("url\\(|URL\\(|Url\\(")
_URL_SPELLINGS = ("url", "URL", "Url")
_BACKGROUND_HOOKS = (re.compile("background"),)
# Separate literals: a regex alternation has no literal prefix to search for, and is slower.
_BACKGROUND_HOOK_SPELLINGS = tuple(
    re.compile(w) for w in ("background", "BACKGROUND", "Background")
)
# "url(" is found from its "(": a single character is searched with memchr, twenty times faster
# than a four-character word, and most HTML has few parentheses. Past this many the text is
# CSS-heavy and the regex takes over for the rest.
_PAREN_LIMIT = 32

_SPACE = " \t\r\n\f"  # HTML whitespace, as htmlattrs.trimmed strips it
_SIZE_WORD = re.compile("[wW][iI][dD][tT][hH]|[hH][eE][iI][gG][hH][tT]")
_TAG = re.compile(r"<([a-zA-Z][\w:.-]*)(" + _ATTRS + r")>")
_CLOSE = re.compile(r"\s*</(img|amp-img|amp-anim|v:image|v:fill|v:imagedata)\s*>", re.IGNORECASE)
_AMP_CLOSE = re.compile(r"</amp-(?:img|anim)\s*>", re.IGNORECASE)
_AMP_OPEN = re.compile(r"<amp-(?:img|anim)(?=[\s/>])", re.IGNORECASE)


def _element_end(text: str, name: str, tag_end: int) -> int:
    """Where the removable unit of an image element ends (Rule 4)."""
    if text[tag_end - 2] == "/":
        return tag_end
    if name in ("amp-img", "amp-anim"):
        # The closing tag may follow fallback children; it must be this element's own (no
        # other AMP image starts before it), or the removal would swallow unrelated content.
        m = _AMP_CLOSE.search(text, tag_end)
        if m is None or _AMP_OPEN.search(text, tag_end, m.start()):
            return tag_end
        return m.end()
    m = _CLOSE.match(text, tag_end)
    if m is not None and m.group(1).lower() == name:
        return m.end()
    return tag_end


_SRC_KINDS = {
    "img": ElementKind.IMG,
    "amp-img": ElementKind.AMP_IMG,
    "amp-anim": ElementKind.AMP_IMG,
    "v:image": ElementKind.VML,
    "v:fill": ElementKind.VML,
    "v:imagedata": ElementKind.VML,
}
_SRCSET_ELEMENTS = frozenset({"img", "source", "amp-img", "amp-anim"})
_G = _SCAN.groupindex


_G_WIDTH, _G_HEIGHT, _G_STYLE = _G["width"], _G["height"], _G["style"]


def _regs_size(
    text: str,
    lower: str,
    regs: tuple[tuple[int, int], ...],
    cache: dict[tuple[str | None, ...], BoxSize],
) -> BoxSize:
    """Declared size of a scanned element, read from the captured groups (see Element._size).
    Newsletters repeat the same size attributes on every product image: ``cache`` (one per
    scan) maps the written values to their size."""
    w, h, st = regs[_G_WIDTH], regs[_G_HEIGHT], regs[_G_STYLE]
    key = (text[w[0] : w[1]], text[h[0] : h[1]], text[st[0] : st[1]])
    size = cache.get(key)
    if size is None:
        size = cache[key] = _parse_size(text, lower, regs)
    return size


def _parse_size(text: str, lower: str, regs: tuple[tuple[int, int], ...]) -> BoxSize:
    width = pixel_value(text, regs[_G_WIDTH])
    height = pixel_value(text, regs[_G_HEIGHT])
    style_start, style_end = regs[_G_STYLE]
    css = NO_SIZE
    # Most content images have a style without any size: skip the CSS regex for them.
    if style_start >= 0 and _SIZE_WORD.search(lower, style_start, style_end):
        style_start, style_end = attr_value(text, (style_start, style_end))
        css = css_size(text, style_start, style_end)
    if css is NO_SIZE:
        return NO_SIZE if width is None and height is None else BoxSize(width, height)
    return BoxSize(
        css.width if css.width is not None else width,
        css.height if css.height is not None else height,
        css.max_width,
        css.max_height,
    )


_G_SRC, _G_SRCSET, _G_LABEL, _G_AT_LABEL = (_G[g] for g in ("src", "srcset", "label", "at_label"))
_G_CSS = _G["css"]
# Groups read first for every match: width, height, style (the size key), then name, srcset, label.
_HEAD = tuple(_G[g] for g in ("width", "height", "style", "name", "srcset", "label"))
_URL_START = operator.itemgetter(2)  # Found.url_start
_ELEMENT_KINDS = frozenset({ElementKind.IMG, ElementKind.AMP_IMG, ElementKind.VML})
_TAG_NAME = re.compile(r"<([\w:-]+)")


def removal_end(text: str, found: Found) -> int:
    """End of the removable unit of a src reference: the element's own closing tag is looked
    for only here, for the few references that are trackers (Rule 4)."""
    if found.kind not in _ELEMENT_KINDS or found.removal_end != found.elem_end:
        return found.removal_end
    m = _TAG_NAME.match(text, found.elem_start)
    return _element_end(text, m.group(1).lower(), found.elem_end) if m else found.removal_end


def _image_element(
    text: str, lower: str, m: re.Match[str], name: str, sizes: dict[tuple[str | None, ...], BoxSize]
) -> list[Found]:
    """src and srcset of an image element (its style and background come from the hooks)."""
    regs = m.regs
    kind = _SRC_KINDS.get(name)
    if name == "input":  # rare: read its type the slower, general way
        type_span = read_attrs(text, m.start() + 6, m.end() - 1).get("type")
        if type_span and text[type_span[0] : type_span[1]].strip().lower() == "image":
            kind = ElementKind.INPUT_IMAGE
    src = regs[_G_SRC]
    srcset = regs[_G_SRCSET] if name in _SRCSET_ELEMENTS else (-1, -1)
    if (kind is None or src[0] < 0) and srcset[0] < 0:
        return []
    start, end = m.span()
    size = _regs_size(text, lower, regs, sizes)
    label: str | None = None
    label_start = label_end = -1
    label_span = regs[_G_LABEL]
    if label_span[0] >= 0:
        value_start, value_end = attr_value(text, label_span)
        label = text[value_start:value_end]
        label_start = with_space(text, regs[_G_AT_LABEL][0] - 1)  # the group follows the "d"
        label_end = label_span[1]
    found: list[Found] = []
    if kind is not None and src[0] >= 0:
        url_start, url_end = attr_value(text, src)
        if url_start < url_end:
            raw = text[url_start:url_end]
            # removal_end is the tag's end until removal_end() looks for a closing tag.
            item = Found(kind, raw, url_start, url_end, start, end, start, end, size, label,
                         label_start, label_end)  # fmt: skip
            found.append(item)
    if srcset[0] >= 0:
        attrs: Attrs = {"srcset": (*attr_value(text, srcset), 0)}
        element = Element(text, start, end, attrs)
        element.size, element.label = size, label
        element.label_start, element.label_end = label_start, label_end
        srcset_kind = ElementKind.SOURCE_SRCSET if name == "source" else ElementKind.IMG_SRCSET
        found.extend(srcset_found(element, srcset_kind, attrs["srcset"]))
    return found


def _style_block(text: str, start: int, end: int) -> list[Found]:
    found = []
    for ref in css_urls(text, start, end):
        body = block_bounds(text, start, end, ref.url_start)
        found.append(
            Found(
                ElementKind.STYLE_BLOCK,
                ref.raw,
                ref.url_start,
                ref.url_end,
                ref.decl_start,
                ref.decl_end,
                ref.decl_start,
                ref.decl_end,
                css_size(text, body[0], body[1]),
                None,
                -1,
                -1,
            )
        )
    return found


def _enclosing_tag(text: str, pos: int) -> re.Match[str] | None:
    """The start tag that contains ``pos`` (a hook inside an attribute), if any."""
    limit = pos
    for _ in range(4):  # a "<" inside an earlier attribute value: look a little further back
        lt = text.rfind("<", 0, limit)
        if lt < 0:
            return None
        m = _TAG.match(text, lt)
        if m is not None and m.end() > pos:
            return m
        limit = lt
    return None


def _url_hooks(lower: str, ascii_text: bool) -> list[int]:
    """Positions of "url(" (or, in non-ASCII text, its usual spellings)."""
    positions: list[int] = []
    spellings = ("url",) if ascii_text else _URL_SPELLINGS
    paren = lower.find("(", 3)
    seen = 0
    while paren >= 0:
        seen += 1
        if seen > _PAREN_LIMIT:
            # The regex takes over from this "(" on (words starting at paren - 3 or later):
            # the earlier words all start before, so none is counted twice or missed.
            word = _URL_HOOK if ascii_text else _URL_HOOK_SPELLINGS
            positions += [m.start() for m in word.finditer(lower, paren - 3)]
            break
        if lower.startswith(spellings, paren - 3):
            positions.append(paren - 3)
        paren = lower.find("(", paren + 1)
    return positions


def _hooks(lower: str) -> list[int]:
    """Positions of the hook words. ``lower`` is lower-cased when the text is ASCII; otherwise
    it is the text itself, and the usual spellings are looked for (an odd mix such as
    "bAckground" in a non-ASCII message is missed: lower-casing non-ASCII text costs more than
    the whole scan). A compiled literal searches faster than ``str.find`` for "background"."""
    ascii_text = lower.isascii()
    backgrounds = _BACKGROUND_HOOKS if ascii_text else _BACKGROUND_HOOK_SPELLINGS
    positions = _url_hooks(lower, ascii_text)
    positions += [m.start() for word in backgrounds for m in word.finditer(lower)]
    positions.sort()
    return positions


def _inside(spans: list[tuple[int, int]], pos: int) -> bool:
    n = bisect.bisect_right(spans, (pos, 1 << 62)) - 1
    return n >= 0 and spans[n][0] <= pos < spans[n][1]


def _hooked(text: str, lower: str, skipped: list[tuple[int, int]]) -> list[Found]:
    """``background`` attributes and style ``url()`` of any tag, found from the hook words."""
    found: list[Found] = []
    skip_until = -1
    for pos in _hooks(lower):
        if pos < skip_until or _inside(skipped, pos):
            continue
        tag = _enclosing_tag(text, pos)
        if tag is None:
            continue
        skip_until = tag.end()
        element = Element(text, tag.start(), tag.end(), read_attrs(text, tag.start(2), tag.end(2)))
        found.extend(style_and_background(element))
    return found


def scan_html(text: str) -> list[Found]:
    """All image references of one HTML text, in document order."""
    found: list[Found] = []
    if text.isascii():  # lower-casing ASCII is cheap and keeps every offset
        lower = text.lower()
        matches = _SCAN.finditer(lower)
    else:  # non-ASCII lower-casing is slow and may change lengths: scan the original
        lower = text
        matches = _SCAN_ANYCASE.finditer(text)
    skipped: list[tuple[int, int]] = []  # comments and style blocks: no tag inside
    sizes: dict[tuple[str | None, ...], BoxSize] = {}
    append = found.append
    new = tuple.__new__
    img = ElementKind.IMG
    for m in matches:
        # One call for the groups the common image needs (strings of the scanned text), in an
        # order that lets the tuple serve as the size cache key (see below).
        head = m.group(*_HEAD)
        name, srcset, label = head[3], head[4], head[5]
        if name is None:  # a comment or a style block
            skipped.append(m.span())
            css_start, css_end = m.span(_G_CSS)
            if css_start >= 0:
                found.extend(_style_block(text, css_start, css_end))
            continue
        url_start, url_end = m.span(_G_SRC)
        # The common newsletter image, an <img> with a src but no srcset and no label, is read
        # here without a call: this is _image_element's result for it, at a third of the cost.
        if name == "img" and url_start >= 0 and srcset is None and label is None:
            if text[url_start] in "\"'":
                url_start += 1
                url_end -= 1
            if url_start < url_end and (text[url_start] in _SPACE or text[url_end - 1] in _SPACE):
                url_start, url_end = trimmed(text, url_start, url_end)
            if url_start < url_end:
                # The key holds the width, height and style as scanned (lower-cased when the
                # text is ASCII: the size readers ignore case, so equal keys mean equal sizes).
                size = sizes.get(head)
                if size is None:
                    size = sizes[head] = _parse_size(text, lower, m.regs)
                start, end = m.span()
                # tuple.__new__ builds the NamedTuple without its Python-level __new__.
                append(new(Found, (img, text[url_start:url_end], url_start, url_end, start, end,
                                   start, end, size, None, -1, -1)))  # fmt: skip
            continue
        found.extend(_image_element(text, lower, m, name.lower(), sizes))
    found.extend(_hooked(text, lower, skipped))
    found.sort(key=_URL_START)
    return found
