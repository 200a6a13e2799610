"""ESP tracking controls: the header fields per profile, SendGrid's JSON merge, the warnings."""

from __future__ import annotations

import json
from email import message_from_bytes
from email.policy import default as default_policy

import pytest

from relay.core.esp import (
    PROFILES,
    controlled_headers,
    esp_controls,
    format_fields,
    merge_smtpapi,
    startup_warnings,
    valid_ses_set_name,
)


@pytest.mark.parametrize("profile", PROFILES)
def test_nothing_is_added_when_every_tracker_stayed(profile: str) -> None:
    # Rule 2: the relay never touches tracking the recipient agreed to.
    assert esp_controls(profile, opens_removed=False, ses_no_tracking_set="no-tracking") == ()


@pytest.mark.parametrize(
    ("profile", "opens_only", "both"),
    [
        ("none", (), ()),
        (
            "mailgun",
            (("X-Mailgun-Track-Opens", "no"),),
            (("X-Mailgun-Track-Opens", "no"), ("X-Mailgun-Track-Clicks", "no")),
        ),
        (
            "mailjet",
            (("X-Mailjet-TrackOpen", "0"),),
            (("X-Mailjet-TrackOpen", "0"), ("X-Mailjet-TrackClick", "0")),
        ),
        (
            "postmark",
            (("X-PM-TrackOpens", "false"),),
            (("X-PM-TrackOpens", "false"), ("X-PM-TrackLinks", "None")),
        ),
    ],
)
def test_documented_fields_per_profile(
    profile: str, opens_only: tuple[tuple[str, str], ...], both: tuple[tuple[str, str], ...]
) -> None:
    assert esp_controls(profile, opens_removed=True) == opens_only
    assert esp_controls(profile, opens_removed=True, clicks_allowed=False) == both
    # Every field written is one the conductor knows to replace.
    assert {name.lower() for name, _ in both} <= controlled_headers(profile)


def test_clicks_alone_can_be_switched_off() -> None:
    assert esp_controls("mailgun", opens_removed=False, clicks_allowed=False) == (
        ("X-Mailgun-Track-Clicks", "no"),
    )
    assert esp_controls("postmark", opens_removed=False, clicks_allowed=False) == (
        ("X-PM-TrackLinks", "None"),
    )


def test_sendgrid_filters() -> None:
    ((name, value),) = esp_controls("sendgrid", opens_removed=True)
    assert name == "X-SMTPAPI"
    assert json.loads(value) == {"filters": {"opentrack": {"settings": {"enable": 0}}}}
    ((_, both),) = esp_controls("sendgrid", opens_removed=True, clicks_allowed=False)
    assert json.loads(both) == {
        "filters": {
            "opentrack": {"settings": {"enable": 0}},
            "clicktrack": {"settings": {"enable": 0}},
        }
    }


def test_sendgrid_keeps_the_applications_own_smtpapi_settings() -> None:
    app = json.dumps(
        {
            "category": ["promo", "été"],
            "unique_args": {"campaign": "c42"},
            "filters": {
                "opentrack": {"settings": {"enable": 1, "replace": "%open%"}},
                "footer": {"settings": {"enable": 1, "text/plain": "Bye"}},
            },
        },
        ensure_ascii=False,
    )
    ((_, value),) = esp_controls("sendgrid", opens_removed=True, existing_smtpapi=app)
    assert value.isascii()
    assert json.loads(value) == {
        "category": ["promo", "été"],
        "unique_args": {"campaign": "c42"},
        "filters": {
            "opentrack": {"settings": {"enable": 0, "replace": "%open%"}},
            "footer": {"settings": {"enable": 1, "text/plain": "Bye"}},
        },
    }


@pytest.mark.parametrize("existing", [None, "", "not json", "[1, 2]", '"a string"'])
def test_merge_smtpapi_replaces_what_sendgrid_could_not_use(existing: str | None) -> None:
    overlay = {"filters": {"opentrack": {"settings": {"enable": 0}}}}
    assert json.loads(merge_smtpapi(existing, overlay)) == overlay


def test_merge_smtpapi_replaces_a_non_object_filters_member() -> None:
    merged = merge_smtpapi('{"filters": 3, "asm_group_id": 7}', {"filters": {"a": 1}})
    assert json.loads(merged) == {"filters": {"a": 1}, "asm_group_id": 7}


def test_ses_names_the_configured_set() -> None:
    assert esp_controls("ses", opens_removed=True, ses_no_tracking_set="relay-no-tracking") == (
        ("X-SES-CONFIGURATION-SET", "relay-no-tracking"),
    )
    # No set configured: nothing can be done per message (start-up warned).
    assert esp_controls("ses", opens_removed=True) == ()
    with pytest.raises(ValueError, match="configuration set"):
        esp_controls("ses", opens_removed=True, ses_no_tracking_set="bad name;x")
    assert valid_ses_set_name("a_b-C9")
    assert not valid_ses_set_name("x" * 65)


def test_unknown_profile_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown upstream profile"):
        esp_controls("sparkpost", opens_removed=True)
    with pytest.raises(ValueError):
        startup_warnings("sparkpost")


def test_startup_warnings() -> None:
    for profile in ("none", "sendgrid", "mailgun", "mailjet"):
        assert startup_warnings(profile) == []
    (postmark,) = startup_warnings("postmark")
    assert "server" in postmark and "X-PM-TrackOpens" in postmark
    ses = startup_warnings("ses")
    assert len(ses) == 2 and any("ses_no_tracking_set is empty" in w for w in ses)
    assert len(startup_warnings("ses", ses_no_tracking_set="relay-no-tracking")) == 1
    assert any("not a valid" in w for w in startup_warnings("ses", ses_no_tracking_set="a b"))


def test_format_fields_folds_long_json_and_unfolds_to_the_same_value() -> None:
    app = json.dumps({"category": [f"category-{i}" for i in range(60)]})
    ((name, value),) = esp_controls(
        "sendgrid", opens_removed=True, clicks_allowed=False, existing_smtpapi=app
    )
    fields = ((name, value), ("X-Mailjet-TrackOpen", "0"))
    raw = format_fields(fields)
    lines = raw.split(b"\r\n")
    assert lines[-1] == b""
    assert all(len(line) <= 998 for line in lines)
    assert max(len(line) for line in lines) <= 100  # folded near 78 columns
    assert all(line.startswith((b"X-", b" ")) for line in lines[:-1])
    parsed = message_from_bytes(raw + b"\r\nbody\r\n", policy=default_policy)
    smtpapi = str(parsed["X-SMTPAPI"])
    assert json.loads(smtpapi) == json.loads(fields[0][1])
    assert parsed["X-Mailjet-TrackOpen"] == "0"
    # LF messages get LF fields.
    assert b"\r" not in format_fields(fields, newline=b"\n")
