"""``relay.ops.metrics`` Rule 3: figures tallied in memory reach the metrics at each flush,
exactly as direct updates would have (the histogram's buckets and sum included)."""

from __future__ import annotations

import asyncio
import math
import re

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from relay.ops import metrics

BOUNDS = (0.001, 0.01, 0.1, 1.0)


def _samples(registry: CollectorRegistry, name: str) -> dict[str, float]:
    return {
        f"{s.name}{sorted(s.labels.items())}": s.value
        for family in registry.collect()
        for s in family.samples
        if s.name.startswith(name) and not s.name.endswith("_created")
    }


def test_counts_wait_for_the_flush_then_add_up_per_label() -> None:
    registry = CollectorRegistry()
    counter = Counter("tally_test", "test", ["result"], registry=registry)
    plain = Counter("tally_plain", "test", registry=registry)
    metrics.count(counter, "accepted")
    metrics.count(counter, "accepted", amount=2)
    metrics.count(counter, "refused", amount=0)  # nothing written for a zero
    metrics.count(plain)
    assert registry.get_sample_value("tally_test_total", {"result": "accepted"}) is None
    metrics.flush()
    assert registry.get_sample_value("tally_test_total", {"result": "accepted"}) == 3
    assert registry.get_sample_value("tally_test_total", {"result": "refused"}) is None
    assert registry.get_sample_value("tally_plain_total") == 1
    metrics.flush()  # nothing counted twice
    assert registry.get_sample_value("tally_test_total", {"result": "accepted"}) == 3


def test_observations_land_in_the_buckets_observe_would_choose() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    tallied = Histogram("tally_seconds", "test", buckets=BOUNDS, registry=ours)
    direct = Histogram("tally_seconds", "test", buckets=BOUNDS, registry=theirs)
    # Values on each bound, between bounds, zero, above the last bound.
    values = [0.0, 0.001, 0.0011, 0.01, 0.05, 0.1, 0.99999, 1.0, 1.5, 300.0, math.inf]
    for value in values:
        metrics.observe(tallied, value)
        direct.observe(value)
    metrics.flush()
    assert _samples(ours, "tally_seconds") == _samples(theirs, "tally_seconds")


def test_in_flight_gauge_shows_the_current_count() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("tally_gauge", "test", registry=registry)
    before = metrics.IN_FLIGHT
    metrics.IN_FLIGHT = gauge  # the module's gauge, read at flush time
    try:
        metrics.delivery_started()
        metrics.delivery_started()
        metrics.delivery_ended()
        metrics.flush()
        assert registry.get_sample_value("tally_gauge") == 1
        metrics.delivery_ended()
        metrics.flush()
        assert registry.get_sample_value("tally_gauge") == 0
    finally:
        metrics.IN_FLIGHT = before


def _footers(text: bytes) -> float:
    found = re.search(rb"^relay_footers_injected_total (\S+)$", text, re.M)
    assert found is not None
    return float(found.group(1))


def test_the_exposition_includes_what_was_just_counted() -> None:
    before = _footers(metrics.exposition()[0])
    metrics.count(metrics.FOOTERS, amount=5)
    assert _footers(metrics.exposition()[0]) == before + 5


async def test_flush_every_flushes_until_stopped_and_once_more() -> None:
    registry = CollectorRegistry()
    counter = Counter("tally_loop", "test", registry=registry)
    stopping = asyncio.Event()
    task = asyncio.create_task(metrics.flush_every(stopping, seconds=0.05))
    metrics.count(counter)
    await asyncio.sleep(0.2)
    assert registry.get_sample_value("tally_loop_total") == 1
    metrics.count(counter)
    stopping.set()
    await task
    assert registry.get_sample_value("tally_loop_total") == 2
