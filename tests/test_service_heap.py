"""service Rule 6: the heap start-up leaves is frozen out of the garbage collector, and a
reload lets the rules it replaces go (they would stay frozen for the life of the process).

The gen-2 pauses this removes were measured, not asserted: 20-35 ms per full collection in a
relay worker under load (README, performance section)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

import pytest

from tests.support.harness import make_settings, start_relay

pytestmark = pytest.mark.timeout(60)


async def test_startup_heap_is_frozen_and_a_reload_frees_the_replaced_rules(
    tmp_path: Path, redis_url: str
) -> None:
    gc.unfreeze()  # whatever an earlier test in this worker left frozen
    settings = make_settings(tmp_path, redis_url, "smtp://127.0.0.1:9")
    running = await start_relay(settings, redis_url)
    try:
        # The rules and compiled signature sets alone are tens of thousands of objects.
        assert gc.get_freeze_count() > 20_000
        replaced = weakref.ref(running.pipeline.context)
        assert running.reload()
        gc.collect()
        assert replaced() is None, "the replaced rules are still held (frozen or referenced)"
        assert gc.get_freeze_count() > 20_000  # the new rules are frozen in their turn
    finally:
        await running.stop()
        gc.unfreeze()
