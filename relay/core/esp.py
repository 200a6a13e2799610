"""ESP tracking controls: upstream profile + what the relay removed -> header fields for the ESP.

Stage: rendering, per recipient group (SPEC section 2, "The ESP behind the relay must not put
back what the relay took out"). Input: the ``[upstream] profile`` and, for one recipient group,
whether consent-based open trackers were removed and whether click tracking is allowed.
Output: the (name, value) header fields that switch the ESP's own tracking off for that group,
and, once at start-up, the warnings for what an ESP cannot switch off per message.

Rule 1: pure: no I/O, no clock, no settings lookup; everything comes in as arguments.
Rule 2: a group whose trackers were all kept gets no control field: the relay never switches
        on, or otherwise changes, tracking that the application and the recipient agreed to.
Rule 3: a control field replaces any field of the same name the application set (listed by
        ``controlled_headers``): two contradicting fields would leave the ESP to choose.
        SendGrid's ``X-SMTPAPI`` carries other settings too, so it is merged, never replaced.
Rule 4: only header fields each ESP documents for its SMTP interface are used; where the ESP
        lets an account or server setting win over the message, ``startup_warnings`` says so.
Rule 5: values are plain ASCII and folded at whitespace only, so unfolding gives them back.

The facts, each from the ESP's public documentation (checked November 2026):

- SendGrid: ``X-SMTPAPI`` is a JSON object; its ``filters`` member switches settings per
  message, e.g. ``{"filters": {"opentrack": {"settings": {"enable": 0}}}}``; a filter not
  named in the header keeps the account's setting; filter and setting names are lower case.
  https://www.twilio.com/docs/sendgrid/for-developers/sending-email/smtp-filters
- Mailgun: ``X-Mailgun-Track-Opens: yes|no`` and ``X-Mailgun-Track-Clicks: yes|no|htmlonly``
  toggle tracking per message "with higher priority than the domain-level setting"
  (``X-Mailgun-Track`` toggles both). https://documentation.mailgun.com/docs/mailgun/
  user-manual/sending-messages (section "Passing Sending Options", SMTP)
- Mailjet: ``X-Mailjet-TrackOpen: 0|1`` and ``X-Mailjet-TrackClick: 0|1`` "override your
  tracking options set on your user account". https://dev.mailjet.com/docs/smtp_relay/
  custom_headers
- Postmark: ``X-PM-TrackOpens: true|false``, but "there is no way to disable open tracking
  on a per-email basis when the server's Open tracking setting is enabled": the server (and
  message stream) setting must be off. https://postmarkapp.com/developer/user-guide/
  tracking-opens/tracking-opens-per-email . ``X-PM-TrackLinks: None|HtmlAndText|HtmlOnly|
  TextOnly`` overrides the server's link tracking per message.
  https://postmarkapp.com/developer/user-guide/tracking-links
- Amazon SES over SMTP: no per-message tracking switch; opens and clicks are tracked through
  the configuration set named in ``X-SES-CONFIGURATION-SET`` (or the identity's default set)
  when it has an event destination for OPEN/CLICK events or engagement metrics switched on.
  The relay can only name a set the operator created without them.
  https://docs.aws.amazon.com/ses/latest/dg/using-configuration-sets-in-email.html
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

from relay.model import (
    TRACKING_ACTIONS,
    Action,
    Basis,
    Candidate,
    Decision,
    ElementKind,
    Purpose,
    Span,
)

PROFILES = ("none", "sendgrid", "mailgun", "mailjet", "postmark", "ses")

SMTPAPI = "X-SMTPAPI"
SES_CONFIGURATION_SET = "X-SES-CONFIGURATION-SET"

# Every header field name a profile's controls may write. The application's own fields of
# these names are removed from a group that gets controls (Rule 3); "X-Mailgun-Track" toggles
# both opens and clicks, so an application's "yes" there would contradict the relay's "no".
_CONTROLLED: dict[str, frozenset[str]] = {
    "none": frozenset(),
    "sendgrid": frozenset({"x-smtpapi"}),
    "mailgun": frozenset({"x-mailgun-track", "x-mailgun-track-opens", "x-mailgun-track-clicks"}),
    "mailjet": frozenset({"x-mailjet-trackopen", "x-mailjet-trackclick"}),
    "postmark": frozenset({"x-pm-trackopens", "x-pm-tracklinks"}),
    "ses": frozenset({"x-ses-configuration-set"}),
}

# SES configuration set names: letters, digits, underscores and dashes, at most 64 characters.
_SES_SET_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")

# Folding keeps lines well under SMTP's 998-octet limit; SendGrid asks for the same.
_FOLD_AT = 78


# The ESP's own open pixel, added after the relay (SPEC section 2): decided like any
# campaign_performance tracker, by the same table, for each recipient, and listed in the
# decision record with its basis.
ESP_PIXEL_RULE = "esp-open-tracking"
ESP_TRACKING_OFF = "esp-tracking-off"  # [upstream] esp_tracking = "off"
ESP_UNCONTROLLED = "esp-uncontrolled"  # SES without a no-tracking configuration set
_VENDORS = {
    "sendgrid": "SendGrid",
    "mailgun": "Mailgun",
    "mailjet": "Mailjet",
    "postmark": "Postmark",
    "ses": "Amazon SES",
}


def esp_pixel(profile: str, candidate_id: int) -> Candidate:
    """The open pixel the ESP behind the relay adds downstream, as a tracker to decide."""
    _check_profile(profile)
    return Candidate(
        id=candidate_id,
        part_index=-1,  # in no part of the message: the ESP adds it after the relay
        url=f"esp:{profile}",
        element=ElementKind.OTHER,
        element_text=f"(open pixel {_VENDORS.get(profile, profile)} adds downstream)",
        rule=ESP_PIXEL_RULE,
        vendor=_VENDORS.get(profile, profile),
        purpose=Purpose.CAMPAIGN_PERFORMANCE,
        no_consent_action=Action.REMOVE,
        identifying_params=(),
        url_span=Span(0, 0),
        removal_span=Span(0, 0),
    )


def esp_decision(
    table: Decision, profile: str, *, tracking: str = "consented", ses_no_tracking_set: str = ""
) -> tuple[Decision, bool]:
    """(the recorded decision for the ESP's pixel, whether the ESP may track this group).

    The ESP adds its pixel as written (the relay's gateway cannot sit in front of it), so a
    basis from the table is recorded as ``keep``; without one the relay's control switches it
    off (``remove``). With ``tracking = "off"`` the ESP never tracks. Where no control can be
    sent (SES without ``ses_no_tracking_set``) the record says so: ``keep``, basis ``none``.
    """
    cid = table.candidate_id
    if tracking == "off":
        return Decision(cid, Action.REMOVE, Basis.NONE, ESP_TRACKING_OFF), False
    if table.action in TRACKING_ACTIONS:
        return Decision(
            cid, Action.KEEP, table.basis, table.policy_rule, table.consent_event_ids
        ), True
    if profile == "ses" and not ses_no_tracking_set:
        return Decision(cid, Action.KEEP, Basis.NONE, ESP_UNCONTROLLED), False
    return Decision(cid, Action.REMOVE, Basis.NONE, table.policy_rule), False


def _check_profile(profile: str) -> None:
    if profile not in _CONTROLLED:
        raise ValueError(f"unknown upstream profile {profile!r} (known: {', '.join(PROFILES)})")


def valid_ses_set_name(name: str) -> bool:
    """Whether ``name`` can be an SES configuration set name (for settings validation)."""
    return _SES_SET_NAME.fullmatch(name) is not None


def controlled_headers(profile: str) -> frozenset[str]:
    """Lower-case names of the fields the controls of ``profile`` replace (Rule 3).

    The conductor removes the application's fields of these names, by byte range like the
    ``X-Relay-*`` fields, from every group that ``esp_controls`` gives fields to.
    """
    _check_profile(profile)
    return _CONTROLLED[profile]


def esp_controls(
    profile: str,
    *,
    opens_removed: bool,
    clicks_allowed: bool = True,
    ses_no_tracking_set: str = "",
    existing_smtpapi: str | None = None,
) -> tuple[tuple[str, str], ...]:
    """Header fields that stop the ESP from tracking what the relay did not allow.

    ``opens_removed``: consent-based open trackers were removed (or neutralised) for this
    group, so the ESP must not add its own open pixel. ``clicks_allowed``: False when the ESP
    must not rewrite links for click tracking either. ``ses_no_tracking_set``: the SES
    configuration set without open/click tracking (empty: SES gets no field, and
    ``startup_warnings`` has said so). ``existing_smtpapi``: the application's ``X-SMTPAPI``
    value, merged into SendGrid's control (Rule 3).
    """
    _check_profile(profile)
    if not opens_removed and clicks_allowed:
        return ()  # Rule 2
    no_clicks = not clicks_allowed
    if profile == "sendgrid":
        filters: dict[str, Any] = {}
        if opens_removed:
            filters["opentrack"] = {"settings": {"enable": 0}}
        if no_clicks:
            filters["clicktrack"] = {"settings": {"enable": 0}}
        return ((SMTPAPI, merge_smtpapi(existing_smtpapi, {"filters": filters})),)
    if profile == "mailgun":
        return _pairs(
            (opens_removed, "X-Mailgun-Track-Opens", "no"),
            (no_clicks, "X-Mailgun-Track-Clicks", "no"),
        )
    if profile == "mailjet":
        return _pairs(
            (opens_removed, "X-Mailjet-TrackOpen", "0"),
            (no_clicks, "X-Mailjet-TrackClick", "0"),
        )
    if profile == "postmark":
        return _pairs(
            (opens_removed, "X-PM-TrackOpens", "false"),
            (no_clicks, "X-PM-TrackLinks", "None"),
        )
    if profile == "ses":
        if not ses_no_tracking_set:
            return ()
        if not valid_ses_set_name(ses_no_tracking_set):
            raise ValueError(f"not an SES configuration set name: {ses_no_tracking_set!r}")
        return ((SES_CONFIGURATION_SET, ses_no_tracking_set),)
    return ()  # "none": nothing behind the relay adds tracking


def _pairs(*wanted: tuple[bool, str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((name, value) for cond, name, value in wanted if cond)


def merge_smtpapi(existing: str | None, overlay: dict[str, Any]) -> str:
    """The application's ``X-SMTPAPI`` JSON with ``overlay`` merged in, as compact JSON.

    Objects merge member by member at every depth and ``overlay`` wins on everything else,
    so the application's categories, unique arguments, other filters and the other settings
    of a filter it named are kept. A value that is not a JSON object cannot be used by
    SendGrid either; it is replaced by ``overlay`` alone.
    """
    base: Any = None
    if existing is not None and existing.strip():
        try:
            base = json.loads(existing)
        except ValueError:
            base = None
    merged = _deep_merge(base if isinstance(base, dict) else {}, overlay)
    # ASCII only (Rule 5): non-ASCII characters of the application's values become \u escapes,
    # which decode to the same strings.
    return json.dumps(merged, ensure_ascii=True, separators=(", ", ": "))


def _deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overlay.items():
        current = out.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            out[key] = _deep_merge(current, value)
        else:
            out[key] = value
    return out


def format_fields(fields: Iterable[tuple[str, str]], newline: bytes = b"\r\n") -> bytes:
    """Header fields as bytes to insert into a header block, each ending with ``newline``.

    Long values are folded before a space (Rule 5); the JSON written by ``merge_smtpapi`` has
    a space after every comma, so it always folds.
    """
    out = bytearray()
    for name, value in fields:
        line = f"{name}: {value}".encode("ascii")
        out += _fold(line, newline) + newline
    return bytes(out)


def _fold(line: bytes, newline: bytes) -> bytes:
    pieces: list[bytes] = []
    while len(line) > _FOLD_AT:
        cut = line.rfind(b" ", 0, _FOLD_AT)
        if cut <= 0 or line[:cut].endswith(b":"):
            cut = line.find(b" ", _FOLD_AT)
        if cut <= 0:
            break  # no whitespace left: a long line is legal up to 998 octets
        pieces.append(line[:cut])
        line = line[cut:]  # the space stays: unfolding removes only the line break
    pieces.append(line)
    return newline.join(pieces)


def startup_warnings(profile: str, *, ses_no_tracking_set: str = "") -> list[str]:
    """What an operator must set at the ESP because the relay cannot do it per message."""
    _check_profile(profile)
    if profile == "postmark":
        return [
            "upstream profile postmark: Postmark ignores X-PM-TrackOpens: false while open "
            "tracking is enabled on the server or message stream; switch open tracking off "
            "there (Servers > Settings) so that the relay's per-message control is obeyed"
        ]
    if profile == "ses":
        warnings = [
            "upstream profile ses: SES over SMTP has no per-message tracking switch; the relay "
            "names a configuration set with X-SES-CONFIGURATION-SET for groups whose trackers "
            "were removed; that set must have no OPEN or CLICK event destination and "
            "engagement metrics (VDM) disabled, and it replaces the application's own set "
            "for those groups"
        ]
        if not ses_no_tracking_set:
            warnings.append(
                "upstream profile ses: upstream.ses_no_tracking_set is empty, so SES may add "
                "its open pixel and rewrite links in messages whose trackers the relay removed"
            )
        elif not valid_ses_set_name(ses_no_tracking_set):
            warnings.append(
                f"upstream profile ses: {ses_no_tracking_set!r} is not a valid configuration "
                "set name (letters, digits, '_' and '-', at most 64)"
            )
        return warnings
    return []
