"""Settings: the example file documents every key, and bad values name file, line and key."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from relay.errors import SettingsError
from relay.settings import Settings, parse_settings

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "config.example.toml"


def _fields(cls: type, prefix: str = "") -> set[str]:
    names: set[str] = set()
    for f in dataclasses.fields(cls):
        if f.name == "source":
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        if dataclasses.is_dataclass(default):
            names |= _fields(type(default), f"{prefix}{f.name}.")
        else:
            names.add(f"{prefix}{f.name}")
    return names


def _keys(data: dict[str, object], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for k, v in data.items():
        if isinstance(v, dict) and k not in (
            "users",
            "retired_link_keys",
            "packs_by_domain",
            "keys",
            "controllers",
        ):
            keys |= _keys(v, f"{prefix}{k}.")
        else:
            keys.add(f"{prefix}{k}")
    return keys


def test_example_covers_every_setting_and_comments_each() -> None:
    text = EXAMPLE.read_text()
    assert _keys(tomllib.loads(text)) == _fields(Settings)
    lines = text.splitlines()
    for number, line in enumerate(lines):
        if re.match(r"^[a-z_]+ = ", line):
            assert lines[number - 1].startswith("#"), f"line {number + 1} has no comment: {line}"


def test_example_loads_and_equals_defaults_except_dev_key() -> None:
    loaded = parse_settings(EXAMPLE.read_text(), str(EXAMPLE), env={})
    defaults = parse_settings("", env={})
    assert loaded.smtp == defaults.smtp
    assert loaded.upstream == defaults.upstream
    assert loaded.redis == defaults.redis
    assert loaded.secrets.link_key.startswith("dev-only")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[smtp]\nlisten = 25\n", "cfg.toml:2: smtp.listen: must be a string"),
        ("[smtp]\nlsten = 'x'\n", "cfg.toml:2: smtp.lsten: unknown key"),
        ("[nope]\n", "cfg.toml:1: nope: unknown key"),
        ("[smtp]\nmalformed = 'drop'\n", "smtp.malformed: must be one of reject, strip"),
        ("[smtp]\nallowed_clients = ['10.0.0.0/33']\n", "smtp.allowed_clients: not a network"),
        ("[upstream]\nurl = 'http://x'\n", "cfg.toml:2: upstream.url: must start with smtp://"),
        (
            "[upstream]\nurl = 'smtp://mx'\nca_file = '/nonexistent/ca.pem'\n",
            "cfg.toml:3: upstream.ca_file: cannot load '/nonexistent/ca.pem': No such file",
        ),
        ("[smtp.tls]\ncert = 1\n", "smtp.tls.cert: must be a string"),
        ("[smtp]\nmax_message_size = -1\n", "non-negative integer"),
        ("[redis\n", "not valid TOML"),
    ],
)
def test_bad_values_name_file_line_and_key(text: str, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(text, "cfg.toml", env={})
    assert expected in str(info.value)


def test_secrets_from_environment_win() -> None:
    settings = parse_settings(
        "[secrets]\nlink_key = 'file'\n",
        env={"RELAY_LINK_KEY": "env-key", "RELAY_API_TOKENS": "a,b"},
    )
    assert settings.secrets.link_key == "env-key"
    assert settings.web.api_tokens == ("a", "b")
    assert settings.address_key == b"env-key"
