"""``--controller`` on every CLI verb that reads or writes consent, with two controllers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relay.cli.main import main
from tests.support.harness import HTML_WITH_PIXEL, message

CONTROLLERS = (
    '[controllers.shop]\nname = "Shop SAS"\ndomains = ["shop.example"]\n'
    '[controllers.club]\nname = "Club"\ndomains = ["club.example"]\n'
)


@pytest.fixture
def config(tmp_path: Path, redis_url: str) -> str:
    path = tmp_path / "config.toml"
    path.write_text(
        f'[redis]\nurl = "{redis_url}"\nprefix = "c:"\ntimeout = 2.0\n'
        f'[secrets]\nlink_key = "cli-key"\n[rules]\nlocal_dir = "{tmp_path}/rules.local"\n'
        + CONTROLLERS
    )
    return str(path)


def relay(*argv: str) -> int:
    try:
        return main(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)


# What a grant must prove (issue 10 item 4: proof before reliance).
PROOF = ["--method", "checkbox", "--source", "signup form", "--notice-version", "1"]


def test_every_consent_verb_names_its_controller(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    grant = ["consent", "record", "alice@example.org", "--event", "granted",
             "--purpose", "campaign_performance", "--config", config, *PROOF]  # fmt: skip
    assert relay(*grant) == 2
    assert "name one (shop, club)" in capsys.readouterr().err
    assert relay(*grant, "--controller", "gym") == 2
    assert "unknown controller 'gym' (known: shop, club)" in capsys.readouterr().err
    assert relay(*grant, "--controller", "shop") == 0
    assert "(controller shop)" in capsys.readouterr().out

    assert relay("consent", "show", "alice@example.org", "--json", "--controller", "shop",
                 "--config", config) == 0  # fmt: skip
    shown = json.loads(capsys.readouterr().out)
    assert shown["controller"] == "shop" and shown["purposes"]["campaign_performance"]["state"]
    assert shown["history"][0]["controller"] == "shop"
    assert relay("consent", "show", "alice@example.org", "--json", "--controller", "club",
                 "--config", config) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["purposes"] == {}
    assert relay("consent", "show", "alice@example.org", "--config", config) == 2

    csv = tmp_path / "c.csv"
    csv.write_text("address,event,occurred_at,purposes,method,notice_version,source_form_id\n"
                   "bob@example.org,granted,2026-05-01T09:00:00Z,fraud_detection,checkbox,1,"
                   "signup\n")  # fmt: skip
    assert relay("consent", "import", str(csv), "--no-progress", "--controller", "club",
                 "--config", config) == 0  # fmt: skip
    assert "1 events added" in capsys.readouterr().out
    assert relay("consent", "import", str(csv), "--no-progress", "--config", config) == 1
    assert f"{csv}:2: controller: 2 controllers are configured" in capsys.readouterr().err

    assert relay("consent", "verify", "--config", config) == 0
    assert "2 recipients, 2 events checked: chains intact" in capsys.readouterr().out
    assert relay("consent", "verify", "--controller", "club", "--config", config) == 0
    assert "1 recipients, 1 events checked" in capsys.readouterr().out


def test_check_decides_for_the_controller_of_the_from_domain(
    config: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    record = ["consent", "record", "alice@example.org", "--event", "granted", "--purpose",
              "campaign_performance", "--controller", "club", "--config", config,
              *PROOF]  # fmt: skip
    assert relay(*record) == 0
    eml = tmp_path / "m.eml"
    eml.write_bytes(message(HTML_WITH_PIXEL, category="newsletter"))  # From: news@shop.example
    capsys.readouterr()
    assert relay("check", str(eml), "--json", "--config", config) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["controller"] == "shop"
    assert (
        data["recipients"][0]["trackers"][0]["basis"] == "none"
    )  # the club's consent is not the shop's
    assert relay("check", str(eml), "--json", "--controller", "club", "--config", config) == 0
    data = json.loads(capsys.readouterr().out)
    assert (
        data["controller"] == "club" and data["recipients"][0]["trackers"][0]["basis"] == "consent"
    )
    assert relay("check", str(eml), "--controller", "gym", "--config", config) == 2
    assert "unknown controller 'gym'" in capsys.readouterr().err
    eml.write_bytes(message(HTML_WITH_PIXEL).replace(b"news@shop.example", b"a@other.example"))
    assert relay("check", str(eml), "--config", config) == 0
    assert "controller none (no consent-based tracker" in capsys.readouterr().out
