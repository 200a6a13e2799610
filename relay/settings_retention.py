"""``[retention]`` settings: how long the relay keeps what it stores about recipients.

Part of the settings vocabulary (``relay.settings`` loads and checks them with this module);
``relay.store.retention`` applies them, and its docstring argues the defaults from the
recommendation and the GDPR's storage limitation.
Rule 1: 0 days turns a limit off (the data is kept for ever: not recommended).
Rule 2: consent proofs outlive the decision records that cite them: ``consent_days`` is at
        least ``[audit] retention_days``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from relay.errors import SettingsError


@dataclass(frozen=True)
class RetentionSettings:
    # Days a recipient's day-of-last-open entry is kept after that open (13 months); 0 = ever.
    last_open_days: int = 396
    # Days a consent chain is kept after the relay stopped relying on it (5 years); 0 = ever.
    consent_days: int = 1826


def check_retention(
    retention: RetentionSettings, audit_days: int, fail: Callable[[str, str], SettingsError]
) -> None:
    """Rule 2; ``fail(dotted key, message)`` builds the error naming file and line."""
    days = retention.consent_days
    if days and days < audit_days:
        raise fail(
            "retention.consent_days",
            f"{days} is shorter than audit.retention_days ({audit_days}): "
            "decision records would cite consent proofs already deleted",
        )
