"""The HTML tokenizer of the trackers stage, as regular expression sources (one pass, linear).

Stage: detection (pure), read by ``htmlscan`` and ``hrefs``. Input: nothing (module constants).
Output: regex sources that read HTML the way a browser's tokenizer does (WHATWG HTML, section
13.2.5), so that the scanner sees exactly the tags, attributes and comments a mail client sees.

Rule 1: a tag is ``<`` + an ASCII letter + a name up to whitespace, "/" or ">"; its attributes
        follow the tokenizer's states: a name may start with "=" and may hold quotes; only the
        first non-space character after a name's "=" can open a quoted value; an unquoted value
        runs to whitespace or ">". A tag ends at the first ">" outside a quoted value.
Rule 2: a comment runs from ``<!--`` to the first ``-->`` or ``--!>``; ``<!-->`` and
        ``<!--->`` are complete. Outlook's ``<!--[if ...]>`` is not skipped (Outlook renders
        what it holds). A ``<style>`` element's content is raw text up to ``</style``.
Rule 3: every construct ends at its terminator or at the end of the text, never "not found":
        a tag without ">", a quote never closed, a comment never closed, all run to the end.
        So each match consumes everything it read and the next search starts after it: the
        scan reads every character a bounded number of times, whatever the input (linear).
Rule 4: every repetition is possessive or atomic, every alternative starts differently, so no
        input makes the engine backtrack over what it already read.
Rule 5: these sources are meant for lower-cased ASCII text (or IGNORECASE), and HTML whitespace
        is exactly space, tab, LF, FF and CR.
Rule 6: one deliberate difference from the standard, towards seeing more: a "<" inside a tag
        name ends that tag there and starts a new one (``<p<img src=...>``), as lenient mail
        parsers read it; a browser reads one tag named "p<img". Both readings end at the same
        ">", so this can add references and never hide one.
"""

from __future__ import annotations

import re

WS = r"[ \t\n\r\f]"
_NOT_WS = r" \t\n\r\f"

# An attribute value after "=" and optional whitespace (Rule 1, Rule 3).
VALUE = r"""(?:"[^"]*+(?:"|\Z)|'[^']*+(?:'|\Z)|[^ \t\n\r\f>]*+)"""

# One attribute: name, then optionally "=" and a value.
ATTRIBUTE = rf"[^{_NOT_WS}/>][^{_NOT_WS}/>=]*+(?:{WS}*+={WS}*+{VALUE})?"

# The attribute list of a start tag, up to (not including) its ">" or the end of the text.
ATTRS = rf"(?:[{_NOT_WS}/]++|{ATTRIBUTE})*+"

TAG_END = r"(?:>|\Z)"

# An ordinary comment (Rule 2), from "<!--".
COMMENT = r"<!--(?!\[if)(?:>|->|(?:[^-]++|-(?!-!?>))*+(?:--!?>|\Z))"

# A <style> element from "<style": its start tag, its CSS (group ``css``) and its end tag.
STYLE = (
    rf"<style(?={WS}|[/>]|\Z){ATTRS}{TAG_END}"
    rf"(?P<css>(?:[^<]++|<(?!/style(?:{WS}|[/>]|\Z)))*+)"
    rf"(?:</style[^>]*+>?|\Z)"
)

# Hook-free pieces: an attribute list in which no attribute is named "background", no name
# holds "url(" and no value holds "url(", "-set(" (image-set) or a backslash (a CSS escape may
# write "url(" otherwise): the ways an ordinary tag fetches an image. A tag whose attributes
# are not all hook-free is read by the scanner; the others are skipped inside the engine. No
# name may start with "=" here, and an unquoted value never starts with a quote: whenever the
# hook-free reading cannot go on, the quiet tag fails as a whole (it never re-reads a quoted
# value another way), and the tag is read with ``ATTRS`` instead.
_NO_HOOK = r"u(?!rl\()|-(?!set\()"
_VALUE_QUIET = (
    rf"""(?:"(?:[^"u\\-]++|{_NO_HOOK})*+(?:"|\Z)|'(?:[^'u\\-]++|{_NO_HOOK})*+(?:'|\Z)"""
    rf"|(?:[^{_NOT_WS}>\"'u\\-]|{_NO_HOOK})(?:[^{_NOT_WS}>u\\-]++|{_NO_HOOK})*+|(?=>|\Z))"
)
# A name never takes up where a value stopped at a hook: it holds no "url(", "-set(" nor
# backslash either (``<td style=u\72l(...)>`` must not read as a value "u" and a name).
_NAME_QUIET = (
    rf"(?!background(?:{WS}|[/>=]|\Z))(?:[^{_NOT_WS}/>=u\\-]|{_NO_HOOK})"
    rf"(?:[^{_NOT_WS}/>=u\\-]++|{_NO_HOOK})*+"
)
_ATTRS_QUIET = rf"(?:[{_NOT_WS}/]++|{_NAME_QUIET}(?:{WS}*+={WS}*+{_VALUE_QUIET})?)*+"

# Names of the elements that fetch an image from their own attributes (HTML turns <image> into
# <img>). A quiet tag never starts one of them, nor <style>: those are always read.
IMAGE_ELEMENTS = (
    r"(?:img|image|source|amp-img|amp-anim|input|v:image|v:fill|v:imagedata"
    r"|link|base|video|audio|track|object|embed|frame|feimage)"
)
_NAME_END = rf"(?={WS}|[/>]|\Z)"
# Nor a raw text element (whose content must be skipped with it).
_QUIET_TAG_NAME = (
    r"(?!i(?:mg|mage|nput|frame)|s(?:ource|tyle|cript)|amp-|v:|t(?:itle|extarea|rack)|xmp"
    r"|no(?:embed|frames)|plaintext|link|base|video|audio|object|embed|frame|feimage)"
    rf"[a-z][^{_NOT_WS}/<>]*+"
)

# Elements whose content is text, not markup, up to their end tag (RCDATA and RAWTEXT; script
# is read as RAWTEXT). <noscript> is markup here: mail clients run no script. <plaintext> makes
# the rest of the document text.
_RAW_NAMES = ("title", "textarea", "script", "xmp", "iframe", "noembed", "noframes")
# One alternative per name (no back-reference: Python's re mis-handles groups inside the
# possessive loops these pieces go into).


def _raw_text(attrs: str, names: tuple[str, ...] = _RAW_NAMES) -> str:
    """Raw text elements from after their "<", their start tag's attributes read by ``attrs``."""
    return "|".join(
        [
            rf"{name}{_NAME_END}{attrs}{TAG_END}(?:[^<]++|<(?!/{name}(?:{WS}|[/>]|\Z)))*+"
            for name in names
        ]
        + [rf"plaintext{_NAME_END}{attrs}{TAG_END}[\s\S]*+"]
    )


# An <iframe> fetches its src: it is never quiet, its start tag is always read.
_RAW_TEXT = _raw_text(_ATTRS_QUIET, tuple(n for n in _RAW_NAMES if n != "iframe"))
# A raw text element whose start tag has a hook (a <textarea> with a background image): its
# start tag is read, its content skipped.
RAW_TEXT_HOOKED = _raw_text(ATTRS)

# After a "<": markup that fetches nothing and hides nothing: end tags (their attributes are
# tokenized like a start tag's), ordinary comments, "<!--[if ...]>" (Outlook shows what follows),
# bogus comments ("<!x ...>", "<?...>", "</ ...>") that end at the first ">", and nothing at all
# (a "<" that starts no tag).
_OTHER = (
    rf"/[a-z][^{_NOT_WS}/<>]*+(?:(?=<)|{ATTRS}{TAG_END})"
    r"|/(?![a-z])[^>]*+>?"
    rf"|{COMMENT[1:]}"
    r"|!--\[if[^>]*+>?"
    r"|!(?!--)[^>]*+>?"
    r"|\?[^>]*+>?"
    r"|(?![a-z!/?])"
)

# What the engine reads without reporting it: text, quiet tags, raw text elements and the rest of
# ``_OTHER``. A run of these stops only before something the scanner must read (or at the end of
# the text). The "<" is read once, then the alternatives start with different characters.
# ``QUIET_NO_HOOKS`` reads every other tag as quiet: it is for a text in which neither
# "background", "url(", "-set(" nor a backslash occurs anywhere, where it gives the same
# result as ``QUIET`` faster
# (the hook checks cost a third of the scan).
QUIET = rf"(?:[^<]++|<(?:{_RAW_TEXT}|{_QUIET_TAG_NAME}(?:(?=<)|{_ATTRS_QUIET}{TAG_END})|{_OTHER}))"
QUIET_NO_HOOKS = (
    rf"(?:[^<]++|<(?:{_RAW_TEXT}|{_QUIET_TAG_NAME}(?:(?=<)|{ATTRS}{TAG_END})|{_OTHER}))"
)
NAME_END = _NAME_END
# The end of an element name before its attributes, with Rule 6's "<".
ELEMENT_NAME_END = rf"(?={WS}|[/<>]|\Z)"


def first_attr(group: str, rest: str) -> str:
    """An attribute alternative that captures ``group`` only for the first attribute of that
    name (HTML keeps the first of duplicates, even one without a value); a later one is read
    as any other attribute. The group holds "=" and the value (empty without a value): see
    ``htmlattrs.eq_value``. The conditional names its group by number, filled in by
    ``numbered`` (Python's re lets a conditional refer forward to a group by number only)."""
    return (
        rf"(?(@{group}@)(?!)|{rest}(?={WS}|[/>=]|\Z)"
        rf"(?P<{group}>(?:{WS}*+={WS}*+{VALUE})?+))"
    )


def numbered(pattern: str) -> str:
    """``pattern`` with each ``(?(@name@)`` conditional given the number of group ``name``."""
    plain = re.sub(r"\(\?\(@\w+@\)\(\?!\)\|", "(?:", pattern)
    numbers = re.compile(plain).groupindex
    return re.sub(r"@(\w+)@", lambda m: str(numbers[m.group(1)]), pattern)
