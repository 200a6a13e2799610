"""Footer edits: placeholders filled, withdrawal link injected where needed, spans exact."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from relay.core.footer import DEFAULT_WORDING, footer_edits, message_language
from relay.model import Edit, Header, ParsedMessage, Part, Placeholder, Span

URLS = {
    "withdraw_url": "https://relay.example/w/TOKEN.mac?x=1&y=2",
    "preferences_url": "https://relay.example/p/TOKEN2.mac",
    "consent_url": "https://relay.example/c/TOKEN3.mac",
}
FR = {"text": "Traceurs soumis à consentement.", "link_text": "Retirer mon consentement"}
HTML = (
    '<html lang="en"><body><p>Hello</p>'
    '<a href="https://shop.example/unsubscribe">Unsubscribe</a>\r\n</BODY>\r\n</html>\r\n'
)
TEXT = "Hello\r\nUnsubscribe: https://shop.example/unsubscribe"


def part(
    index: int, ctype: str, text: str | None, *, newline: str = "\r\n", locked: bool = False
) -> Part:
    return Part(
        index, ctype, "utf-8", "quoted-printable", 0, 0, 0, text, locked=locked, newline=newline
    )


def message(*parts: Part, language: str | None = None) -> ParsedMessage:
    headers = (Header("Content-Language", language, 0, 0),) if language else ()
    return ParsedMessage(b"", headers, 0, tuple(parts))


def apply(text: str, edits: Sequence[Edit]) -> str:
    for e in sorted(edits, key=lambda e: e.span.start, reverse=True):
        text = text[: e.span.start] + e.replacement + text[e.span.end :]
    return text


def placeholders_in(index: int, text: str) -> list[Placeholder]:
    found = []
    for name in ("withdraw_url", "preferences_url", "consent_url"):
        marker = "{{relay:" + name + "}}"
        start = text.find(marker)
        while start != -1:
            found.append(Placeholder(index, name, Span(start, start + len(marker))))
            start = text.find(marker, start + 1)
    return found


def test_placeholders_are_filled_and_nothing_is_injected() -> None:
    html = '<body><a href="{{relay:withdraw_url}}">stop</a> {{relay:preferences_url}}</body>'
    text = "Stop: {{relay:withdraw_url}}\nConsent: {{relay:consent_url}}\n"
    msg = message(part(0, "text/plain", text), part(1, "text/html", html))
    phs = placeholders_in(0, text) + placeholders_in(1, html)
    edits = footer_edits(msg, phs, URLS, inject=True, lang="fr", wording=FR)
    assert len(edits) == 4  # only the placeholders: the app placed its own withdrawal link
    out_text = apply(text, [e for e in edits if e.part_index == 0])
    out_html = apply(html, [e for e in edits if e.part_index == 1])
    assert out_text == (f"Stop: {URLS['withdraw_url']}\nConsent: {URLS['consent_url']}\n")
    # In HTML the URL is escaped (& -> &amp;), so that a browser reads back the same URL.
    assert 'href="https://relay.example/w/TOKEN.mac?x=1&amp;y=2"' in out_html
    assert "{{relay:" not in out_html + out_text
    for e in edits:
        source = text if e.part_index == 0 else html
        assert source[e.span.start : e.span.end].startswith("{{relay:")


def test_injected_before_body_close_and_at_end_of_text() -> None:
    msg = message(part(0, "text/plain", TEXT), part(1, "text/html", HTML))
    edits = footer_edits(msg, [], URLS, inject=True, lang="fr", wording=FR)
    assert len(edits) == 2
    html_edit = next(e for e in edits if e.part_index == 1)
    text_edit = next(e for e in edits if e.part_index == 0)
    assert html_edit.span == Span(HTML.index("</BODY>"), HTML.index("</BODY>"))
    assert text_edit.span == Span(len(TEXT), len(TEXT))
    out_html = apply(HTML, [html_edit])
    out_text = apply(TEXT, [text_edit])
    assert out_html.startswith(HTML[: HTML.index("</BODY>")])
    assert out_html.endswith(HTML[HTML.index("</BODY>") :])
    footer = html_edit.replacement
    assert footer.startswith("<table") and footer.endswith("</table>\r\n")
    assert 'href="https://relay.example/w/TOKEN.mac?x=1&amp;y=2"' in footer
    assert "Retirer mon consentement" in footer
    assert footer.isascii() and "&#224;" in footer  # "à" as a character reference
    # No external resource: no image, stylesheet, font or script in what we add.
    for forbidden in ("<img", "<link", "url(", "@import", "<script", "src="):
        assert forbidden not in footer
    # The unsubscribe link stays on its own line, apart from ours.
    assert "Unsubscribe</a>\r\n<table" in out_html
    # Text part: a fresh line in the part's own newline style, then the link.
    assert out_text == (
        TEXT + "\r\n\r\nTraceurs soumis à consentement.\r\n"
        f"Retirer mon consentement: {URLS['withdraw_url']}\r\n"
    )
    assert "\n" not in out_text.replace("\r\n", "")


def test_lf_text_part_keeps_lf() -> None:
    msg = message(part(0, "text/plain", "Hi\n", newline="\n"))
    (edit,) = footer_edits(msg, [], URLS, inject=True, lang="en", wording={})
    assert "\r" not in edit.replacement
    assert edit.replacement.startswith("\nThis email contains trackers (tracking pixels) that ")
    assert DEFAULT_WORDING["en"]["sender"] in edit.replacement


def test_nothing_without_inject_and_locked_parts_untouched() -> None:
    msg = message(part(0, "text/html", HTML, locked=True), part(1, "text/plain", None))
    assert footer_edits(msg, [], URLS, inject=True, lang="fr", wording=FR) == []
    msg = message(part(0, "text/html", HTML))
    assert footer_edits(msg, [], URLS, inject=False, lang="fr", wording=FR) == []


def test_html_without_body_close_gets_the_footer_at_the_end() -> None:
    msg = message(part(0, "text/html", "<p>hi</p>"))
    (edit,) = footer_edits(msg, [], URLS, inject=True, lang="fr", wording=FR)
    assert edit.span == Span(9, 9)


def test_language_from_header_then_html_lang() -> None:
    assert message_language(message(part(0, "text/html", HTML))) == "en"
    assert message_language(message(part(0, "text/html", HTML), language="fr-FR")) == "fr"
    assert message_language(message(part(0, "text/plain", "x"))) == "fr"


def test_wording_is_escaped_in_html() -> None:
    msg = message(part(0, "text/html", "<body></body>"))
    wording = {"text": "<b>a & b</b>", "link_text": "x"}
    (edit,) = footer_edits(msg, [], URLS, inject=True, lang="fr", wording=wording)
    assert "&lt;b&gt;a &amp; b&lt;/b&gt;" in edit.replacement


@given(
    before=st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=40),
    after=st.text(alphabet=st.characters(blacklist_characters="<>"), max_size=40),
)
def test_only_the_insertion_point_changes(before: str, after: str) -> None:
    html = f"<body>{before}</body>{after}"
    msg = message(part(0, "text/html", html))
    (edit,) = footer_edits(msg, [], URLS, inject=True, lang="fr", wording=FR)
    out = apply(html, [edit])
    at = html.rfind("</body>")
    assert out[:at] == html[:at]
    assert out[at + len(edit.replacement) :] == html[at:]


def test_text_footer_fits_the_part_charset() -> None:
    ascii_part = Part(0, "text/plain", "us-ascii", "7bit", 0, 0, 0, "Hi\n", newline="\n")
    (edit,) = footer_edits(message(ascii_part), [], URLS, inject=True, lang="fr", wording=FR)
    assert edit.replacement.isascii() and "soumis a consentement" in edit.replacement
    (edit,) = footer_edits(message(part(0, "text/plain", "Hi\n")), [], URLS, inject=True,
                           lang="fr", wording=FR)  # fmt: skip
    assert "soumis à consentement" in edit.replacement


def test_the_html_footer_never_lengthens_the_body_close_line() -> None:
    # Issue 10 item 7: a 584-octet line ending in "</body>" became 1,195 octets with the
    # footer on it, and the upstream refused it ("500 Line too long").
    line = "<td>" + "x" * 576 + "</td></body>"
    html = f"<html><body><table><tr>\n{line}\n</html>\n"
    msg = message(part(0, "text/html", html, newline="\n"))
    (edit,) = footer_edits(msg, [], URLS, inject=True, lang="en", wording={})
    out = apply(html, [edit])
    assert edit.replacement.startswith("\n<table") and edit.replacement.endswith("</table>\n")
    assert line.replace("</body>", "") in out.splitlines()  # the sender's line, not longer
    assert max(len(x) for x in out.splitlines()) < 998
