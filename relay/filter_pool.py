"""Where the pure core runs: in the event loop for small messages, in worker processes for
large ones, so that one big message never stalls the other SMTP sessions; a pool per size class.

Input: a message, its envelope and consent states. Output: ``FilterResult``, computed with
``time.process_time`` as the CPU-budget clock (``[smtp] cpu_budget``).

Rule 1: messages up to ``[smtp] inline_max_bytes`` (or every message with ``process_pool =
        0``) are filtered in the event loop; larger ones in a pool of ``process_pool`` worker
        processes. Each worker gets, once as it starts, the very context the relay validated
        (never the rule files read again: they may have been edited since, broken or not, and
        a worker must decide exactly as the relay does); per message only the message goes.
Rule 2: a worker that died (killed, out of memory) is replaced and the message filtered again
        here: nothing was sent yet, so nothing is lost or doubled.
Rule 3: ``reload`` swaps in validated rules: new messages use them, messages in flight finish
        with the rules they began with.
Rule 4: messages over ``large_message_bytes`` have workers of their own (``large_pool``): a few
        huge messages never queue the ordinary large ones behind them.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import multiprocessing
import time
from collections.abc import Mapping
from datetime import datetime

from relay.core.filtering import FilterContext, FilterResult, filter_message
from relay.model import ConsentState, Envelope
from relay.settings import Settings

log = logging.getLogger("relay.pipeline")
SIZE_CLASSES = ("medium", "large")

_worker_context: FilterContext | None = None


def _init_worker(context: FilterContext) -> None:
    """Process-pool initializer: the relay's validated context, once per worker (Rule 1)."""
    global _worker_context
    _worker_context = context


def _filter_in_worker(
    raw: bytes,
    envelope: Envelope,
    states: Mapping[str, ConsentState],
    now: datetime,
    skip: frozenset[str],
    budget: int,
) -> FilterResult:
    assert _worker_context is not None, "worker not initialised"
    return filter_message(
        _worker_context, raw, envelope, states, now,
        skip=skip, budget=budget, clock=time.process_time,
    )  # fmt: skip


class FilterRunner:
    def __init__(self, settings: Settings, context: FilterContext) -> None:
        self.settings = settings
        self.context = context
        self.pools: dict[str, concurrent.futures.ProcessPoolExecutor] = {}
        for size_class in SIZE_CLASSES:
            if self._workers(size_class) > 0:
                self.pools[size_class] = self._new_pool(size_class)

    def _workers(self, size_class: str) -> int:
        smtp = self.settings.smtp
        if smtp.process_pool <= 0:
            return 0
        return smtp.large_pool if size_class == "large" else smtp.process_pool

    def _new_pool(self, size_class: str) -> concurrent.futures.ProcessPoolExecutor:
        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self._workers(size_class),
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.context,),
        )

    def size_class(self, size: int) -> str:
        """Rules 1 and 4: "inline", "medium" or "large"."""
        smtp = self.settings.smtp
        if not self.pools or size <= smtp.inline_max_bytes:
            return "inline"
        if size > smtp.large_message_bytes and "large" in self.pools:
            return "large"
        return "medium"

    def reload(self, context: FilterContext) -> None:
        """Rule 3."""
        self.context = context
        for size_class, old in list(self.pools.items()):  # new workers, the new context
            self.pools[size_class] = self._new_pool(size_class)
            old.shutdown(wait=False)

    def close(self) -> None:
        for pool in self.pools.values():
            pool.shutdown(wait=True)

    async def run(
        self,
        raw: bytes,
        envelope: Envelope,
        states: Mapping[str, ConsentState],
        now: datetime,
        skip: frozenset[str] = frozenset(),
    ) -> FilterResult:
        """Rules 1, 2 and 4; ``skip`` and the render budget as ``filter_message`` takes them."""
        budget = self.settings.smtp.max_render_bytes
        context = self.context
        size_class = self.size_class(len(raw))
        if size_class == "inline":
            return filter_message(
                context, raw, envelope, states, now,
                skip=skip, budget=budget, clock=time.process_time,
            )  # fmt: skip
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self.pools[size_class], _filter_in_worker, raw, envelope, states, now, skip, budget
            )
        except concurrent.futures.process.BrokenProcessPool:
            log.error("filter worker died; restarting the %s pool", size_class)
            self.pools[size_class] = self._new_pool(size_class)
            return filter_message(
                context, raw, envelope, states, now,
                skip=skip, budget=budget, clock=time.process_time,
            )  # fmt: skip
