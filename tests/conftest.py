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

import asyncio
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
from hypothesis import settings as hypothesis_settings

from relay.store.embedded import EmbeddedRedis
from tests.support.cluster import ValkeyCluster
from tests.support.smtp_sink import Sink

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


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    """An aiosmtpd upstream on loopback that keeps what it receives (``smtp_sink``); the
    outbound tests that need the wire bytes override it with a ``RawSink``."""
    s = await Sink().start()
    yield s
    await s.stop()


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


# Every log line of the suite, as the relay's formatter writes it, goes to a file per test
# process; the controlling process reads them all once the session ends, and a secret or an
# unmasked address in any line fails the run (no secret or address ever reaches a log).
_LOG_DIR = "RELAY_TEST_LOG_DIR"


def pytest_configure(config: pytest.Config) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):  # the controller, before workers start
        os.environ[_LOG_DIR] = tempfile.mkdtemp(prefix="relay-test-logs-")


@pytest.fixture(scope="session", autouse=True)
def _every_log_line() -> Iterator[None]:
    from relay.ops.logs import TextFormatter

    name = os.environ.get("PYTEST_XDIST_WORKER", "main")
    handler = logging.FileHandler(Path(os.environ[_LOG_DIR]) / f"{name}.log", encoding="utf-8")
    handler.setLevel(logging.INFO)
    handler.setFormatter(TextFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    yield
    root.setLevel(level)
    root.removeHandler(handler)
    handler.close()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER") or not os.environ.get(_LOG_DIR):
        return
    from tests.support.leaks import leaks

    folder = Path(os.environ[_LOG_DIR])
    lines = [
        line for path in sorted(folder.glob("*.log")) for line in path.read_text().splitlines()
    ]
    shutil.rmtree(folder, ignore_errors=True)
    found = leaks(lines)
    if found:
        shown = "\n  ".join(found[:20])
        print(f"\n{len(found)} log line(s) carry a secret or an unmasked address:\n  {shown}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


# The event loop the tests run on. `relay serve` runs on uvloop by default ([smtp] event_loop),
# so the suite does too; RELAY_TEST_LOOP=asyncio runs it on the standard library's loop.
def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> dict[str, Callable[[], asyncio.AbstractEventLoop]]:
    if os.environ.get("RELAY_TEST_LOOP", "uvloop") == "uvloop":
        import uvloop

        return {"uvloop": uvloop.new_event_loop}
    return {"asyncio": asyncio.new_event_loop}
