"""Where the pure core runs: in the event loop for small messages, in worker processes for
large ones, so that one big message never stalls the other SMTP sessions.

Input: a message, its envelope and consent states. Output: ``FilterResult``.

Rule 1: messages up to ``[smtp] inline_max_bytes`` (or every message with ``process_pool =
        0``) are filtered in the event loop; larger ones in a pool of ``process_pool`` worker
        processes. Each worker gets, once as it starts, the very context the relay validated
        (never the rule files read again: they may have been edited since, broken or not, and
        a worker must decide exactly as the relay does); per message only the message goes.
Rule 2: a worker that died (killed, out of memory) is replaced and the message filtered again
        here: nothing was sent yet, so nothing is lost or doubled.
Rule 3: ``reload`` swaps in validated rules: new messages use them, messages in flight finish
        with the rules they began with.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Mapping
from datetime import datetime

from relay.core.filtering import FilterContext, FilterResult, filter_message
from relay.model import ConsentState, Envelope
from relay.settings import Settings

log = logging.getLogger("relay.pipeline")

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
    return filter_message(_worker_context, raw, envelope, states, now, skip=skip, budget=budget)


class FilterRunner:
    def __init__(self, settings: Settings, context: FilterContext) -> None:
        self.settings = settings
        self.context = context
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        if settings.smtp.process_pool > 0:
            self._pool = self._new_pool()

    def _new_pool(self) -> concurrent.futures.ProcessPoolExecutor:
        import multiprocessing

        return concurrent.futures.ProcessPoolExecutor(
            max_workers=self.settings.smtp.process_pool,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.context,),
        )

    def reload(self, context: FilterContext) -> None:
        """Rule 3."""
        self.context = context
        if self._pool is not None:  # new workers, started with the new context
            old, self._pool = self._pool, self._new_pool()
            old.shutdown(wait=False)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)

    async def run(
        self,
        raw: bytes,
        envelope: Envelope,
        states: Mapping[str, ConsentState],
        now: datetime,
        skip: frozenset[str] = frozenset(),
    ) -> FilterResult:
        """Rules 1 and 2; ``skip`` and the render budget as ``filter_message`` takes them."""
        budget = self.settings.smtp.max_render_bytes
        context = self.context
        if self._pool is None or len(raw) <= self.settings.smtp.inline_max_bytes:
            return filter_message(context, raw, envelope, states, now, skip=skip, budget=budget)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool, _filter_in_worker, raw, envelope, states, now, skip, budget
            )
        except concurrent.futures.process.BrokenProcessPool:
            log.error("filter worker died; restarting the pool")
            self._pool = self._new_pool()
            return filter_message(context, raw, envelope, states, now, skip=skip, budget=budget)
