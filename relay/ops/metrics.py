"""Prometheus metrics: names prefixed ``relay_``, base units, never an address in a label.

Rule 1: labels take values from closed sets only (results, reply classes, actions, purposes),
        so the number of series is bounded whatever the traffic.
Rule 2: with ``relay serve --workers N`` the processes write to a shared folder
        (``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor) and any process answers
        ``/metrics`` for all of them.
Rule 3: the per-message figures (``count``, ``observe``, ``delivery_started``/``_ended``) are
        tallied in process memory and written to the metrics by ``flush``: every second
        (``flush_every``), before this process answers ``/metrics`` and at shutdown. In the
        shared folder every write is a locked write to a memory-mapped file, 3 us for a
        counter and 6 us for a histogram; a message made about fifteen of them (5 % of the
        relay's CPU per message, issue 15). Another worker's last second may be missing
        from an answer; this process's never is.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
from collections import defaultdict

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

SESSIONS = Counter("relay_smtp_sessions", "SMTP sessions accepted")
MESSAGES = Counter(
    "relay_messages", "Messages by the reply the client got", ["result"]
)  # accepted, deferred, refused
UPSTREAM_REPLIES = Counter(
    "relay_upstream_replies", "Upstream answers per recipient by class", ["class"]
)  # 2xx, 4xx, 5xx
TRACKERS = Counter("relay_trackers", "Tracker decisions per recipient", ["action", "purpose"])
FOOTERS = Counter("relay_footers_injected", "Recipient copies that got a withdrawal link")
CONSENT_LOOKUPS = Counter(
    "relay_consent_lookups", "Consent states read per recipient", ["result"]
)  # ok, unavailable
PAGE_ACTIONS = Counter(
    "relay_page_actions",
    "Choices recipients made on the pages, per purpose (controller: a configured id)",
    ["action", "purpose", "controller"],
)  # action: granted, refused, withdrawn, objected
WEB_CLIENT_HEADER_INVALID = Counter(
    "relay_web_client_header_invalid",
    "Malformed Forwarded/X-Forwarded-For headers from trusted proxies (the proxy's address used)",
)
PROCESSING = Histogram(
    "relay_processing_seconds",
    "Time to filter one message (parse, detect, decide, rewrite)",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
UPSTREAM = Histogram(
    "relay_upstream_seconds",
    "Time to deliver one message's groups upstream",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0),
)
IN_FLIGHT = Gauge(
    "relay_deliveries_in_flight",
    "Messages being delivered upstream now (queue depth)",
    multiprocess_mode="livesum",
)


FLUSH_SECONDS = 1.0


class _Tally:
    """This process's figures since the last flush (Rule 3)."""

    def __init__(self) -> None:
        self.counts: defaultdict[tuple[Counter, tuple[str, ...]], float] = defaultdict(float)
        self.observed: defaultdict[Histogram, list[float]] = defaultdict(list)
        self.in_flight = 0
        self.in_flight_shown: int | None = None


_tally = _Tally()


def count(counter: Counter, *labels: str, amount: float = 1) -> None:
    """``counter.labels(*labels).inc(amount)``, at the next flush (Rule 3)."""
    if amount:
        _tally.counts[counter, labels] += amount


def observe(histogram: Histogram, value: float) -> None:
    """``histogram.observe(value)``, at the next flush (Rule 3)."""
    _tally.observed[histogram].append(value)


def delivery_started() -> None:
    _tally.in_flight += 1


def delivery_ended() -> None:
    _tally.in_flight -= 1


def _observe_all(histogram: Histogram, values: list[float]) -> None:
    """One write per bucket rather than two per value, through the histogram's own bucket
    and sum values when this prometheus_client has them (every version since 0.4)."""
    bounds = getattr(histogram, "_upper_bounds", None)
    buckets = getattr(histogram, "_buckets", None)
    total = getattr(histogram, "_sum", None)
    if bounds is None or buckets is None or total is None:
        for value in values:
            histogram.observe(value)
        return
    per_bucket = [0] * len(bounds)
    for value in values:
        per_bucket[bisect.bisect_left(bounds, value)] += 1  # the first bound >= value
    for bucket, n in zip(buckets, per_bucket, strict=True):
        if n:
            bucket.inc(n)
    total.inc(sum(values))


def flush() -> None:
    """Write the tallied figures to the metrics (Rule 3)."""
    counts, _tally.counts = _tally.counts, defaultdict(float)
    for (counter, labels), amount in counts.items():
        (counter.labels(*labels) if labels else counter).inc(amount)
    observed, _tally.observed = _tally.observed, defaultdict(list)
    for histogram, values in observed.items():
        _observe_all(histogram, values)
    if _tally.in_flight != _tally.in_flight_shown:
        IN_FLIGHT.set(_tally.in_flight)
        _tally.in_flight_shown = _tally.in_flight


async def flush_every(stopping: asyncio.Event, seconds: float = FLUSH_SECONDS) -> None:
    """Flush until ``stopping`` is set, then once more."""
    while not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)
        flush()


def reply_class(code: int) -> str:
    return f"{code // 100}xx" if 200 <= code < 600 else "other"


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type (all worker processes when several run)."""
    flush()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
