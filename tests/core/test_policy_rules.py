"""Loading the policy from rule files: errors naming file:line:key, local overrides merged by id,
``enabled = false``, the catch-all guarantee, the digest, and the per-domain pack choice."""

from __future__ import annotations

import shutil
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from relay.core.decide import decide
from relay.core.policy import RowAction, pack_for
from relay.core.policy_rules import load_policy
from relay.errors import RulesError
from relay.model import Action, Basis, Candidate, Category, ConsentState, ElementKind, Purpose, Span
from relay.rulefiles import SHIPPED_RULES, RuleSet, load_rules
from relay.settings import parse_settings

OWN_FILES = ("policy/fr-cnil-2026.toml", "policy/strict.toml", "classify.toml")


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the shipped policy and classification files, and an empty local folder."""
    shipped, local = tmp_path / "shipped", tmp_path / "local"
    for name in OWN_FILES:
        (shipped / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHIPPED_RULES / name, shipped / name)
    local.mkdir()
    return shipped, local


def load(dirs: tuple[Path, Path]) -> RuleSet:
    return load_rules(dirs[0], dirs[1])


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def line_of(path: Path, fragment: str) -> int:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if fragment in line:
            return number
    raise AssertionError(f"{fragment!r} not in {path}")


def error_of(dirs: tuple[Path, Path]) -> str:
    with pytest.raises(RulesError) as info:
        load_policy(load(dirs))
    return str(info.value)


ROW = """
[[decision]]
id = "{id}"
pack = "fr-cnil-2026"
description = "test row"
{extra}
"""


def test_shipped_rules_load() -> None:
    rules = load_rules()
    policy = load_policy(rules)
    assert policy.digest == rules.digest
    assert set(policy.packs) >= {"fr-cnil-2026", "strict"}
    assert policy.default_pack == "fr-cnil-2026"
    assert policy.requested_categories == {
        Category.TRANSACTIONAL,
        Category.AUTHENTICATION,
        Category.PUBLIC_SERVICE,
        Category.NEWSLETTER,
    }
    assert (policy.publication_date, policy.end_of_grace) == (date(2026, 4, 14), date(2026, 7, 14))
    assert policy.reask_days == 183
    assert policy.default_category is Category.MARKETING
    for pack in policy.packs.values():
        assert pack.rows[-1].catch_all and pack.rows[-1].basis is Basis.NONE


def test_unknown_key_in_a_row_names_file_line_and_key(dirs: tuple[Path, Path]) -> None:
    path = write(
        dirs[1], "x.toml", ROW.format(id="r1", extra='action = "keep"\nbasis = "exempt"\nwhen = 1')
    )
    message = error_of(dirs)
    assert message.startswith(f"{path}:{line_of(path, 'when =')}:")
    assert "'when'" in message and "unknown key" in message


@pytest.mark.parametrize(
    ("extra", "key", "words"),
    [
        ('action = "delete"\nbasis = "none"', "action", "'delete' is not one of"),
        ('action = "remove"\nbasis = "none"\ncategory = ["spam"]', "category", "'spam'"),
        ('action = "remove"\nbasis = "none"\ncategory = "marketing"', "category", "list"),
        ('action = "remove"\nbasis = "none"\npurpose = ["ads"]', "purpose", "'ads'"),
        ('action = "remove"\nbasis = "none"\nconsent = "maybe"', "consent", "'maybe'"),
        ('action = "remove"\nbasis = "none"\nrequested = "yes"', "requested", "true or false"),
        ('action = "gateway"\nbasis = "none"', "basis", "needs a basis"),
        ('action = "gateway"\nbasis = "consent"', "basis", 'consent = "granted"'),
        (
            'action = "gateway"\nbasis = "legacy"\nconsent = "granted"',
            "basis",
            'consent = "legacy"',
        ),
        ('action = "remove"\nbasis = "exempt"', "basis", 'must be "none"'),
        ('action = "remove"\nbasis = "none"\nenabled = "no"', "enabled", "true or false"),
    ],
)
def test_bad_values_name_file_line_and_key(
    dirs: tuple[Path, Path], extra: str, key: str, words: str
) -> None:
    path = write(dirs[1], "x.toml", ROW.format(id="r1", extra=extra))
    message = error_of(dirs)
    assert message.startswith(f"{path}:{line_of(path, f'{key} =')}:"), message
    assert f"key {key!r}" in message and words in message


def test_a_row_needs_a_known_pack_and_an_action(dirs: tuple[Path, Path]) -> None:
    path = write(
        dirs[1],
        "x.toml",
        '[[decision]]\nid = "r"\npack = "nope"\ndescription = "d"\n'
        'action = "remove"\nbasis = "none"\n',
    )
    assert error_of(dirs).startswith(f"{path}:{line_of(path, 'pack =')}:")
    write(dirs[1], "x.toml", ROW.format(id="r1", extra='basis = "none"'))
    assert "missing required key 'action'" in error_of(dirs)


def test_disabling_the_catch_all_is_refused(dirs: tuple[Path, Path]) -> None:
    write(dirs[1], "x.toml", '[[decision]]\nid = "cnil-default"\nenabled = false\n')
    message = error_of(dirs)
    assert "cnil-legacy" in message and "must be a catch-all" in message
    assert str(dirs[0] / "policy" / "fr-cnil-2026.toml") in message


def test_a_catch_all_that_keeps_is_refused(dirs: tuple[Path, Path]) -> None:
    write(dirs[1], "x.toml", '[[decision]]\nid = "cnil-default"\naction = "neutralise"\n')
    load_policy(load(dirs))  # still strips: fine
    write(dirs[1], "x.toml", '[[decision]]\nid = "cnil-default"\naction = "minimise"\n')
    assert "needs a basis" in error_of(dirs)  # the relay's counter still reads the terminal
    write(
        dirs[1],
        "x.toml",
        '[[decision]]\nid = "cnil-default"\naction = "minimise"\nbasis = "exempt"\n',
    )
    assert "must be a catch-all" in error_of(dirs)


def test_a_local_row_lands_after_the_catch_all_unless_placed(dirs: tuple[Path, Path]) -> None:
    extra = (
        'category = ["newsletter"]\npurpose = ["campaign_performance"]\n'
        'action = "remove"\nbasis = "none"'
    )
    path = write(dirs[1], "x.toml", ROW.format(id="no-newsletter-stats", extra=extra))
    message = error_of(dirs)
    assert message.startswith(f"{path}:") and "after the catch-all" in message
    write(
        dirs[1],
        "x.toml",
        ROW.format(id="no-newsletter-stats", extra=extra + '\nbefore = "cnil-consent"'),
    )
    policy = load_policy(load(dirs))
    ids = [r.id for r in policy.packs["fr-cnil-2026"].rows]
    assert ids.index("no-newsletter-stats") == ids.index("cnil-consent") - 1
    write(dirs[1], "x.toml", ROW.format(id="x", extra=extra + '\nbefore = "missing"'))
    assert "no enabled row 'missing'" in error_of(dirs)


def test_local_override_is_merged_by_id(dirs: tuple[Path, Path]) -> None:
    before = load(dirs)
    write(dirs[1], "x.toml", '[[decision]]\nid = "cnil-consent"\naction = "keep"\n')
    after = load(dirs)
    policy = load_policy(after)
    row = next(r for r in policy.packs["fr-cnil-2026"].rows if r.id == "cnil-consent")
    assert row.action is RowAction.KEEP
    assert row.description.startswith("A tracker whose purpose")  # kept from the shipped row
    assert row.basis is Basis.CONSENT
    assert after.digest != before.digest and policy.digest == after.digest


def test_enabled_false_switches_a_row_off(dirs: tuple[Path, Path]) -> None:
    write(dirs[1], "x.toml", '[[decision]]\nid = "cnil-legacy"\nenabled = false\n')
    policy = load_policy(load(dirs))
    assert "cnil-legacy" not in [r.id for r in policy.packs["fr-cnil-2026"].rows]
    state = ConsentState(
        recipient_key="k",
        collected_at=datetime(2025, 1, 1, tzinfo=UTC),
        informed_at=datetime(2026, 5, 1, tzinfo=UTC),
        legacy_purposes=(Purpose.CAMPAIGN_PERFORMANCE,),
    )
    candidate = Candidate(
        0,
        0,
        "https://t/x",
        ElementKind.IMG,
        "<img>",
        "r",
        "v",
        Purpose.CAMPAIGN_PERFORMANCE,
        Action.REMOVE,
        (),
        Span(0, 1),
        Span(0, 1),
    )
    now = datetime(2026, 11, 1, tzinfo=UTC)
    d = decide(candidate, Category.MARKETING, state, policy, "fr-cnil-2026", now)
    assert (d.action, d.policy_rule) == (Action.REMOVE, "cnil-default")


def test_digest_follows_content_not_layout(dirs: tuple[Path, Path]) -> None:
    first = load(dirs).digest
    path = dirs[0] / "policy" / "strict.toml"
    path.write_text("# a new comment\n" + path.read_text(encoding="utf-8"), encoding="utf-8")
    assert load(dirs).digest == first
    write(dirs[1], "x.toml", "[reask]\ndays = 90\n")
    changed = load(dirs)
    assert changed.digest != first and load_policy(changed).reask_days == 90


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('[legacy]\npublication_date = "2026-04-14"\n', "publication_date", "date written like"),
        ("[legacy]\nend_of_grace = 2026-01-01\n", "end_of_grace", "before publication_date"),
        ('[legacy]\ntimezone = "Mars/Olympus"\n', "timezone", "unknown time zone"),
        ("[legacy]\ngrace_days = 90\n", "grace_days", "unknown key"),
        ("[reask]\ndays = -1\n", "days", "whole number"),
        ('[categories]\ndefault = "spam"\n', "default", "'spam' is not one of"),
        ('[categories]\nrequested = ["consent_request"]\n', "requested", "never"),
        ('[categories]\nfallback = "marketing"\n', "fallback", "unknown key"),
        ('[packs.by_sender_domain]\n"shop.example" = "lax"\n', "shop.example", "no pack 'lax'"),
        ('[pack.strict]\ntitle = "x"\n', "title", "unknown key"),
        ('[packs]\nfavourite = "strict"\n', "favourite", "unknown key"),
    ],
)
def test_bad_plain_table_values_name_file_line_and_key(
    dirs: tuple[Path, Path], text: str, key: str, words: str
) -> None:
    path = write(dirs[1], "x.toml", text)
    message = error_of(dirs)
    assert message.startswith(f"{path}:{line_of(path, key)}:"), message
    assert key in message and words in message


def test_a_pack_needs_a_description_and_rows(dirs: tuple[Path, Path]) -> None:
    write(dirs[1], "x.toml", '[pack.empty]\ndescription = "nothing yet"\n')
    assert "pack 'empty' has no enabled row" in error_of(dirs)


def test_a_broken_toml_file_names_its_line(dirs: tuple[Path, Path]) -> None:
    path = write(dirs[1], "x.toml", '[reask]\ndays = 1\n\n[[decision]\nid = "x"\n')
    with pytest.raises(RulesError) as info:
        load(dirs)
    assert str(info.value).startswith(f"{path}:4:")


# ---------------------------------------------------------------------------------------------
# Packs per domain


def test_pack_choice_per_sender_and_recipient_domain(dirs: tuple[Path, Path]) -> None:
    write(
        dirs[1],
        "packs.toml",
        '[packs.by_sender_domain]\n"Bank.Example" = "strict"\n\n'
        '[packs.by_recipient_domain]\n"gov.example" = "strict"\n"bank.example" = "fr-cnil-2026"\n',
    )
    policy = load_policy(load(dirs))
    assert pack_for(policy, "shop.example", "mail.example") == "fr-cnil-2026"
    assert pack_for(policy, "bank.example", "mail.example") == "strict"
    assert pack_for(policy, "news.bank.example.", "mail.example") == "strict"  # subdomain
    assert pack_for(policy, "shop.example", "agency.gov.example") == "strict"
    assert pack_for(policy, "notbank.example", "x.example") == "fr-cnil-2026"


def test_settings_choose_the_default_pack_and_more_sender_domains(dirs: tuple[Path, Path]) -> None:
    rules = load(dirs)
    text = '[rules]\npack = "strict"\n[rules.packs_by_domain]\n"shop.example" = "fr-cnil-2026"\n'
    policy = load_policy(rules, parse_settings(text, env={}))
    assert pack_for(policy, "other.example", "x.example") == "strict"
    assert pack_for(policy, "shop.example", "x.example") == "fr-cnil-2026"
    with pytest.raises(RulesError, match=r"\[rules\] pack: no pack 'lax'"):
        load_policy(rules, parse_settings('[rules]\npack = "lax"\n', env={}))
    with pytest.raises(RulesError, match=r"packs_by_domain 'a\.example': no pack 'lax'"):
        load_policy(rules, parse_settings('[rules.packs_by_domain]\n"a.example" = "lax"\n', env={}))


def test_a_local_pack_description_overrides_the_shipped_one(dirs: tuple[Path, Path]) -> None:
    path = write(dirs[1], "x.toml", '[pack.strict]\ndescription = "Our strict pack"\n')
    rules = load(dirs)
    assert load_policy(rules).packs["strict"].description == "Our strict pack"
    assert rules.where("pack.strict.description") == f"{path}:2"


# ---------------------------------------------------------------------------------------------
# Classification rules are validated with the policy


HEAD = 'id = "r"\ndescription = "d"\n'


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('category = "transactional"', None, "at least one condition"),
        ('category = "x"\nsender = ["a@b"]', "category", "'x'"),
        ('category = "marketing"\nclient = ["10.0.0.300/8"]', "client", "not an address"),
        ('category = "marketing"\nauth_user = "otp"', "auth_user", "list of texts"),
    ],
)
def test_sender_rule_errors(
    dirs: tuple[Path, Path], text: str, key: str | None, words: str
) -> None:
    check_error(dirs, f"[[classify]]\n{HEAD}{text}\n", key, words)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('headers = ["X-Tag"]\nvalues = ["a"]\nregex = true', "regex", "unknown key"),
        ('headers = []\nvalues = ["a"]', "headers", "must not be empty"),
        ('headers = ["X-Tag"]', None, "missing required key 'values'"),
    ],
)
def test_esp_rule_errors(dirs: tuple[Path, Path], text: str, key: str | None, words: str) -> None:
    check_error(dirs, f'[[esp]]\n{HEAD}category = "marketing"\n{text}\n', key, words)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ('category = "consent_request"\nsubject_words = ["x"]', "category", "consent_request"),
        ('category = "marketing"', None, "subject_words or body_words"),
        ('category = "marketing"\nsubject_words = "promo"', "subject_words", "list of texts"),
    ],
)
def test_content_rule_errors(
    dirs: tuple[Path, Path], text: str, key: str | None, words: str
) -> None:
    check_error(dirs, f"[[content]]\n{HEAD}{text}\n", key, words)


def check_error(dirs: tuple[Path, Path], text: str, key: str | None, words: str) -> None:
    path = write(dirs[1], "x.toml", text)
    message = error_of(dirs)
    line = line_of(path, f"{key} =") if key else 1
    assert message.startswith(f"{path}:{line}:"), message
    assert words in message


def test_a_disabled_rule_is_validated_too(dirs: tuple[Path, Path]) -> None:
    text = f'[[classify]]\n{HEAD}enabled = false\ncategory = "marketing"\nsendr = ["a@b"]\n'
    check_error(dirs, text, "sendr", "unknown key")
    row = ROW.format(id="off", extra='enabled = false\naction = "explode"\nbasis = "none"')
    check_error(dirs, row, "action", "'explode'")


def test_nested_tables_merge_key_by_key(dirs: tuple[Path, Path]) -> None:
    write(dirs[0], "more.toml", '[packs.by_sender_domain]\n"a.example" = "strict"\n')
    write(dirs[1], "x.toml", '[packs.by_sender_domain]\n"b.example" = "strict"\n')
    policy = load_policy(load(dirs))
    assert dict(policy.packs_by_sender) == {"a.example": "strict", "b.example": "strict"}


def test_every_worked_example_of_the_guide_loads(dirs: tuple[Path, Path]) -> None:
    guide = (SHIPPED_RULES / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in guide.split("```toml\n")[1:]]
    assert len(blocks) >= 6
    for block in blocks:
        write(dirs[1], "example.toml", block)
        load_policy(load(dirs))
