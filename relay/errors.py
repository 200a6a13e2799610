"""One exception tree for the relay. Each error that can reach a client carries its SMTP reply.

Rule: exceptions become SMTP replies only in ``receive.py``; anything not derived from
``RelayError`` is answered there with ``TEMP_INTERNAL`` (a 4xx), never a 500.
"""

from __future__ import annotations

from relay import replies
from relay.replies import Reply


class RelayError(Exception):
    reply: Reply = replies.TEMP_INTERNAL

    def __init__(self, message: str = "", reply: Reply | None = None) -> None:
        super().__init__(message or (reply or self.reply).message)
        if reply is not None:
            self.reply = reply


class SettingsError(RelayError):
    """A configuration file or value is wrong; the message names file, line and key."""


class RulesError(RelayError):
    """A rule file is wrong; the message names file, line and key."""


class MalformedMessage(RelayError):
    reply = replies.BAD_MIME


class LockedMessage(RelayError):
    """A signed or encrypted message that policy says to refuse."""

    reply = replies.SIGNED_REFUSED


class StoreUnavailable(RelayError):
    """Redis could not be reached or answered too late."""

    reply = replies.TEMP_REDIS


class UpstreamTemporary(RelayError):
    reply = replies.TEMP_UPSTREAM


class ReaskRefused(RelayError):
    reply = replies.REASK_REFUSED


class TrackedConsentRequest(RelayError):
    """A consent request carrying a vendor's click-tracking links (recommendation 4.2)."""

    reply = replies.CONSENT_REQUEST_TRACKED


class TokenError(RelayError):
    """A link token is forged, altered, expired or of the wrong kind."""


class DowngradeRefused(RelayError):
    """An 8-bit message that cannot be made 7-bit without changing what it says or breaking a
    signature it carries (RFC 6152 conversion); the message says why."""

    reply = replies.OUT_8BIT
