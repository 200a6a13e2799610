"""The footer says what is true of this copy: who, which purposes, "contains", object or
withdraw; its wording is checked at load; it keeps lines short and brings its own colours."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.context import validate_rules
from relay.core.footer import FooterFacts, check_wording, footer_edits
from relay.errors import RulesError
from relay.model import ParsedMessage, Part, Purpose
from relay.settings import RulesSettings, Settings

URLS = {"withdraw_url": "https://relay.example/w/" + "T" * 300}


def part(index: int, ctype: str, text: str) -> Part:
    return Part(index, ctype, "utf-8", "8bit", 0, 0, 0, text, newline="\r\n")


def shipped() -> dict[str, dict[str, str]]:
    rules = validate_rules(Settings(rules=RulesSettings(local_dir="/nonexistent")))
    return {k: dict(v) for k, v in rules.footer_wording.items()}


def test_footer_names_the_controller_and_the_purposes_kept() -> None:
    wording = shipped()
    msg = ParsedMessage(
        b"", (), 0, (part(0, "text/plain", "Hi\r\n"), part(1, "text/html", "<body>x</body>"))
    )
    facts = FooterFacts("Shop SAS", (Purpose.CAMPAIGN_PERFORMANCE, Purpose.FRAUD_DETECTION))
    text, html = footer_edits(
        msg, [], URLS, inject=True, lang="en", wording=wording["en"], facts=facts
    )
    sentence = ("This email contains trackers (tracking pixels) that Shop SAS uses with your "
                "consent for: campaign performance measurement, fraud detection.")  # fmt: skip
    assert sentence in text.replacement and "may contain" not in text.replacement
    assert "Withdraw my consent to tracking: https://relay.example/w/" in text.replacement
    assert "Shop SAS uses with your consent" in html.replacement
    fr = footer_edits(msg, [], URLS, inject=True, lang="fr", wording=wording["fr"], facts=facts)
    assert (
        "que Shop SAS utilise avec votre consentement pour : la mesure de la performance"
        in fr[0].replacement
    )


def test_a_legacy_copy_offers_to_object() -> None:
    wording = shipped()
    msg = ParsedMessage(b"", (), 0, (part(0, "text/plain", "Hi\r\n"),))
    facts = FooterFacts("Shop SAS", (Purpose.CAMPAIGN_PERFORMANCE,), legacy=True)
    (edit,) = footer_edits(
        msg, [], URLS, inject=True, lang="en", wording=wording["en"], facts=facts
    )
    assert "You can object to them at any time." in edit.replacement
    assert "Object to this tracking: https://" in edit.replacement
    assert "consent" not in edit.replacement.lower()
    (fr,) = footer_edits(msg, [], URLS, inject=True, lang="fr", wording=wording["fr"], facts=facts)
    assert "M'opposer à ce suivi" in fr.replacement and "consentement" not in fr.replacement


def test_the_footer_never_makes_a_line_longer_than_smtp_allows() -> None:
    long_line = "<html><body>" + "<p>" + "x" * 900 + "</p></body></html>"
    msg = ParsedMessage(b"", (), 0, (part(0, "text/html", long_line),))
    facts = FooterFacts("A" * 120, tuple(Purpose))
    (edit,) = footer_edits(
        msg, [], URLS, inject=True, lang="fr", wording=shipped()["fr"], facts=facts
    )
    at = edit.span.start
    out = long_line[:at] + edit.replacement + long_line[at:]
    assert max(len(line.encode()) for line in out.split("\r\n")) <= 998
    # Its own background, and colours that win over the template's stylesheet.
    assert 'bgcolor="#ffffff"' in edit.replacement
    assert "background-color:#ffffff !important;color:#333333 !important" in edit.replacement


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"en": {"txt": "x"}}, "footer.en.txt: unknown key"),
        ({"en": {"text": "{sender} tracks"}}, "footer.en.text: unknown field {sender}"),
        ({"en": {"link_text": "Stop {purposes}"}},
         "footer.en.link_text: unknown field {purposes} (allowed: none)"),
        ({"en": {"text": "a { b"}}, "footer.en.text: bad braces"),
        ({"en": {"text": 3}}, "footer.en.text: must be a string"),
    ],
)  # fmt: skip
def test_bad_wording_is_named(table: dict[str, object], problem: str) -> None:
    found = [f"{k}: {p}" for k, p in check_wording(table)]
    assert any(f.startswith(problem) for f in found), found


def test_rules_check_refuses_a_local_footer_with_an_unknown_field(tmp_path: Path) -> None:
    (tmp_path / "footer.toml").write_text('[footer.en]\ntext = "Tracked by {who}"\n')
    with pytest.raises(RulesError) as info:
        validate_rules(Settings(rules=RulesSettings(local_dir=str(tmp_path))))
    assert "footer.toml:2: footer.en.text: unknown field {who}" in str(info.value)
    # The old wording of a local override (no field at all) stays valid.
    (tmp_path / "footer.toml").write_text('[footer.en]\ntext = "This email has trackers."\n')
    assert validate_rules(Settings(rules=RulesSettings(local_dir=str(tmp_path)))).footer_wording
