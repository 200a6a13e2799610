"""`relay audit recount` on a real Valkey: progress and a summary on stderr, a second run that
corrects nothing, one line and exit status 2 for a bad date."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from relay.store.audit_counts import count_keys, day_number, read_counts
from relay.store.redis_keys import Keys
from tests.cli.test_audit_cli import _write, config, run  # noqa: F401 (fixture)
from tests.support.audit import message
from tests.support.redis import async_client

KEYS = Keys("c:")
TODAY = datetime.now(UTC).date()


def _records_today(redis_url: str) -> int:
    async def main() -> int:
        client = async_client(redis_url)
        day = day_number(datetime.now(UTC))
        counts = await read_counts(client, count_keys(KEYS), day, day)
        await client.aclose()
        return counts.total("n")

    return asyncio.run(main())


def _forget_counts(redis_url: str) -> None:
    async def main() -> None:
        client = async_client(redis_url)
        for ck in count_keys(KEYS):
            await client.delete(ck.counts, ck.dims, ck.days, ck.without_consent)
        await client.aclose()

    asyncio.run(main())


def test_recount_restores_the_counts_and_says_what_it_did(
    config: str,  # noqa: F811
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _write(redis_url, tmp_path, [*message(1), *message(2, rcpts=3)])
    _forget_counts(redis_url)
    assert _records_today(redis_url) == 0
    assert run(["recount", "--config", config]) == 0
    err = capsys.readouterr().err
    assert " records [" in err  # the progress bar (tqdm)
    summary = err.strip().splitlines()[-1]
    assert summary.startswith(f"relay audit: 5 record(s) of {TODAY} to {TODAY} ")
    assert "recounted on 1 day(s)" in summary and "0 count(s)" not in summary
    assert _records_today(redis_url) == 5
    assert run(["recount", "--from", str(TODAY), "--to", str(TODAY), "--config", config]) == 0
    again = capsys.readouterr().err.strip().splitlines()[-1]
    assert again.endswith("0 count(s) and 0 'tracked without consent' entr(ies) corrected")
    assert _records_today(redis_url) == 5


def test_an_empty_log_has_nothing_to_count(
    config: str,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["recount", "--no-progress", "--config", config]) == 0
    assert capsys.readouterr().err == "relay audit: no record to count\n"


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--from", "2026-13-01"], "--from: not a date: '2026-13-01' (e.g. 2026-04-14)"),
        (["--to", "yesterday"], "--to: not a date: 'yesterday' (e.g. 2026-04-14)"),
        (["--from", "2026-05-02", "--to", "2026-05-01"], "--to must not be before --from"),
    ],
)
def test_a_bad_date_is_one_line_and_status_2(
    config: str,  # noqa: F811
    argv: list[str],
    said: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["recount", *argv, "--config", config]) == 2
    captured = capsys.readouterr()
    assert captured.err == f"relay audit: {said}\n" and captured.out == ""


def test_a_range_before_any_record_corrects_nothing(
    config: str,  # noqa: F811
    redis_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _write(redis_url, tmp_path, message(1))
    week_ago = TODAY - timedelta(days=7)
    assert run(["recount", "--from", str(week_ago), "--to", str(week_ago), "--config", config]) == 0
    assert "0 record(s)" in capsys.readouterr().err
    assert _records_today(redis_url) == 2
