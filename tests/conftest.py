"""Shared fixtures: a real Valkey server per test worker, fresh data for every test.

Each pytest-xdist worker starts its own server on a free loopback port; every test that asks
for ``redis_url`` gets the database flushed first, so tests never see each other's data. Tests
that need to stop or break Redis take ``private_redis`` and get a server of their own.

``RELAY_TEST_REDIS=cluster`` runs the same tests against a Valkey Cluster instead (3 masters,
3 replicas, one per worker, started from the same binary: ``tests/support/cluster.py``):
``redis_url`` then hands out its ``redis+cluster://`` URL, flushed on every master before each
test. ``cluster`` always gives that shared cluster, for the tests written for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings as hypothesis_settings

from relay.store.embedded import EmbeddedRedis
from tests.support.cluster import ValkeyCluster

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


CLUSTER_MODE = os.environ.get("RELAY_TEST_REDIS", "server")
if CLUSTER_MODE not in ("server", "cluster"):
    raise pytest.UsageError(f"RELAY_TEST_REDIS must be server or cluster, not {CLUSTER_MODE!r}")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("redis"), appendonly=False).start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ValkeyCluster]:
    """One cluster per worker, started on first use (a few seconds), shared by its tests."""
    cluster = ValkeyCluster(tmp_path_factory.mktemp("cluster")).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def cluster(shared_cluster: ValkeyCluster) -> ValkeyCluster:
    """The worker's cluster, emptied; a test that kills a node takes ``private_cluster``."""
    shared_cluster.flush()
    return shared_cluster


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    if CLUSTER_MODE == "cluster":
        cluster: ValkeyCluster = request.getfixturevalue("cluster")
        return cluster.url
    server: EmbeddedRedis = request.getfixturevalue("redis_server")
    client = redis.Redis.from_url(server.url)
    client.flushall()
    client.close()
    return server.url


@pytest.fixture
def private_cluster(tmp_path: Path) -> Iterator[ValkeyCluster]:
    """A cluster owned by one test (to kill masters in)."""
    cluster = ValkeyCluster(tmp_path / "cluster", appendonly=True).start()
    yield cluster
    cluster.stop()


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
