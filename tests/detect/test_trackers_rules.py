"""Rule-file errors of the detection tables name file, line and key; local overrides work."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.detect.trackers import load_detection
from relay.errors import RulesError
from relay.rulefiles import load_rules
from tests.support.trackers import copy_detection_rules, detection_rules, only, run

GOOD = """
[[tracker]]
id = "acme-open"
description = "ACME open pixel"
vendor = "ACME"
hosts = ["*.acme-mail.example"]
path = '/open/'
examples = ["https://t.acme-mail.example/open/abc"]
"""


def _load(folder: Path, trackers: str, heuristics: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "trackers.toml").write_text(trackers, encoding="utf-8")
    if heuristics:
        (folder / "heuristics.toml").write_text(heuristics, encoding="utf-8")
    load_detection(load_rules(folder))


def _line_of(text: str, needle: str) -> int:
    return next(n for n, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("old", "new", "key", "message"),
    [
        ("path = '/open/'", "pathh = '/open/'", "pathh", "unknown key"),
        ("path = '/open/'", "path = '/open/(['", "path", "not a valid regular expression"),
        ('vendor = "ACME"', 'vendor = "ACME"\npurpose = "marketing"', "purpose", "is not one of"),
        ('vendor = "ACME"', 'vendor = "ACME"\nno_consent = "delete"', "no_consent", "is not one"),
        ('hosts = ["*.acme-mail.example"]', 'hosts = ["acme mail.example"]', "hosts", "not a host"),
        ("examples = [", "identifying_params = [1]\nexamples = [", "identifying_params", "list"),
        ("https://t.acme", "https://other", "examples", "matched by no rule"),
    ],
)
def test_tracker_errors_name_file_line_and_key(
    tmp_path: Path, old: str, new: str, key: str, message: str
) -> None:
    text = GOOD.replace(old, new)
    with pytest.raises(RulesError) as caught:
        _load(tmp_path, text)
    error = str(caught.value)
    line = _line_of(text, f"{key} =")
    assert f"{tmp_path / 'trackers.toml'}:{line}: [[tracker]] 'acme-open' key {key!r}" in error
    assert message in error


def test_missing_vendor_and_missing_match(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"trackers\.toml:2: .*'acme-open'.*'vendor'"):
        _load(tmp_path, GOOD.replace('vendor = "ACME"\n', ""))
    text = GOOD.replace('hosts = ["*.acme-mail.example"]\n', "").replace("path = '/open/'\n", "")
    with pytest.raises(RulesError, match="needs 'hosts', 'path' or both"):
        _load(tmp_path, text.replace('examples = ["https://t.acme-mail.example/open/abc"]', ""))


def test_example_caught_by_an_earlier_rule(tmp_path: Path) -> None:
    shadowed = GOOD + GOOD.replace('"acme-open"', '"acme-open-2"')
    with pytest.raises(RulesError, match=r"acme-open-2.*matched by rule 'acme-open' first"):
        _load(tmp_path, shadowed)


def test_heuristic_errors(tmp_path: Path) -> None:
    unknown = '[[heuristic]]\nid = "moon-phase"\ndescription = "?"\n'
    with pytest.raises(RulesError, match=r"heuristics\.toml:1: .*unknown heuristic id"):
        _load(tmp_path / "a", GOOD, unknown)
    bad_value = '[[heuristic]]\nid = "tiny-size"\ndescription = "x"\nmax_area = "25"\n'
    with pytest.raises(RulesError, match=r"heuristics\.toml:4: .*key 'max_area'.*whole number"):
        _load(tmp_path / "b", GOOD, bad_value)
    bad_table = "[detection]\nrepeated_image_count = 1\n"
    with pytest.raises(RulesError, match=r"heuristics\.toml:2: .*repeated_image_count"):
        _load(tmp_path / "c", GOOD, bad_table)
    bad_kit = '[[heuristic]]\nid = "kit-path"\ndescription = "x"\npatterns = [\'/(?=x)\']\n'
    with pytest.raises(RulesError, match=r"heuristics\.toml:4: .*key 'patterns'.*RE2"):
        _load(tmp_path / "d", GOOD, bad_kit)


def test_bad_content_cdn_list(tmp_path: Path) -> None:
    (tmp_path / "lists").mkdir(parents=True)
    (tmp_path / "lists" / "content_cdns.txt").write_text("cdn.example.com\nnot a host\n")
    with pytest.raises(RulesError, match=r"content_cdns\.txt: 'not a host'"):
        _load(tmp_path, GOOD)


def test_local_override_switches_a_rule_off_and_adds_one(tmp_path: Path) -> None:
    shipped = copy_detection_rules(tmp_path / "shipped")
    local = tmp_path / "local"
    local.mkdir()
    (local / "trackers.toml").write_text(
        '[[tracker]]\nid = "mailchimp-open"\nenabled = false\n' + GOOD, encoding="utf-8"
    )
    rules = load_detection(load_rules(shipped, local))
    mailchimp = "https://x.us1.list-manage.com/track/open.php?u=1&id=2&e=3"
    assert run(rules, f'<img src="{mailchimp}" width="300" height="200">').candidates == ()
    acme = only(run(rules, '<img src="https://t.acme-mail.example/open/abc" alt="">'))
    assert (acme.rule, acme.vendor) == ("acme-open", "ACME")


def test_shipped_rules_load(tmp_path: Path) -> None:
    rules = detection_rules(tmp_path)
    assert len(rules.trackers) >= 60
    assert len(rules.click_trackers) >= 10
    assert rules.digest.startswith("sha256:")
