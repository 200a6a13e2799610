"""Per-client rate limits: a token bucket per key (the client's IP address).

Input: a key and the current time from a monotonic clock, passed in by the caller.
Output: whether one more message may start now.

Rule 1: pure and in-process: no clock, no I/O, no asyncio here; each relay process keeps its
        own buckets (with ``--workers N`` a client may get up to N times the rate).
Rule 2: a bucket holds at most ``per_minute`` tokens and refills continuously at
        ``per_minute / 60`` per second, so a client may send a burst of ``per_minute`` messages
        and then ``per_minute`` per minute on average.
Rule 3: memory is bounded: buckets that have refilled completely carry no information and are
        dropped when the table grows past ``max_keys``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """``allow(key, now)`` takes one token from ``key``'s bucket if there is one."""

    def __init__(self, per_minute: int, *, max_keys: int = 10_000) -> None:
        self.capacity = float(per_minute)
        self.refill_per_second = per_minute / 60.0
        self.max_keys = max_keys
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return self.capacity > 0

    def _level(self, bucket: _Bucket, now: float) -> float:
        elapsed = max(0.0, now - bucket.updated)
        return min(self.capacity, bucket.tokens + elapsed * self.refill_per_second)

    def allow(self, key: str, now: float) -> bool:
        if not self.enabled:
            return True
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_keys:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(self.capacity, now)
        bucket.tokens = self._level(bucket, now)
        bucket.updated = max(bucket.updated, now)
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return True
        return False

    def retry_after(self, key: str, now: float) -> float:
        """Seconds until ``key`` may send again (0 when it may now)."""
        bucket = self._buckets.get(key)
        if not self.enabled or bucket is None:
            return 0.0
        missing = 1.0 - self._level(bucket, now)
        return max(0.0, missing / self.refill_per_second)

    def _prune(self, now: float) -> None:
        full = [k for k, b in self._buckets.items() if self._level(b, now) >= self.capacity]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self.max_keys:
            # Every client is busy: forget the least recently seen half rather than grow.
            by_age = sorted(self._buckets, key=lambda k: self._buckets[k].updated)
            for key in by_age[: len(by_age) // 2]:
                del self._buckets[key]

    def __len__(self) -> int:
        return len(self._buckets)
