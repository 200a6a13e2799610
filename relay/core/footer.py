"""Footer: fill the app's ``{{relay:...}}`` placeholders and add the withdrawal link.      pure

Input: the parsed message, the placeholders detection found, this recipient's page URLs
(``withdraw_url``, ``preferences_url``, ``consent_url``), the wording for the language, and the
facts the footer states (the controller's name, the purposes kept, consent or legacy basis).
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
        unsubscribing. It brings its own background and colours (``!important``, on a table
        cell with ``bgcolor`` for Outlook), so that text and link keep a WCAG AA contrast
        (above 4.5:1) on any template, dark ones included.
Rule 4: what is added fits the part's charset: the HTML footer is pure ASCII (character
        references), the text footer loses its accents when the charset cannot carry them.
Rule 5: locked parts (signed or encrypted) and parts without decoded text are never edited.
Rule 6: no I/O: the wording comes in as a mapping (``[footer.<lang>]`` of the rule files).
Rule 7: the footer says what is true of this copy: it "contains" trackers (it is only added
        when one stays), names the controller and the purposes kept, and speaks of objecting
        when every kept tracker rests on the legacy regime (the recipient never consented).
"""

from __future__ import annotations

import html
import re
import string
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from relay.model import Edit, ParsedMessage, Part, Placeholder, Purpose, Span

# Used when the rule files give no wording for a language (or none at all).
DEFAULT_WORDING: dict[str, dict[str, str]] = {
    "fr": {
        "text": "Cet e-mail contient des traceurs (pixels de suivi) que {controller} utilise "
        "avec votre consentement pour : {purposes}.",
        "link_text": "Retirer mon consentement au suivi",
        "legacy_text": "Cet e-mail contient des traceurs (pixels de suivi) que {controller} "
        "utilise pour : {purposes}. Vous pouvez vous y opposer à tout moment.",
        "legacy_link_text": "M'opposer à ce suivi",
        "sender": "l'expéditeur",
        "any_purpose": "les finalités décrites sur la page de retrait",
        "purpose_deliverability": "la mesure de la délivrabilité",
        "purpose_campaign_performance": "la mesure de la performance des campagnes",
        "purpose_cross_context_profiling": "le ciblage publicitaire hors des e-mails",
        "purpose_fraud_detection": "la détection de la fraude",
        "purpose_authentication_security": "la sécurisation de l'authentification",
    },
    "en": {
        "text": "This email contains trackers (tracking pixels) that {controller} uses with "
        "your consent for: {purposes}.",
        "link_text": "Withdraw my consent to tracking",
        "legacy_text": "This email contains trackers (tracking pixels) that {controller} uses "
        "for: {purposes}. You can object to them at any time.",
        "legacy_link_text": "Object to this tracking",
        "sender": "the sender",
        "any_purpose": "the purposes described on the withdrawal page",
        "purpose_deliverability": "deliverability measurement",
        "purpose_campaign_performance": "campaign performance measurement",
        "purpose_cross_context_profiling": "advertising profiles used outside email",
        "purpose_fraud_detection": "fraud detection",
        "purpose_authentication_security": "authentication security",
    },
}
WORDING_KEYS = frozenset(DEFAULT_WORDING["en"])
# The only fields a sentence may name; a text without them is accepted as written.
_FIELDS = {"text": {"controller", "purposes"}, "legacy_text": {"controller", "purposes"}}


@dataclass(frozen=True, slots=True)
class FooterFacts:
    """What the footer of one recipient's copy states (Rule 7)."""

    controller: str = ""  # the controller's name; "" = the wording's ``sender``
    purposes: tuple[Purpose, ...] = ()  # purposes of the trackers kept on consent or legacy
    legacy: bool = False  # every kept tracker rests on the legacy regime: "object"


def check_wording(table: Mapping[str, object]) -> list[tuple[str, str]]:
    """(dotted key, problem) for each wrong entry of the rule files' ``[footer]`` tables."""
    problems: list[tuple[str, str]] = []
    for lang, values in table.items():
        if not isinstance(values, Mapping):
            problems.append((f"footer.{lang}", "must be a table of strings"))
            continue
        for key, value in values.items():
            problem = _wording_problem(str(key), value)
            if problem:
                problems.append((f"footer.{lang}.{key}", problem))
    return problems


def _wording_problem(key: str, value: object) -> str | None:
    if key not in WORDING_KEYS:
        return f"unknown key (known: {', '.join(sorted(WORDING_KEYS))})"
    if not isinstance(value, str):
        return "must be a string"
    try:
        named = {f for _t, f, _s, _c in string.Formatter().parse(value) if f is not None}
    except ValueError as exc:
        return f"bad braces: {exc}"
    allowed = _FIELDS.get(key, set())
    unknown = sorted(named - allowed)
    if unknown:
        shown = ", ".join("{" + f + "}" for f in sorted(allowed)) or "none"
        return f"unknown field {{{unknown[0]}}} (allowed: {shown})"
    return None


def footer_sentences(words: Mapping[str, str], facts: FooterFacts) -> tuple[str, str]:
    """The footer's sentence and link text for these facts, in the wording's language."""
    labels = [words.get(f"purpose_{p.value}") or p.value for p in facts.purposes]
    purposes = ", ".join(dict.fromkeys(labels)) or words["any_purpose"]
    prefix = "legacy_" if facts.legacy else ""
    values = {"controller": facts.controller or words["sender"], "purposes": purposes}
    return words[f"{prefix}text"].format_map(values), words[f"{prefix}link_text"]


_BODY_CLOSE = re.compile(r"</body\s*>", re.IGNORECASE)
_HTML_LANG = re.compile(r"<html\b[^>]*?\blang\s*=\s*[\"']?([A-Za-z]{2})", re.IGNORECASE)

# Rule 3: the footer's own white background; text #333333 (12.6:1) and link #0b4f9c (8.1:1).
_TABLE_STYLE = "border-collapse:collapse;margin:16px 0 0;width:100%;background-color:#ffffff"
_CELL_STYLE = (
    "background-color:#ffffff !important;color:#333333 !important;padding:10px 12px;"
    "text-align:center;font-family:Arial,Helvetica,sans-serif;font-size:12px;line-height:1.5;"
    "border-top:1px solid #d0d0d0"
)
_LINK_STYLE = "color:#0b4f9c !important;text-decoration:underline"


def declared_language(message: ParsedMessage) -> str | None:
    """ "fr" or "en" when the message says so (Content-Language first, then the first
    ``<html lang=...>``), None when it declares no language the relay speaks."""
    value = (message.header("Content-Language") or "").strip().lower()[:2]
    if value in DEFAULT_WORDING:
        return value
    for part in message.parts:
        if part.content_type == "text/html" and part.text:
            found = _HTML_LANG.search(part.text[:4096])
            if found and found.group(1).lower() in DEFAULT_WORDING:
                return found.group(1).lower()
    return None


def message_language(message: ParsedMessage) -> str:
    """The footer's language: the declared one, else French."""
    return declared_language(message) or "fr"


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


def html_footer(url: str, sentences: tuple[str, str], lang: str, newline: str = "\r\n") -> str:
    """The HTML footer, broken into short lines: a 7bit or 8bit part must keep every line
    under SMTP's 998 octets, and the footer must not lengthen the line it is inserted in."""
    text, link_text = (_ascii_html(s) for s in sentences)
    href = html.escape(url, quote=True)
    return newline.join(
        (
            f'<table role="presentation" lang="{html.escape(lang)}" width="100%" '
            f'cellpadding="0" cellspacing="0" border="0" style="{_TABLE_STYLE}"><tr>',
            f'<td align="center" bgcolor="#ffffff" style="{_CELL_STYLE}">',
            f"{text}<br>",
            f'<a href="{href}" style="{_LINK_STYLE}">{link_text}</a></td></tr></table>',
            "",
        )
    )


def text_footer(url: str, sentences: tuple[str, str], newline: str, charset: str = "utf-8") -> str:
    text, link_text = (_fit(s, charset) for s in sentences)
    return f"{newline}{text}{newline}{link_text}: {url}{newline}"


def _html_insert(part: Part, url: str, sentences: tuple[str, str], lang: str) -> Edit:
    text = part.text or ""
    closes = list(_BODY_CLOSE.finditer(text))
    # The last </body>: an earlier one may sit inside a comment or a quoted HTML example.
    at = closes[-1].start() if closes else len(text)
    newline = part.newline or "\r\n"
    lead = "" if at == 0 or text[at - 1] in "\r\n" else newline  # start on a line of its own
    return Edit(part.index, Span(at, at), lead + html_footer(url, sentences, lang, newline))


def _text_insert(part: Part, url: str, sentences: tuple[str, str]) -> Edit:
    text = part.text or ""
    newline = part.newline or "\n"
    # Start on a fresh line: a last line without its line ending must not run into ours.
    lead = "" if text.endswith(("\n", "\r")) or not text else newline
    footer = text_footer(url, sentences, newline, part.charset)
    return Edit(part.index, Span(len(text), len(text)), lead + footer)


def footer_edits(
    message: ParsedMessage,
    placeholders: Sequence[Placeholder],
    urls: Mapping[str, str],
    *,
    inject: bool,
    lang: str,
    wording: Mapping[str, str],
    facts: FooterFacts | None = None,
) -> list[Edit]:
    edits = placeholder_edits(message, placeholders, urls)
    url = urls.get("withdraw_url")
    placed = any(ph.name == "withdraw_url" for ph in placeholders)
    if not inject or placed or not url:
        return edits
    defaults = DEFAULT_WORDING.get(lang, DEFAULT_WORDING["fr"])
    words = {key: wording.get(key) or defaults[key] for key in defaults}
    sentences = footer_sentences(words, facts or FooterFacts())
    for part in message.parts:
        if not _is_body(message, part):
            continue
        if part.content_type == "text/html":
            edits.append(_html_insert(part, url, sentences, lang))
        elif part.content_type == "text/plain":
            edits.append(_text_insert(part, url, sentences))
    return edits
