"""edits_for and render: actions, overlap rules, encodings kept, bytes outside edits untouched."""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

import pytest

from relay.core.parse import parse_message
from relay.core.rewrite import TRANSPARENT_GIF, edits_for, normalise, render, strip_url
from relay.core.transfer import qp_encode
from relay.model import (
    Action,
    Basis,
    Candidate,
    Decision,
    Edit,
    ElementKind,
    ParsedMessage,
    Purpose,
    Span,
)

TRACKER = "https://t.example.net/o.gif?u=42&c=7"


def message(body: bytes, cte: str = "8bit", charset: str = "utf-8", nl: bytes = b"\r\n") -> bytes:
    head = [
        b"From: shop@example.org",
        b"X-Relay-Category: marketing",
        b'Content-Type: multipart/alternative; boundary="bb"',
        b"",
        b"--bb",
        b"Content-Type: text/plain; charset=utf-8",
        b"",
        b"plain",
        b"--bb",
        b"Content-Type: text/html; charset=" + charset.encode(),
        b"Content-Transfer-Encoding: " + cte.encode(),
        b"",
    ]
    return nl.join(head) + nl + body + nl + b"--bb--" + nl


def html_part(parsed: ParsedMessage) -> int:
    return next(p.index for p in parsed.parts if p.content_type == "text/html")


def candidate(
    text: str,
    url_written: str,
    element: ElementKind = ElementKind.IMG,
    *,
    part: int = 1,
    params: tuple[str, ...] = (),
    cid: int = 0,
) -> Candidate:
    """A candidate for the <img ...> holding ``url_written`` in ``text``."""
    at = text.index(url_written)
    start, end = text.rindex("<", 0, at), text.index(">", at) + 1
    label = text.find(' data-relay-purpose="', start, end)
    purpose_span = None
    if label != -1:
        purpose_span = Span(label, text.index('"', label + 21) + 1)
    return Candidate(
        id=cid,
        part_index=part,
        url=url_written.replace("&amp;", "&"),
        element=element,
        element_text=text[start:end],
        rule="test",
        vendor="test",
        purpose=Purpose.CAMPAIGN_PERFORMANCE,
        no_consent_action=Action.NEUTRALISE,
        identifying_params=params,
        url_span=Span(at, at + len(url_written)),
        removal_span=Span(start, end),
        width=1,
        height=1,
        purpose_attr_span=purpose_span,
    )


def decide(c: Candidate, action: Action) -> list[Decision]:
    return [Decision(c.id, action, Basis.NONE, "test")]


HTML = (
    '<p>caf\u00e9</p><img src="https://t.example.net/o.gif?u=42&amp;c=7" width="1" height="1"'
    ' data-relay-purpose="fraud_detection">\r\n<p>end</p>'
)


def rendered_html(action: Action, urls: dict[int, str] | None = None, **kw: object) -> str:
    raw = message(HTML.encode())
    parsed = parse_message(raw)
    c = candidate(HTML, "https://t.example.net/o.gif?u=42&amp;c=7")
    out = render(parsed, edits_for([c], decide(c, action), urls or {}))
    return parse_message(out).parts[1].text or ""


def test_keep_only_removes_the_purpose_label() -> None:
    assert rendered_html(Action.KEEP) == HTML.replace(' data-relay-purpose="fraud_detection"', "")


def test_gateway_and_minimise_write_the_given_url_escaped() -> None:
    for action in (Action.GATEWAY, Action.MINIMISE):
        text = rendered_html(action, {0: "https://relay.example/g?t=1&k=2"})
        assert 'src="https://relay.example/g?t=1&amp;k=2" width="1"' in text
        assert "t.example.net" not in text and "data-relay-purpose" not in text


def test_gateway_without_url_is_an_error() -> None:
    with pytest.raises(ValueError, match="no gateway URL given for candidate 0"):
        rendered_html(Action.GATEWAY)


def test_neutralise_keeps_the_element_and_its_size() -> None:
    text = rendered_html(Action.NEUTRALISE)
    assert f'<img src="{TRANSPARENT_GIF}" width="1" height="1">' in text
    assert base64.b64decode(TRANSPARENT_GIF.split(",")[1])[:6] == b"GIF89a"
    assert len(base64.b64decode(TRANSPARENT_GIF.split(",")[1])) == 43


def test_remove_deletes_the_element_and_the_label_inside_it() -> None:
    assert rendered_html(Action.REMOVE) == "<p>caf\u00e9</p>\r\n<p>end</p>"


def test_strip_params_drops_named_query_params_and_path_segments() -> None:
    assert strip_url("https://h/a/b/c?u=1&x=2&u=3#f", ["u"]) == "https://h/a/b/c?x=2#f"
    assert strip_url("https://h/a/b/c?u=1", ["path:2", "u"]) == "https://h/a/c"
    assert strip_url("https://h/a/b/c.gif", ["path:-1"]) == "https://h/a/b"
    assert strip_url("https://h/?%75=1&v=2", ["u"]) == "https://h/?v=2"
    raw = message(HTML.encode())
    parsed = parse_message(raw)
    c = candidate(HTML, "https://t.example.net/o.gif?u=42&amp;c=7", params=("u",))
    text = parse_message(render(parsed, edits_for([c], decide(c, Action.STRIP_PARAMS), {})))
    assert 'src="https://t.example.net/o.gif?c=7" width' in (text.parts[1].text or "")


def test_neutralise_in_srcset_removes_only_that_candidate() -> None:
    html = '<img src="a.png" srcset="a2.png 2x, https://t.example.net/p.gif 3x">'
    raw = message(html.encode())
    parsed = parse_message(raw)
    at = html.index("https://t.example.net")
    c = Candidate(
        id=0,
        part_index=1,
        url="https://t.example.net/p.gif",
        element=ElementKind.IMG_SRCSET,
        element_text=html,
        rule="t",
        vendor="t",
        purpose=Purpose.CAMPAIGN_PERFORMANCE,
        no_consent_action=Action.NEUTRALISE,
        identifying_params=(),
        url_span=Span(at, at + 27),
        removal_span=Span(html.index(", https"), at + 30),
    )
    out = render(parsed, edits_for([c], decide(c, Action.NEUTRALISE), {}))
    assert parse_message(out).parts[1].text == '<img src="a.png" srcset="a2.png 2x">'


def test_normalise_resolves_overlaps_deterministically() -> None:
    outer = Edit(0, Span(10, 20), "")
    inner = Edit(0, Span(12, 15), "x")
    insert_at_start = Edit(0, Span(10, 10), "<")
    insert_inside = Edit(0, Span(11, 11), "?")
    partial = Edit(0, Span(18, 25), "y")
    other_part = Edit(1, Span(12, 15), "z")
    edits = [partial, inner, other_part, outer, insert_inside, insert_at_start]
    expected = [insert_at_start, Edit(0, Span(10, 25), "y"), other_part]
    assert normalise(edits) == expected
    assert normalise(list(reversed(edits))) == expected
    assert normalise([outer, outer]) == [outer]


def corpus_entries(corpus_dir: Path) -> list[dict[str, object]]:
    entries: list[dict[str, object]] = json.loads((corpus_dir / "labels.json").read_text())
    return entries


def test_corpus_render_without_edits_is_identity(corpus_dir: Path) -> None:
    for path in sorted(corpus_dir.glob("*.eml")):
        raw = path.read_bytes()
        assert render(parse_message(raw), []) == raw, path.name


def new_lines(before: bytes, after: bytes) -> list[bytes]:
    old = set(before.split(b"\r\n"))
    return [line for line in after.split(b"\r\n") if line not in old]


def test_corpus_removing_each_tracker_changes_only_its_element(corpus_dir: Path) -> None:
    for entry in corpus_entries(corpus_dir):
        name = str(entry["file"])
        raw = (corpus_dir / name).read_bytes()
        parsed = parse_message(raw)
        html = parsed.parts[html_part(parsed)]
        assert html.text is not None
        trackers = entry["trackers"]
        assert isinstance(trackers, list) and trackers
        edits = []
        for tracker in trackers:
            at = html.text.find(tracker["element"])
            assert at != -1, (name, tracker["where"])
            edits.append(Edit(html.index, Span(at, at + len(tracker["element"])), ""))
        out = render(parsed, edits)
        again = parse_message(out)
        assert again.defects == (), name
        text = again.parts[html.index].text or ""
        for tracker in trackers:
            assert tracker["url"] not in text, name
        expected = html.text
        for edit in sorted(edits, key=lambda e: -e.span.start):
            expected = expected[: edit.span.start] + expected[edit.span.end :]
        assert text == expected, name
        # Everything before the edited body and after it is byte-identical.
        assert out[: html.body_start] == raw[: html.body_start], name
        assert out[len(out) - (len(raw) - html.body_end) :] == raw[html.body_end :], name
        body = out[html.body_start : len(out) - (len(raw) - html.body_end)]
        assert all(len(line) <= 76 for line in new_lines(raw, body)), name
        assert render(again, []) == out


def test_quoted_printable_edit_reencodes_only_the_touched_lines() -> None:
    html = ("<p>" + "lorem ipsum " * 40 + "</p>\r\n") * 5 + f'<img src="{TRACKER}">\r\n<p>end</p>'
    body = binascii.b2a_qp(html.encode())
    raw = message(body, "quoted-printable")
    parsed = parse_message(raw)
    c = candidate(html, TRACKER)
    out = render(parsed, edits_for([c], decide(c, Action.REMOVE), {}))
    assert parse_message(out).parts[1].text == html.replace(f'<img src="{TRACKER}">', "")
    # Only the tracker's encoded line changed (it is now empty); its neighbours are untouched.
    gone = [line for line in raw.split(b"\r\n") if line not in out.split(b"\r\n")]
    assert gone == [b'<img src=3D"https://t.example.net/o.gif?u=3D42&c=3D7">']
    assert out == raw.replace(gone[0], b"")
    assert all(len(line) <= 76 for line in out.split(b"\r\n"))
    # The lines before the tracker's line are untouched.
    prefix = raw[: raw.index(b"<img")]
    assert out.startswith(prefix)


def test_quoted_printable_with_odd_equals_still_edits_in_place() -> None:
    # "=G1" and "=Z" are not escapes: decoders keep them literally.
    img = binascii.b2a_qp(f'<img src="{TRACKER}">\r\n'.encode())
    body = b"a = b =G1 \r\n" * 20 + img + b"tail =Z\r\n" * 3
    raw = message(body, "quoted-printable")
    parsed = parse_message(raw)
    text = parsed.parts[1].text or ""
    c = candidate(text, TRACKER)
    out = render(parsed, edits_for([c], decide(c, Action.REMOVE), {}))
    assert parse_message(out).parts[1].text == text.replace(f'<img src="{TRACKER}">', "")
    assert out.startswith(raw[: raw.index(b"<img")])


@pytest.mark.parametrize("nl", [b"\r\n", b"\n"])
def test_base64_keeps_line_length_newline_and_leading_lines(nl: bytes) -> None:
    html = "<p>" + "x" * 3000 + f'</p><img src="{TRACKER}"><p>' + "y" * 500 + "</p>"
    encoded = base64.encodebytes(html.encode()).replace(b"\n", nl).rstrip()
    raw = message(encoded, "base64", nl=nl)
    parsed = parse_message(raw)
    c = candidate(html, TRACKER)
    out = render(parsed, edits_for([c], decide(c, Action.NEUTRALISE), {}))
    assert parse_message(out).parts[1].text == html.replace(TRACKER, TRANSPARENT_GIF)
    body_start = parsed.parts[1].body_start
    lines = out[body_start:].split(nl)
    assert all(len(line) == 76 for line in lines[:-3])
    assert out[: body_start + 3000] == raw[: body_start + 3000]


def test_eight_bit_text_keeps_its_charset() -> None:
    for charset in ("utf-8", "iso-8859-1", "iso-2022-jp", "utf-16"):
        word = "\u65e5\u672c" if charset == "iso-2022-jp" else "\u00e9t\u00e9"
        html = f"<p>{word} vu</p><p>x</p>"
        raw = message(html.encode(charset), charset=charset)
        parsed = parse_message(raw)
        text = parsed.parts[1].text or ""
        assert text == html, charset
        at = text.index("<p>x")
        out = render(parsed, [Edit(1, Span(at, at), f"<p>{word}</p>")])
        again = parse_message(out).parts[1]
        assert again.text == html[:at] + f"<p>{word}</p>" + html[at:], charset
        assert again.codec == parsed.parts[1].codec


def test_characters_the_part_cannot_carry_are_replaced() -> None:
    raw = message(b"<p>a</p>", "7bit", "us-ascii")
    parsed = parse_message(raw)
    out = render(parsed, [Edit(1, Span(8, 8), "\u00e9\u2192")])
    assert b"<p>a</p>&#233;&#8594;" in out
    plain = parse_message(b"Content-Type: text/plain\r\n\r\nRetirer\r\n")
    out = render(plain, [Edit(0, Span(7, 7), " le consentement \u00e0 \u00e9t\u00e9 \u2192")])
    assert out.endswith(b"Retirer le consentement a ete ?\r\n")


def test_headers_removed_and_added_in_the_message_newline_style() -> None:
    raw = message(b"<p>x</p>", nl=b"\n")
    parsed = parse_message(raw)
    strip = parsed.headers_named("X-Relay-Category")
    out = render(parsed, [], remove_headers=strip, add_headers=[("X-Test", "a\r\n\tb")])
    assert out == b"X-Test: a\n\tb\n" + raw.replace(b"X-Relay-Category: marketing\n", b"")
    with pytest.raises(ValueError, match="line break not followed by white space"):
        render(parsed, [], add_headers=[("X-Test", "a\r\nBcc: victim@example.org")])
    with pytest.raises(ValueError, match="invalid header name"):
        render(parsed, [], add_headers=[("X Test", "a")])


def test_locked_and_out_of_range_edits_are_refused() -> None:
    raw = (
        b'Content-Type: multipart/signed; boundary="s"\r\n\r\n--s\r\n'
        b"Content-Type: text/html\r\n\r\n<img src=x>\r\n--s--\r\n"
    )
    parsed = parse_message(raw)
    with pytest.raises(ValueError, match="signed or encrypted"):
        render(parsed, [Edit(0, Span(0, 1), "")])
    plain = parse_message(message(b"<p>x</p>"))
    with pytest.raises(ValueError, match="outside part 1"):
        render(plain, [Edit(1, Span(5, 50), "")])
    with pytest.raises(ValueError, match="message has 2 parts"):
        render(plain, [Edit(7, Span(0, 0), "x")])


def test_second_rendering_reuses_the_layout_and_gives_the_same_bytes(corpus_dir: Path) -> None:
    raw = (corpus_dir / "reference-67k.eml").read_bytes()
    parsed = parse_message(raw)
    text = parsed.parts[1].text or ""
    at = text.index("https://u123.ct.sendgrid.net")
    edits = [Edit(1, Span(at, text.index('"', at)), TRANSPARENT_GIF)]
    first = render(parsed, edits)
    assert render(parsed, edits) == first
    assert render(parse_message(raw), edits) == first


def test_insertion_into_undecodable_text_uses_the_declared_charset() -> None:
    raw = message(b"<p>\xff</p>")  # declared utf-8, read as latin-1
    parsed = parse_message(raw)
    assert parsed.parts[1].codec == "latin-1"
    out = render(parsed, [Edit(1, Span(0, 0), "\u00e9")])
    assert b"\xc3\xa9<p>\xff</p>" in out


@pytest.mark.parametrize("soft_end", [False, True])
def test_qp_encode_wraps_without_splitting_escapes(soft_end: bool) -> None:
    for shift in range(4):
        data = b"a" * shift + "\u00e9=".encode() * 60 + b" end \r\nnext\t\r\n" + b"x " * 50
        encoded = qp_encode(data, soft_end=soft_end, newline=b"\r\n")
        lines = encoded.split(b"\r\n")
        assert all(len(line) <= 76 for line in lines)
        assert b"end=20\r\nnext=09\r\n" in encoded
        assert binascii.a2b_qp(encoded) == data
        assert encoded.endswith(b"=\r\n") == soft_end


def test_qp_edit_removing_a_hard_line_break_keeps_lines_short() -> None:
    """Found by the property test in CI: an edit that swallows the line break at the end of
    the re-encoded region must not glue the next, unchanged line onto a long one."""
    raw = (
        b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
        b"=3D3D<p>\r\n<p>\r\n--b--\r\n"
    )
    message = parse_message(raw)
    text = message.parts[0].text
    assert text == "=3D<p>\r\n<p>"
    edit = Edit(0, Span(1, 8), "<p><p>" + "x" * 90 + "\u65e5\u672c")
    out = render(message, [edit])
    again = parse_message(out)
    assert again.parts[0].text == text[:1] + edit.replacement + text[8:]
    body = out[message.parts[0].body_start : out.rindex(b"--b--")]
    assert all(len(line) <= 76 for line in body.splitlines())
    assert body.endswith(b"\r\n<p>\r\n")  # the next line is byte-identical


# ---------------------------------------------------------------------------------------------
# Issue 10 item 7: no edit makes a line longer than 998 octets (RFC 5321 4.5.3.1.6).


def _eight_bit(html: str, cte_header: bool = True) -> bytes:
    cte = b"Content-Transfer-Encoding: 8bit\r\n" if cte_header else b""
    return (
        b'From: news@shop.example\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; '
        b'boundary="b"\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n'
        b"Caf\xc3\xa9 du jour\r\n--b\r\nContent-Type: text/html; charset=utf-8\r\n" + cte + b"\r\n"
        + html.encode() + b"\r\n--b--\r\n"
    )  # fmt: skip


@pytest.mark.parametrize("cte_header", [True, False])
def test_an_edit_that_would_pass_998_octets_requotes_the_part(cte_header: bool) -> None:
    pixel = '<img src="https://u1.ct.sendgrid.net/wf/open?upn=abc" width="1" height="1">'
    long_line = "<td>Caf\u00e9 " + "x" * 800 + pixel + "</td>"
    html = f"<html><body><table><tr>\r\n{long_line}\r\n</tr></table></body></html>"
    raw = _eight_bit(html, cte_header)
    parsed = parse_message(raw)
    text = parsed.parts[1].text or ""
    url = "https://u1.ct.sendgrid.net/wf/open?upn=abc"
    start = text.index(url)
    gateway = "https://relay.example/g/" + "t" * 240
    out = render(parsed, [Edit(1, Span(start, start + len(url)), gateway)])
    assert all(len(line) <= 998 for line in out.split(b"\r\n"))
    again = parse_message(out)
    assert again.defects == ()
    assert again.parts[1].cte == "quoted-printable"
    assert again.parts[1].text == text.replace(url, gateway)
    # Everything but the HTML part's body and its transfer-encoding field is as received.
    assert out[: parsed.parts[1].header_start] == raw[: parsed.parts[1].header_start]
    assert out.endswith(b"\r\n--b--\r\n")
    head = out[parsed.parts[1].header_start : out.index(b"\r\n\r\n", parsed.parts[1].header_start)]
    assert head.count(b"Content-Transfer-Encoding: quoted-printable") == 1
    assert b"8bit" not in head


OLD_URL = "https://t.example.net/o.gif?u=42&c=7"


def test_an_edit_that_stays_under_998_octets_is_spliced_in_place() -> None:
    html = '<html><body><p>Hi</p><img src="https://t.example.net/o.gif?u=42&c=7"></body></html>'
    raw = _eight_bit(html)
    parsed = parse_message(raw)
    start = html.index("https://t.example")
    out = render(
        parsed, [Edit(1, Span(start, start + len(OLD_URL)), "https://relay.example/g/short")]
    )
    assert b"Content-Transfer-Encoding: 8bit" in out
    assert out == raw.replace(
        b"https://t.example.net/o.gif?u=42&c=7", b"https://relay.example/g/short"
    )


def test_a_long_line_the_sender_wrote_and_the_relay_did_not_touch_stays() -> None:
    html = "<p>" + "y" * 1200 + "</p>\r\n" + '<img src="https://t.example.net/o.gif?u=42&c=7">'
    raw = _eight_bit(html)
    parsed = parse_message(raw)
    start = (parsed.parts[1].text or "").index("https://t.example")
    out = render(
        parsed, [Edit(1, Span(start, start + len(OLD_URL)), "https://relay.example/g/short")]
    )
    assert b"8bit" in out and b"y" * 1200 in out  # not ours to fix
