"""The other fetches of an HTML text: style sheets, media, embedded objects, SVG images, base.

Stage: detection (pure), used by ``htmlscan`` for the rarer elements it stops at. Input: the
text and one start tag's span. Output: ``Found`` records (kind ``other``) of every URL a
browser requests for that element from its own attributes, and the ``<base href>`` span.

Rule 1: what Chromium fetches, beyond images (``htmlscan`` Rule 1): ``<link href>`` whose
        ``rel`` holds a token that loads or contacts something (``stylesheet``, ``icon``,
        ``preload``, ``prefetch``, ``dns-prefetch``, ``preconnect``, ``modulepreload``,
        ``manifest`` ... : any token but the navigational ones, so an unknown token counts);
        ``<video poster src>``, ``<audio src>``, ``<source src>`` and ``<track src>`` (in
        media), ``<object data>``, ``<embed src>``, ``<iframe src>``, ``<frame src>``, and in
        SVG ``<image href>``/``<image xlink:href>`` and ``<feImage href>`` (HTML reads a bare
        ``<image>`` as ``<img>``: its ``src`` stays an image's).
Rule 2: removal: a ``<link>`` goes whole (a tag with no content); elsewhere the attribute goes
        with the whitespace before it, so the element (its layout, its other sources) stays.
Rule 3: ``<base href>``: the first ``<base>`` with an ``href`` sets the document's base URL, as
        in browsers; later ones change nothing. The scanner reports its value's span once.
"""

from __future__ import annotations

from relay.detect.htmlattrs import Element, Found, after_quote, read_attrs, trimmed, with_space
from relay.model import ElementKind

# rel tokens that only describe a hyperlink (HTML "link types" creating no external resource).
_NAVIGATIONAL = frozenset(
    {
        "alternate", "author", "bookmark", "canonical", "external", "help", "license", "next",
        "nofollow", "noopener", "noreferrer", "opener", "prev", "search", "tag", "me",
        "privacy-policy", "terms-of-service", "shortlink", "amphtml", "archives", "index",
        "first", "last", "up", "start", "contents",
    }
)  # fmt: skip
# Element name -> the attributes it fetches from, in the order browsers read them.
FETCH_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "link": ("href",),
    "video": ("poster", "src"),
    "audio": ("src",),
    "source": ("src",),
    "track": ("src",),
    "object": ("data",),
    "embed": ("src",),
    "iframe": ("src",),
    "frame": ("src",),
    "image": ("href", "xlink:href"),
    "feimage": ("href", "xlink:href"),
}
_SPACE = " \t\n\r\f"


def link_fetches(rel: str) -> bool:
    """Whether a ``<link>`` with this ``rel`` makes the browser load or contact its href."""
    tokens = rel.lower().split()
    return any(token not in _NAVIGATIONAL for token in tokens)


def fetching_attributes(
    text: str, name: str, start: int, attrs_start: int, end: int
) -> list[Found]:
    """The references of one start tag named ``name`` (Rule 1), in attribute order."""
    wanted = FETCH_ATTRIBUTES.get(name)
    if wanted is None:
        return []
    attrs = read_attrs(text, attrs_start, end)
    if name == "link":
        rel = attrs.get("rel")
        if rel is None or not link_fetches(text[rel[0] : rel[1]]):
            return []
    element = Element(text, start, end, attrs)
    found: list[Found] = []
    for attr in wanted:
        span = attrs.get(attr)
        if span is None:
            continue
        url = trimmed(text, span[0], span[1])
        if url[0] >= url[1]:
            continue
        if name == "link":
            removal = (start, end)
        else:
            removal = (with_space(text, span[2]), after_quote(text, span[1]))
        found.append(element.found(ElementKind.OTHER, url, removal))
    return found


def base_href(text: str, attrs_start: int, end: int) -> tuple[int, int] | None:
    """The span of a ``<base>`` tag's href value (trimmed, maybe empty), or None without an
    href (Rule 3)."""
    span = read_attrs(text, attrs_start, end).get("href")
    if span is None:
        return None
    return trimmed(text, span[0], span[1])
