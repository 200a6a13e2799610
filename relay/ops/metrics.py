"""Prometheus metrics: names prefixed ``relay_``, base units, never an address in a label.

Rule 1: labels take values from closed sets only (results, reply classes, actions, purposes),
        so the number of series is bounded whatever the traffic.
Rule 2: with ``relay serve --workers N`` the processes write to a shared folder
        (``PROMETHEUS_MULTIPROC_DIR``, set by the supervisor) and any process answers
        ``/metrics`` for all of them.
"""

from __future__ import annotations

import os

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


def reply_class(code: int) -> str:
    return f"{code // 100}xx" if 200 <= code < 600 else "other"


def exposition() -> tuple[bytes, str]:
    """The metrics text and its content type (all worker processes when several run)."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
