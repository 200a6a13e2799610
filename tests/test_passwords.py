"""Password hashes for SMTP AUTH, the settings checks around them, and ``relay hash-password``."""

from __future__ import annotations

import argparse
import io

import pytest

from relay.cli import passwd as cli_passwd
from relay.errors import RelayError, SettingsError
from relay.passwords import UserTable, check_hash, hash_password, verify_password
from relay.settings import parse_settings

FAST = 2**10  # a cheap cost for tests; the default (2**14) is checked once below


def test_hash_has_the_documented_format_and_verifies() -> None:
    encoded = hash_password("s3cret", n=FAST)
    scheme, n, r, p, _salt, _digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", str(FAST), "8", "1")
    parsed = check_hash(encoded)
    assert len(parsed.salt) == 16 and len(parsed.digest) == 32
    assert verify_password(b"s3cret", parsed)
    assert not verify_password(b"s3cret ", parsed)
    assert not verify_password(b"", parsed)


def test_default_cost_and_random_salt() -> None:
    first, second = hash_password("same"), hash_password("same")
    assert first != second  # a fresh salt each time
    assert check_hash(first).n == 2**14
    assert verify_password(b"same", check_hash(second))


def test_unknown_user_is_refused_and_non_utf8_login_too() -> None:
    table = UserTable({"app": hash_password("pw", n=FAST)})
    assert table.verify(b"app", b"pw")
    assert not table.verify(b"nobody", b"pw")
    assert not table.verify(b"\xff", b"pw")
    assert not verify_password(b"pw", None)
    assert not UserTable({})


@pytest.mark.parametrize(
    "value",
    [
        "plain-text-password",
        "bcrypt$12$abc",
        "scrypt$1000$8$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",  # n not a power of two
        "scrypt$16384$8$1$not base64!$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$16384$8$1$AAAA$AAAAAAAAAAAAAAAAAAAAAA==",  # salt too short
        "scrypt$16384$x$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",
        "scrypt$16384$99$1$AAAAAAAAAAA=$AAAAAAAAAAAAAAAAAAAAAA==",
    ],
)
def test_malformed_hashes_are_refused(value: str) -> None:
    with pytest.raises(ValueError):
        check_hash(value)


def test_a_bad_hash_in_settings_names_the_user_key() -> None:
    text = "[smtp.tls]\ncert = 'c.pem'\nkey = 'k.pem'\n[smtp.auth]\nusers = { alice = 'hunter2' }\n"
    with pytest.raises(SettingsError, match=r"cfg.toml(:\d+)?: smtp.auth.users.alice: must be"):
        parse_settings(text, "cfg.toml", env={})


def test_users_without_tls_is_refused_unless_require_tls_is_off() -> None:
    users = f"users = {{ app = '{hash_password('pw', n=FAST)}' }}\n"
    with pytest.raises(SettingsError, match=r"smtp\.auth\.users: AUTH is only offered over TLS"):
        parse_settings("[smtp.auth]\n" + users, "cfg.toml", env={})
    settings = parse_settings("[smtp.auth]\nrequire_tls = false\n" + users, "cfg.toml", env={})
    assert list(settings.smtp.auth.users) == ["app"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[smtp.tls]\ncert = 'c.pem'\n", "smtp.tls.key: smtp.tls.cert and smtp.tls.key"),
        ("[smtp.tls]\nimplicit_listen = '127.0.0.1:465'\n", "smtp.tls.implicit_listen: needs"),
        (
            "[smtp.tls]\ncert = 'c'\nkey = 'k'\nimplicit_listen = '465'\n",
            "smtp.tls.implicit_listen: must be host:port",
        ),
        ("[smtp]\nproxy_from = ['lb']\n", "smtp.proxy_from: not a network"),
        ("[smtp]\nrate_limit = -5\n", "smtp.rate_limit: must be a non-negative integer"),
    ],
)
def test_transport_settings_errors_name_the_key(text: str, expected: str) -> None:
    with pytest.raises(SettingsError, match=expected):
        parse_settings(text, "cfg.toml", env={})


def _run_cli(monkeypatch: pytest.MonkeyPatch, stdin: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="relay")
    cli_passwd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["hash-password"])
    out = io.StringIO()
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    monkeypatch.setattr("sys.stdout", out)
    status: int = args.func(args)
    return status, out.getvalue()


def test_hash_password_command_reads_stdin_and_prints_only_the_hash(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    status, printed = _run_cli(monkeypatch, "correct horse\n")
    assert status == 0
    encoded = printed.strip()
    assert printed.count("\n") == 1 and "correct horse" not in printed
    assert verify_password(b"correct horse", check_hash(encoded))
    # What it prints is accepted as a setting.
    text = f"[smtp.auth]\nrequire_tls = false\nusers = {{ app = '{encoded}' }}\n"
    assert parse_settings(text, env={}).smtp.auth.users["app"] == encoded


def test_hash_password_command_refuses_an_empty_password(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(RelayError, match="empty password"):
        _run_cli(monkeypatch, "\n")


def test_hash_password_command_on_a_terminal_asks_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["one", "two"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr("sys.stdin", Tty())
    with pytest.raises(RelayError, match="differ"):
        cli_passwd.cmd_hash_password(argparse.Namespace())
