"""The SMTP session's idle timer, without a new loop timer for every command.

aiosmtpd closes a session that sends nothing for ``timeout`` seconds. It does so by
cancelling its loop timer and making a new one at every command: MAIL, RCPT and DATA of every
message, plus the pause around the handler's work (``receive.py`` Rule 5). With uvloop that
costs about 2.6 us each, and each of those timers is cancelled long before it would fire.

Stage: async edge (inbound). Mixed into ``RelaySMTP`` before aiosmtpd's ``SMTP``.

Rule 1: a command moves the idle deadline; the timer already armed stays. When it fires
        before the deadline (a command came meanwhile), it is armed again for the rest, so a
        session is closed exactly when it has been idle for ``timeout`` seconds, as before.
Rule 2: a shorter limit than the armed one (the PROXY header's, at the start) re-arms at once.
Rule 3: ``pause_idle_timer`` stops the count while the handler processes a message; the next
        ``_reset_timeout`` (before the reply) starts it again. A timer that fires while paused
        only arms itself once more.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING


class IdleTimer:
    # aiosmtpd's SMTP provides these (its constructor sets them).
    loop: asyncio.AbstractEventLoop
    _timeout_duration: float
    _timeout_handle: asyncio.TimerHandle | None

    _idle_until = 0.0  # when the session counts as idle (Rule 1)
    _idle_armed = 0.0  # when the armed timer fires
    _idle_paused = False

    if TYPE_CHECKING:

        def _timeout_cb(self) -> None: ...  # aiosmtpd's: log and close the transport

    def _reset_timeout(self, duration: float | None = None) -> None:
        self._idle_until = self.loop.time() + (duration or self._timeout_duration)
        self._idle_paused = False
        if self._timeout_handle is None or self._idle_until < self._idle_armed:  # Rule 2
            self._arm()

    def pause_idle_timer(self) -> None:
        self._idle_paused = True

    def _arm(self) -> None:
        if self._timeout_handle is not None:
            self._timeout_handle.cancel()
        self._idle_armed = self._idle_until
        self._timeout_handle = self.loop.call_at(self._idle_until, self._idle_check)

    def _idle_check(self) -> None:
        if self._idle_paused:  # Rule 3
            self._idle_until = self.loop.time() + self._timeout_duration
        # Compared with the time it was armed for, not the clock: the loop ran it, so that
        # time has come (uvloop's clock counts milliseconds and may read a fraction earlier).
        if self._idle_paused or self._idle_until > self._idle_armed:
            self._timeout_handle = None
            self._arm()
            return
        self._timeout_cb()
