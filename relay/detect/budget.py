"""The CPU budget of one message's detection: how long the trackers stage may read it.

Stage: detection (pure). Input: a clock and an allowance, both given by the caller (pure code
reads no clock of its own; the relay passes ``time.process_time``). Output: ``check`` raises
``BudgetExceeded`` once the allowance is spent.

Rule 1: the budget is looked at between parts and every few tags inside a part, never inside
        one regex call: a look costs one clock read, and every call is linear (htmlgrammar).
Rule 2: running out is not an error of the message: the detector marks the part it was reading
        and every later part as unfinished, and the filter neutralises every image in them
        (fail closed); the decision record says so.
"""

from __future__ import annotations

from collections.abc import Callable


class BudgetExceeded(Exception):
    """The detection budget of this message is spent."""


class Budget:
    """``seconds`` of ``clock`` from now; ``check`` raises ``BudgetExceeded`` after that."""

    __slots__ = ("clock", "deadline", "seconds")

    def __init__(self, clock: Callable[[], float], seconds: float) -> None:
        self.clock = clock
        self.seconds = seconds
        self.deadline = clock() + seconds

    def expired(self) -> bool:
        return self.clock() > self.deadline

    def check(self) -> None:
        if self.clock() > self.deadline:
            raise BudgetExceeded(f"detection budget of {self.seconds:g} s spent")
