"""The per-client token bucket: burst, refill, independence of clients, bounded memory."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from relay.inbound.ratelimit import RateLimiter


def test_off_when_zero() -> None:
    limiter = RateLimiter(0)
    assert not limiter.enabled
    assert all(limiter.allow("192.0.2.1", 0.0) for _ in range(1000))
    assert len(limiter) == 0


def test_burst_of_the_rate_then_refill_at_the_rate() -> None:
    limiter = RateLimiter(60)  # one a second
    assert all(limiter.allow("a", 100.0) for _ in range(60))
    assert not limiter.allow("a", 100.0)
    assert limiter.retry_after("a", 100.0) == 1.0
    assert not limiter.allow("a", 100.5)
    assert limiter.allow("a", 101.0)
    assert not limiter.allow("a", 101.0)
    # After a long pause the bucket is full again, never fuller.
    assert sum(limiter.allow("a", 10_000.0) for _ in range(100)) == 60


def test_clients_have_their_own_buckets() -> None:
    limiter = RateLimiter(1)
    assert limiter.allow("a", 0.0)
    assert not limiter.allow("a", 0.0)
    assert limiter.allow("b", 0.0)
    assert limiter.retry_after("c", 0.0) == 0.0


def test_a_clock_going_backwards_gives_nothing_extra() -> None:
    limiter = RateLimiter(2)
    assert limiter.allow("a", 50.0) and limiter.allow("a", 50.0)
    assert not limiter.allow("a", 10.0)
    assert not limiter.allow("a", 50.0)


def test_memory_is_bounded() -> None:
    limiter = RateLimiter(10, max_keys=100)
    for i in range(1000):
        limiter.allow(f"idle-{i}", float(i * 60))  # each refilled by the next one's arrival
    assert len(limiter) <= 100
    busy = RateLimiter(10, max_keys=100)
    for i in range(1000):
        busy.allow(f"busy-{i}", 0.0)  # nobody has refilled: the oldest half goes
    assert len(busy) <= 100


@given(
    rate=st.integers(min_value=1, max_value=600),
    gaps=st.lists(st.floats(min_value=0, max_value=5, allow_nan=False), max_size=200),
)
def test_never_more_than_burst_plus_refill(rate: int, gaps: list[float]) -> None:
    limiter = RateLimiter(rate)
    now = 0.0
    allowed = 0
    for gap in gaps:
        now += gap
        allowed += limiter.allow("a", now)
    assert allowed <= rate + now * rate / 60 + 1e-6
