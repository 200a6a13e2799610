"""Shared fixtures: a real Valkey server per test worker, fresh data for every test.

Each pytest-xdist worker starts its own server on a free loopback port; every test that asks
for ``redis_url`` gets the database flushed first, so tests never see each other's data. Tests
that need to stop or break Redis take ``private_redis`` and get a server of their own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings as hypothesis_settings

from relay.store.embedded import EmbeddedRedis

# CI explores the same examples on every run (a red CI must mean a regression, not a new random
# draw); locally hypothesis keeps drawing new examples, which is where it finds bugs.
hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    hypothesis_settings.load_profile("ci")

# The sample messages the project ships (examples/README.md says what each one stands for).
CORPUS = Path(__file__).resolve().parents[1] / "examples"


def require_tool(name: str) -> str:
    """The path of a program the test needs: skipped without it, failed under CI's
    ``RELAY_REQUIRE_TOOLS=1`` (where a missing tool means .ci/run did not install it)."""
    import os
    import shutil

    found = shutil.which(name)
    if found:
        return found
    if os.environ.get("RELAY_REQUIRE_TOOLS") == "1":
        pytest.fail(f"{name} is required (RELAY_REQUIRE_TOOLS=1)")
    pytest.skip(f"{name} not installed")


# Debian's Chromium as root in a sandbox-less CI machine: the flags this workplace's probe found
# necessary (no sandbox, no GPU, no network calls of its own), and /dev/shm left alone because
# it is small on CI machines.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
# Chromium under full CPU load sometimes answers a screenshot with "Unable to capture
# screenshot"; the page is fine, so the capture is tried again.
SCREENSHOT_TRIES = 3


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    if not CORPUS.exists():
        pytest.fail(f"corpus not found at {CORPUS}")
    return CORPUS


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[Callable[[], EmbeddedRedis]]:
    """Factory of servers owned by one test (to stop, restart or break them)."""
    started: list[EmbeddedRedis] = []

    def make() -> EmbeddedRedis:
        server = EmbeddedRedis(tmp_path / f"redis{len(started)}", appendonly=True).start()
        started.append(server)
        return server

    yield make
    for server in started:
        server.stop()
