"""The decisions built into the relay beside the decision table, in plain words for
``relay rules explain`` (issue 10): each names the id decision records carry and the clause it
follows, and reads the settings that change it, so the explanation cannot drift from them.

Stage: command-line helper (pure: settings and policy in, lines out).
"""

from __future__ import annotations

from relay.core.consent_link import FILLED, NO_CONTROLLER, REASK_UNKNOWN, REASK_WINDOW
from relay.core.esp import ESP_PIXEL_RULE, ESP_TRACKING_OFF, ESP_UNCONTROLLED
from relay.core.locked import SIGNED_NO_BASIS
from relay.core.policy import Policy
from relay.settings import Settings


def builtin_lines(policy: Policy, settings: Settings | None) -> list[str]:
    """One entry per built-in decision (B1...), with the id it is recorded under."""
    signed = settings.smtp.signed if settings is not None else "pass"
    profile = settings.upstream.profile if settings is not None else "none"
    esp_tracking = settings.upstream.esp_tracking if settings is not None else "consented"
    rows = [
        (
            "no-consent",
            "a tracker signature's own no-consent action that would still make the recipient's "
            "client fetch something (strip_params, keep, gateway, minimise) is read as remove; "
            "rules check refuses one written so (section 2.1: the request is the read "
            "operation).",
        ),
        (
            SIGNED_NO_BASIS,
            "signed or encrypted parts are never modified; a tracker there stays only where the "
            "table gives it consent, the legacy regime or an exemption as written, and a "
            "recipient without such a basis does not get the copy: 550 5.7.1 naming this rule "
            "when no recipient gets it, else a failure notice for that recipient"
            + (
                " ([smtp] signed = pass)."
                if signed == "pass"
                else " ([smtp] signed = reject: every signed or encrypted message is refused)."
            ),
        ),
        (
            "consent-request click tracking",
            "a consent_request email with a vendor click-tracking link ([[click_tracker]]) is "
            "refused, 554 5.7.1 naming the links' rules (section 4.2: only the consent link "
            "is tracked); the ESP's click tracking is switched off for consent requests.",
        ),
        (
            FILLED,
            "each {{relay:consent_url}} placeholder is a per-recipient tracking link, recorded "
            "with purpose authentication_security and basis exempt (section 4.2: it lets only "
            "the holder of the address answer).",
        ),
        (
            REASK_WINDOW,
            f"in any email, a {{{{relay:consent_url}}}} placeholder is left empty within "
            f"{policy.reask_days} days of a refusal, a withdrawal or an unanswered request "
            f"(basis: none; section 4.2); {REASK_UNKNOWN} when the consent store cannot be "
            f"read, {NO_CONTROLLER} when no configured controller covers the message.",
        ),
    ]
    if profile == "none":
        rows.append((ESP_PIXEL_RULE, "no ESP profile: nothing behind the relay adds tracking."))
    elif esp_tracking == "off":
        rows.append(
            (
                ESP_TRACKING_OFF,
                f"the {profile} ESP's own open and click tracking is switched off for every "
                "email ([upstream] esp_tracking = off); tracking only goes through the relay.",
            )
        )
    else:
        rows.append(
            (
                ESP_PIXEL_RULE,
                f"the open pixel the {profile} ESP adds downstream is decided by the rows above "
                "as a campaign_performance tracker and recorded: kept (keep) where the "
                "recipient has a basis, and that email gets the withdrawal footer; otherwise the "
                "ESP's open and click tracking are switched off for that email"
                + (
                    f" ({ESP_UNCONTROLLED} when no control can be sent)."
                    if profile == "ses"
                    else "."
                ),
            )
        )
    lines = ["", "Built into the relay, whatever the table says (decision records name the id):"]
    lines += [f"  B{n} {rule}: {text}" for n, (rule, text) in enumerate(rows, start=1)]
    return lines
