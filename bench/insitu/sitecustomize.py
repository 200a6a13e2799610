"""An instrument for `bench/filter_share.py`, loaded into the relay's processes only (through
``PYTHONPATH``) and idle unless ``BENCH_FILTER`` is set. Never part of a relay in service.

Rule 1: ``BENCH_FILTER=time`` times every ``filter_message`` call the relay makes in its own
        processes (``time.thread_time``: this thread's CPU, preemption excluded), split at
        60,000 bytes, and the garbage collector's passes once messages come (all, and the full
        ones); each process writes its tallies as JSON to ``$BENCH_FILTER_OUT.<pid>`` every
        100 calls.
Rule 2: ``BENCH_FILTER=reuse`` keeps each result and returns it again for the same message
        and recipients: the relay then runs without the filter's cost (a bound, not a relay:
        every copy of a message gets the first copy's decisions and audit record). The key
        leaves out the tag ``bench/smtp_bench.py``'s ``unique`` writes into the Message-ID.
"""

from __future__ import annotations

import gc
import importlib.abc
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

MODE = os.environ.get("BENCH_FILTER", "")
_BENCH_TAG = re.compile(rb"(?<=Message-ID: <)[bp]\d+-\d+-\d+[.@]")
BIG = 60_000


def _timed(filter_message: Callable[..., Any]) -> Callable[..., Any]:
    """Rule 1."""
    tallies = {"small_n": 0, "small_s": 0.0, "big_n": 0, "big_s": 0.0}
    tallies |= {"gc_n": 0, "gc_s": 0.0, "gc_full_n": 0, "gc_full_s": 0.0}
    gc_started = [0.0]

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if not tallies["small_n"] + tallies["big_n"]:
            return  # start-up's passes, before the heap is frozen, are not the messages'
        if phase == "start":
            gc_started[0] = time.thread_time()
        else:
            spent = time.thread_time() - gc_started[0]
            tallies["gc_n"] += 1
            tallies["gc_s"] += spent
            if info["generation"] == 2:
                tallies["gc_full_n"] += 1
                tallies["gc_full_s"] += spent

    gc.callbacks.append(on_gc)
    out = os.environ["BENCH_FILTER_OUT"] + f".{os.getpid()}"

    def timed(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return filter_message(*args, **kwargs)
        finally:
            size = "big" if len(args[1]) > BIG else "small"
            tallies[size + "_n"] += 1
            tallies[size + "_s"] += time.thread_time() - started
            if not (tallies["small_n"] + tallies["big_n"]) % 100:
                with open(out, "w") as file:
                    json.dump(tallies, file)

    return timed


def _reused(filter_message: Callable[..., Any]) -> Callable[..., Any]:
    """Rule 2."""
    kept: dict[tuple[bytes, tuple[str, ...]], Any] = {}

    def reused(context: Any, raw: bytes, envelope: Any, *args: Any, **kwargs: Any) -> Any:
        key = (_BENCH_TAG.sub(b"", raw, count=1), envelope.rcpt_tos)
        if key not in kept:
            kept[key] = filter_message(context, raw, envelope, *args, **kwargs)
        return kept[key]

    return reused


class _Patch(importlib.abc.MetaPathFinder):
    """Wraps ``relay.filter_pool.filter_message`` as soon as the pipeline, its user, is
    imported; then steps aside."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> ModuleSpec | None:
        if fullname == "relay.pipeline":
            sys.meta_path.remove(self)
            import relay.filter_pool as pool

            wrap = _timed if MODE == "time" else _reused
            pool.filter_message = wrap(pool.filter_message)  # type: ignore[attr-defined]
        return None


if MODE in ("time", "reuse"):
    sys.meta_path.insert(0, _Patch())
