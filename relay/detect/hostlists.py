"""Plain-text host lists of the rule files (``lists/content_cdns.txt``): membership by host.

Stage: detection (pure). Input: a list's name and its host globs (``signatures`` Rule 1).
Output: a ``HostList`` that tells whether a host is on the list. Loading refuses an entry that is
neither a host name nor a host glob, naming the list; a lookup never raises.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from relay.detect.signatures import CACHE_LIMIT, HOST_GLOB, compile_re2, host_pattern
from relay.errors import RulesError


@dataclass(frozen=True)
class HostList:
    """A plain-text list of host globs (``lists/content_cdns.txt``): membership by host."""

    pattern: Any  # RE2 regex (full match) or None
    _cache: dict[str, bool] = field(default_factory=dict, compare=False)

    @classmethod
    def build(cls, name: str, globs: Sequence[str]) -> HostList:
        for glob in globs:
            if not HOST_GLOB.match(glob.lower()):
                raise RulesError(f"lists/{name}.txt: {glob!r} is not a host name or a host glob")
        if not globs:
            return cls(None)
        return cls(compile_re2("(?:" + "|".join(host_pattern(g) for g in globs) + ")$"))

    def __contains__(self, host: object) -> bool:
        if self.pattern is None or not isinstance(host, str):
            return False
        hit = self._cache.get(host)
        if hit is None:
            hit = self.pattern.match(host) is not None
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[host] = hit
        return hit
