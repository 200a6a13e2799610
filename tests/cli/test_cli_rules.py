"""``relay rules check|explain`` through the real argument parser, on rule folders in tmp dirs;
and ``validate_rules``, the validate-everything-first loader used on SIGHUP."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import pytest

from relay.cli.rules import describe_row, register
from relay.context import validate_rules
from relay.core.policy_rules import load_policy
from relay.errors import RulesError
from relay.rulefiles import SHIPPED_RULES, load_rules
from relay.settings import parse_settings

OWN_FILES = ("policy/fr-cnil-2026.toml", "policy/strict.toml", "classify.toml")


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(shipped copy, local overrides, config file pointing at both)."""
    shipped, local = tmp_path / "shipped", tmp_path / "local"
    for name in OWN_FILES:
        (shipped / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(SHIPPED_RULES / name, shipped / name)
    local.mkdir()
    config = tmp_path / "config.toml"
    config.write_text(f'[rules]\ndir = "{shipped}"\nlocal_dir = "{local}"\n', encoding="utf-8")
    return shipped, local, config


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="relay")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


def test_check_ok_prints_a_summary_and_the_digest(
    folders: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    shipped, local, config = folders
    assert run(["rules", "check", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    digest = load_rules(shipped, local).digest
    assert "rules check: OK" in out and f"digest {digest}" in out
    assert "pack fr-cnil-2026 (default): 6 rows" in out
    assert "[[classify]]: 0 enabled of 2" in out


def test_check_unknown_key_names_file_line_and_key(
    folders: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, local, config = folders
    bad = local / "bad.toml"
    bad.write_text('[[decision]]\nid = "cnil-consent"\nactoin = "keep"\n', encoding="utf-8")
    assert run(["rules", "check", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:3: [[decision]] 'cnil-consent' key 'actoin': unknown key" in err
    assert "FAILED" in err


def test_check_bad_value_names_file_line_and_key(
    folders: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, local, config = folders
    bad = local / "bad.toml"
    bad.write_text('[legacy]\n\nend_of_grace = "soon"\n', encoding="utf-8")
    assert run(["rules", "check", "--config", str(config)]) == 1
    assert capsys.readouterr().err.startswith(f"{bad}:3: [legacy] key 'end_of_grace':")


def test_check_dir_argument_and_local_option(
    folders: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shipped, local, config = folders
    other = tmp_path / "other"
    shutil.copytree(shipped, other)
    (other / "policy" / "strict.toml").write_text("[pack.strict]\n", encoding="utf-8")
    assert run(["rules", "check", str(other), "--config", str(config)]) == 1
    assert "[pack.strict]: missing required key 'description'" in capsys.readouterr().err
    (local / "x.toml").write_text("[reask]\nday = 3\n", encoding="utf-8")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(["rules", "check", "--config", str(config)]) == 1
    capsys.readouterr()
    assert run(["rules", "check", "--config", str(config), "--local", str(empty)]) == 0


def test_bad_settings_file_is_bad_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.toml"
    config.write_text("[rules]\npak = 1\n", encoding="utf-8")
    assert run(["rules", "check", "--config", str(config)]) == 2
    assert "rules.pak" in capsys.readouterr().err
    assert run(["rules", "explain", "--config", str(config)]) == 2


def test_explain_words_every_row(
    folders: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, _, config = folders
    assert run(["rules", "explain", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert (
        "R3 cnil-deliverability-minimise: in emails the recipient asked for (authentication, "
        "newsletter, public_service and transactional), a tracker used for deliverability, when "
        "the recipient has not consented to that purpose, is rewritten to the relay's day-only "
        "counter" in out
    )
    assert "R2 cnil-authentication-security: in authentication emails" in out
    assert "(basis: exempt)" in out and "(basis: legacy)" in out
    assert out.index("Pack fr-cnil-2026") < out.index("Pack strict")
    assert "collected before 2026-04-14" in out and "no later than 2026-07-14" in out
    assert "fr-cnil-2026.toml:" in out  # every row says where it is written


def test_explain_one_pack_and_an_override(
    folders: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, local, config = folders
    (local / "keep.toml").write_text(
        '[[decision]]\nid = "strict-consent"\naction = "keep"\n', encoding="utf-8"
    )
    assert run(["rules", "explain", "--pack", "strict", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "Pack fr-cnil-2026" not in out
    assert "R2 strict-consent: in any email, any tracker, when the recipient holds valid " in out
    assert "is kept as written (basis: consent)" in out
    assert run(["rules", "explain", "--pack", "nope", "--config", str(config)]) == 2


def test_describe_row_of_a_scoped_row() -> None:
    policy = load_policy(load_rules())
    row = policy.packs["fr-cnil-2026"].rows[0]
    assert describe_row(row, policy) == (
        "in consent_request emails, any tracker is neutralised or removed (nothing is fetched) "
        "(basis: none)."
    )


def test_reload_rules_refuses_bad_rules(folders: tuple[Path, Path, Path]) -> None:
    _, local, config = folders
    (local / "x.toml").write_text('[[decision]]\nid = "cnil-default"\nenabled = false\n')
    settings = parse_settings(config.read_text(encoding="utf-8"), str(config), env={})
    with pytest.raises(RulesError, match="must be a catch-all"):
        validate_rules(settings)


def test_reload_rules_returns_everything_validated() -> None:
    settings = parse_settings("", env={})
    valid = validate_rules(settings)
    assert valid.policy.digest == valid.rules.digest
    assert valid.detection is not None


def test_check_refuses_a_table_nobody_reads(
    folders: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _, local, config = folders
    typo = local / "typo.toml"
    typo.write_text(
        '# our override\n[[decison]]\nid = "cnil-consent"\naction = "keep"\n\n[legcy]\nx = 1\n',
        encoding="utf-8",
    )
    assert run(["rules", "check", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert f"{typo}:2: [[decison]]: unknown table" in err and "also [legcy]" in err


# ---------------------------------------------------------------------------------------------
# Issue 10 item 1: "no consent" means no request reaches the tracker.


def _with_trackers(folders: tuple[Path, Path, Path]) -> None:
    """The shipped detection files too, so that ``rules check`` loads everything."""
    shipped = folders[0]
    for name in ("trackers.toml", "heuristics.toml", "footer.toml"):
        shutil.copy(SHIPPED_RULES / name, shipped / name)
    shutil.copytree(SHIPPED_RULES / "lists", shipped / "lists")


@pytest.mark.parametrize("action", ["strip_params", "keep", "gateway", "minimise"])
def test_check_refuses_a_signature_whose_no_consent_still_fetches(
    folders: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str], action: str
) -> None:
    _with_trackers(folders)
    _, local, config = folders
    bad = local / "vendors.toml"
    bad.write_text(
        '[[tracker]]\nid = "acme-open"\ndescription = "ACME open pixel"\nvendor = "ACME"\n'
        'hosts = ["t.acme.example"]\nidentifying_params = ["rid"]\n'
        f'no_consent = "{action}"\n'
        'examples = ["https://t.acme.example/o.gif?rid=abc"]\n',
        encoding="utf-8",
    )
    assert run(["rules", "check", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{bad}:7: [[tracker]] 'acme-open' key 'no_consent':"), err
    assert "recommendation 2.1" in err and "campaign_performance needs consent" in err
    assert "row 'cnil-default'" in err and '"neutralise"' in err


def test_check_accepts_no_consent_actions_that_fetch_nothing(
    folders: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _with_trackers(folders)
    _, local, config = folders
    (local / "vendors.toml").write_text(
        '[[tracker]]\nid = "acme-open"\ndescription = "ACME open pixel"\nvendor = "ACME"\n'
        'hosts = ["t.acme.example"]\nno_consent = "remove"\n'
        'examples = ["https://t.acme.example/o.gif?rid=abc"]\n'
        '[[heuristic]]\nid = "tiny-size"\nno_consent = "neutralise"\n',
        encoding="utf-8",
    )
    assert run(["rules", "check", "--config", str(config)]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("action", ["strip_params", "minimise"])
def test_check_refuses_a_row_that_reads_without_a_basis(
    folders: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str], action: str
) -> None:
    _, local, config = folders
    bad = local / "rows.toml"
    bad.write_text(
        '[[decision]]\nid = "ours"\npack = "fr-cnil-2026"\ndescription = "d"\n'
        f'category = ["marketing"]\naction = "{action}"\nbasis = "none"\nbefore = "cnil-default"\n',
        encoding="utf-8",
    )
    assert run(["rules", "check", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"{bad}:7: [[decision]] 'ours' key 'basis':"), err
    assert "needs a basis" in err


def test_explain_says_no_consent_fetches_nothing(
    folders: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["rules", "explain", "--config", str(folders[2])]) == 0
    out = capsys.readouterr().out
    default = next(line for line in out.splitlines() if "R6 cnil-default" in line)
    assert "nothing is fetched" in default and "identifying parameters stripped" in default


def test_explain_shows_the_decisions_built_into_the_relay(
    folders: tuple[Path, Path, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # Issue 10: every built-in decision appears with the id decision records carry.
    shipped, local, config = folders
    config.write_text(
        f'[rules]\ndir = "{shipped}"\nlocal_dir = "{local}"\n'
        '[upstream]\nprofile = "sendgrid"\n[smtp]\nsigned = "pass"\n',
        encoding="utf-8",
    )
    assert run(["rules", "explain", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    built = out[out.index("Built into the relay") :]
    for rule in ("signed-no-basis", "consent-link", "reask-window", "esp-open-tracking"):
        assert f" {rule}: " in built, rule
    assert "within 183 days" in built and "sendgrid ESP adds downstream" in built
    assert "550 5.7.1" in built and "click-tracking link" in built
    config.write_text(
        f'[rules]\ndir = "{shipped}"\nlocal_dir = "{local}"\n'
        '[upstream]\nprofile = "sendgrid"\nesp_tracking = "off"\n',
        encoding="utf-8",
    )
    assert run(["rules", "explain", "--config", str(config)]) == 0
    assert " esp-tracking-off: " in capsys.readouterr().out
