"""Footer: fill the app's ``{{relay:...}}`` placeholders and add the withdrawal link.      pure

Input: the parsed message, the placeholders detection found, this recipient's page URLs
(``withdraw_url``, ``preferences_url``, ``consent_url``), the wording for the language.
Output: a list of ``Edit`` (character spans of ``Part.text``) for the rewrite stage, which
applies them byte-faithfully; nothing else of the message is touched.

Rule 1: every placeholder is replaced by its URL, HTML-escaped in HTML parts; a placeholder
        whose URL is not given is left as written (the rewrite stage must not guess).
Rule 2: when ``inject`` is true and the app wrote no ``withdraw_url`` placeholder anywhere, a
        small footer is inserted before the last ``</body>`` of each editable text/html part
        (or at its end when there is no ``</body>``) and at the end of each editable
        text/plain part, in the part's own newline style. Where the app placed the link itself,
        nothing is added: one withdrawal link is enough, two would confuse.
Rule 3: the HTML footer uses inline styles only and references no external resource (no
        image, font or stylesheet: it must not itself become a tracker), and it is a block of
        its own, so it never shares a line with an unsubscribe link: refusing tracking is not
        unsubscribing.
Rule 4: what is added fits the part's charset: the HTML footer is pure ASCII (character
        references), the text footer loses its accents when the charset cannot carry them.
Rule 5: locked parts (signed or encrypted) and parts without decoded text are never edited.
Rule 6: no I/O: the wording comes in as a mapping (``[footer.<lang>]`` of the rule files).
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Mapping, Sequence

from relay.model import Edit, ParsedMessage, Part, Placeholder, Span

# Used when the rule files give no wording for a language (or none at all).
DEFAULT_WORDING: dict[str, dict[str, str]] = {
    "fr": {
        "text": "Cet e-mail peut contenir des traceurs soumis à votre consentement.",
        "link_text": "Retirer mon consentement au suivi",
    },
    "en": {
        "text": "This email may contain trackers that rely on your consent.",
        "link_text": "Withdraw my consent to tracking",
    },
}

_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
_HTML_LANG = re.compile(r"<html\b[^>]*?\blang\s*=\s*[\"']?([A-Za-z]{2})", re.IGNORECASE)

# Neutral colours with a contrast ratio above 4.5:1 on white (WCAG AA for small text).
_DIV_STYLE = (
    "margin:16px auto 0;padding:8px 12px;max-width:600px;text-align:center;"
    "font-family:Arial,Helvetica,sans-serif;font-size:12px;line-height:1.5;color:#4d4d4d;"
    "border-top:1px solid #d0d0d0"
)
_LINK_STYLE = "color:#1a4f8b;text-decoration:underline"


def message_language(message: ParsedMessage) -> str:
    """ "fr" or "en": Content-Language first, then the first ``<html lang=...>``; default "fr"."""
    value = (message.header("Content-Language") or "").strip().lower()[:2]
    if value in DEFAULT_WORDING:
        return value
    for part in message.parts:
        if part.content_type == "text/html" and part.text:
            found = _HTML_LANG.search(part.text[:4096])
            if found and found.group(1).lower() in DEFAULT_WORDING:
                return found.group(1).lower()
    return "fr"


_ATTACHMENT = re.compile(rb"^content-disposition:\s*attachment", re.IGNORECASE | re.MULTILINE)


def _editable(part: Part) -> bool:
    return part.text is not None and not part.locked


def _is_body(message: ParsedMessage, part: Part) -> bool:
    """A text part meant to be read as the message, not a text file attached to it."""
    headers = message.raw[part.header_start : part.body_start]
    return _editable(part) and not _ATTACHMENT.search(headers)


def placeholder_edits(
    message: ParsedMessage, placeholders: Sequence[Placeholder], urls: Mapping[str, str]
) -> list[Edit]:
    parts = {p.index: p for p in message.parts}
    edits: list[Edit] = []
    for ph in placeholders:
        part = parts.get(ph.part_index)
        url = urls.get(ph.name)
        if part is None or url is None or not _editable(part):
            continue
        value = html.escape(url, quote=True) if part.content_type == "text/html" else url
        edits.append(Edit(ph.part_index, ph.span, value))
    return edits


def _ascii_html(text: str) -> str:
    # Character references keep the HTML footer pure ASCII: it then fits any part charset.
    return html.escape(text).encode("ascii", "xmlcharrefreplace").decode("ascii")


def _fit(text: str, charset: str) -> str:
    """``text`` if the part's charset can carry it, else without accents (ASCII)."""
    try:
        text.encode(charset or "us-ascii")
        return text
    except (UnicodeEncodeError, LookupError):
        folded = unicodedata.normalize("NFKD", text)
        return "".join(ch for ch in folded if ord(ch) < 128)


def html_footer(url: str, wording: Mapping[str, str], lang: str) -> str:
    text = _ascii_html(wording["text"])
    link_text = _ascii_html(wording["link_text"])
    href = html.escape(url, quote=True)
    return (
        f'<div lang="{html.escape(lang)}" style="{_DIV_STYLE}">{text}<br>'
        f'<a href="{href}" style="{_LINK_STYLE}">{link_text}</a></div>'
    )


def text_footer(url: str, wording: Mapping[str, str], newline: str, charset: str = "utf-8") -> str:
    text, link_text = _fit(wording["text"], charset), _fit(wording["link_text"], charset)
    return f"{newline}{text}{newline}{link_text}: {url}{newline}"


def _html_insert(part: Part, url: str, wording: Mapping[str, str], lang: str) -> Edit:
    text = part.text or ""
    closes = list(_BODY_CLOSE.finditer(text))
    # The last </body>: an earlier one may sit inside a comment or a quoted HTML example.
    # Without one, before the part's last line ending: a message must keep ending in CRLF
    # (the upstream would otherwise get a line break the filter never wrote).
    at = closes[-1].start() if closes else len(text.rstrip("\r\n"))
    return Edit(part.index, Span(at, at), html_footer(url, wording, lang))


def _text_insert(part: Part, url: str, wording: Mapping[str, str]) -> Edit:
    text = part.text or ""
    newline = part.newline or "\n"
    # Start on a fresh line: a last line without its line ending must not run into ours.
    lead = "" if text.endswith(("\n", "\r")) or not text else newline
    footer = text_footer(url, wording, newline, part.charset)
    return Edit(part.index, Span(len(text), len(text)), lead + footer)


def footer_edits(
    message: ParsedMessage,
    placeholders: Sequence[Placeholder],
    urls: Mapping[str, str],
    *,
    inject: bool,
    lang: str,
    wording: Mapping[str, str],
) -> list[Edit]:
    edits = placeholder_edits(message, placeholders, urls)
    url = urls.get("withdraw_url")
    placed = any(ph.name == "withdraw_url" for ph in placeholders)
    if not inject or placed or url is None:
        return edits
    defaults = DEFAULT_WORDING.get(lang, DEFAULT_WORDING["fr"])
    words = {key: wording.get(key) or defaults[key] for key in defaults}
    for part in message.parts:
        if not _is_body(message, part):
            continue
        if part.content_type == "text/html":
            edits.append(_html_insert(part, url, words, lang))
        elif part.content_type == "text/plain":
            edits.append(_text_insert(part, url, words))
    return edits
