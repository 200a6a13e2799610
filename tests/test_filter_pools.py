"""Through the real relay: a huge message never holds up an ordinary large one, and a message
whose detection runs out of CPU budget goes out fail-closed with a record saying so.

Real SMTP on loopback (smtplib client, aiosmtpd upstream), real Redis, real worker processes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from relay.service import Running
from tests.support.harness import asend, make_settings, message, start_relay
from tests.support.smtp_sink import Sink

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


async def _relay(tmp_path: Path, redis_url: str, sink: Sink, **smtp: object) -> Running:
    settings = make_settings(tmp_path, redis_url, sink.url, smtp=dict(smtp))
    return await start_relay(settings, redis_url)


async def test_a_huge_message_does_not_queue_a_large_one_behind_it(
    tmp_path: Path, redis_url: str, sink: Sink
) -> None:
    running = await _relay(
        tmp_path, redis_url, sink,
        process_pool=1, large_pool=1, inline_max_bytes=1000, large_message_bytes=2_000_000,
        max_message_size=40_000_000, cpu_budget=0.0,
    )  # fmt: skip
    try:
        # 16 MB of images, each read, classified and kept: seconds of filtering in its worker.
        # (A 16 MB tag that never ends used to take seconds too; the C tokenizer of the scan
        # reads it in milliseconds.)
        huge = message(
            '<img src="https://cdn.shop.example/i.png">\r\n' * 380_000,
            message_id="<huge@shop.example>",
        )
        large = message("<p>news</p>\r\n" * 30_000, message_id="<large@shop.example>")
        done: dict[str, float] = {}
        sent = asyncio.Event()

        async def submit_huge() -> None:
            # A raw client, to know when the whole body has been sent (then the relay filters).
            reader, writer = await asyncio.open_connection("127.0.0.1", running.smtp_port)
            await reader.readline()
            for command in (b"EHLO app.test", b"MAIL FROM:<app@shop.example>",
                            b"RCPT TO:<alice@example.org>", b"DATA"):  # fmt: skip
                writer.write(command + b"\r\n")
                line = await reader.readline()
                while line[3:4] == b"-":
                    line = await reader.readline()
            writer.write(huge + b".\r\n")
            await writer.drain()
            sent.set()
            reply = await reader.readline()
            done["huge"] = time.monotonic()
            writer.close()
            assert reply.startswith(b"250"), reply

        def filtering() -> bool:
            # The huge message has been handed to a worker (the executor's queue of work).
            pools = running.pipeline.runner.pools.values()
            return any(getattr(pool, "_pending_work_items", None) for pool in pools)

        async def submit_large() -> None:
            await sent.wait()
            while not filtering():
                await asyncio.sleep(0.01)
            done["queued"] = time.monotonic()
            code, _ = await asend(running.smtp_port, large, ["alice@example.org"])
            assert code == 250
            done["large"] = time.monotonic()

        await asyncio.gather(submit_huge(), submit_large())
        # Behind the huge one in the same worker, the large one would wait for most of its
        # filtering: here it is done in a fraction of the time the huge one takes.
        large_latency = done["large"] - done["queued"]
        assert large_latency < (done["huge"] - done["queued"]) / 2, done
        assert len(sink.handler.received) == 2
    finally:
        await running.stop()


async def test_budget_spent_goes_out_fail_closed_with_the_record_saying_so(
    tmp_path: Path, redis_url: str, sink: Sink
) -> None:
    # A budget no detection can meet: every part is unfinished, every image neutralised.
    running = await _relay(tmp_path, redis_url, sink, cpu_budget=1e-9)
    try:
        html = (
            '<img src="https://cdn.shop.example/logo.png" width="200" height="50">'
            '<img src="https://t.unknown.example/o?u=Xk2bT9L0qR5yPz3mVv8nZw">'
        )
        code, _ = await asend(running.smtp_port, message(html), ["alice@example.org"])
        assert code == 250
        (copy,) = sink.handler.received
        assert b"t.unknown.example" not in copy.data
        assert b"cdn.shop.example" not in copy.data
        assert b"data:image/gif;base64," in copy.data
        (record,) = await running.pipeline.audit.by_message("<m1@shop.example>")
        assert {(t.rule, t.action, t.policy_rule) for t in record.trackers} == {
            ("cpu-budget", "neutralise", "cpu-budget")
        }
        assert len(record.trackers) == 2
    finally:
        await running.stop()
