"""What sending one recipient group gives back, and the interface every upstream implements.

Input: nothing (vocabulary of the outbound edge). Output: ``UpstreamReply`` per recipient,
``GroupOutcome`` per group, the ``Upstream`` protocol the conductor calls.

Rule 1: every recipient of a group gets exactly one reply: the upstream's, or one of the relay's
        own (``relay.replies`` R-3xx) standing where the upstream's would.
Rule 2: ``Upstream.send`` never raises for anything the upstream or the message does; it
        answers. Only cancellation propagates.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from relay.replies import Reply


@dataclass(frozen=True, slots=True)
class UpstreamReply:
    code: int
    message: str

    @classmethod
    def own(cls, reply: Reply, detail: str = "") -> UpstreamReply:
        """One of the relay's own replies (Rule 1), with its id, and a detail if given."""
        text = f"{reply.enhanced} {reply.message}"
        if detail:
            text += f": {detail}"
        return cls(reply.code, f"{text} [{reply.id}]")

    @property
    def text(self) -> str:
        return f"{self.code} {self.message}".strip()

    @property
    def accepted(self) -> bool:
        return 200 <= self.code < 300

    @property
    def permanent(self) -> bool:
        return self.code >= 500


@dataclass
class GroupOutcome:
    """Per-recipient upstream replies for one transaction."""

    replies: dict[str, UpstreamReply] = field(default_factory=dict)
    # Accepted by an upstream without DSN while their NOTIFY asked for SUCCESS: the relay owes
    # the sender a "relayed" notice for them (RFC 3461 5.2.2).
    relayed: list[str] = field(default_factory=list)

    def accepted(self) -> list[str]:
        return [r for r, reply in self.replies.items() if reply.accepted]

    def refused(self) -> list[str]:
        return [r for r, reply in self.replies.items() if reply.permanent]

    def deferred(self) -> list[str]:
        return [r for r, reply in self.replies.items() if 400 <= reply.code < 500]


def every(rcpts: Sequence[str], reply: UpstreamReply) -> GroupOutcome:
    return GroupOutcome({r: reply for r in rcpts})


XForward = Sequence[tuple[str, str]]
# Called with the recipients the upstream accepted, as the end of the data goes out (before its
# reply is read): the conductor writes them "in flight" in the delivery ledger (RFC 1047).
Commit = Callable[[Sequence[str]], Awaitable[None]]
# Re-encodes an 8-bit message for an upstream without 8BITMIME (and re-signs it where DKIM is
# configured); raises ``relay.errors.DowngradeRefused`` naming why it cannot.
Downgrade = Callable[[bytes], Awaitable[bytes]]


class Upstream(Protocol):
    async def send(
        self,
        mail_from: str,
        rcpts: Sequence[str],
        data: bytes,
        options: Sequence[str],
        *,
        xforward: XForward = (),
        rcpt_options: Mapping[str, Sequence[str]] | None = None,
        downgrade: Downgrade | None = None,
        commit: Commit | None = None,
    ) -> GroupOutcome: ...

    async def close(self) -> None: ...
