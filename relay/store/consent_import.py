"""Bulk import of consent events from CSV (``relay consent import FILE.csv``).

Stage: CLI edge over the consent store.
Input: a UTF-8 CSV file (an Excel byte-order mark is accepted) with a header row naming the
columns below, one event per row. Output: the events appended to each recipient's hash chain,
and a report (rows read, events added, rows already imported, bad rows).

Columns (header names; order free; only the first three are required):
    address            the recipient's email address
    event              collected, informed, objected, requested, granted, refused, withdrawn,
                       expired
    occurred_at        ISO-8601 with an offset, e.g. 2025-11-03T14:05:00Z
    purposes           purpose ids separated by ";" (needed by requested/granted/refused/
                       withdrawn/expired; for informed, the purposes the legacy notice named)
    actor              recipient, import, admin, system, api (default: import)
    method             checkbox, button, link_confirmation, import, api, relay, admin
                       (default: import)
    notice_id, notice_version, notice_language, notice_hash      the notice shown
    controller         the controller's id (default: ``--controller``, or the only one)
    ip, user_agent, token_id                                     evidence where a person acted
    source_<name>      any number of source fields, e.g. source_form_id, source_form_version,
                       source_page, source_message_ref
Empty cells mean "not known". The store adds ``source.import_file`` and ``source.import_line``.
A ``granted`` or ``informed`` row must give ``method``, a ``source_<name>`` and
``notice_version`` (proof before reliance: ``consent_proof`` Rule 6); the import's own
defaults prove nothing.

Rule 1: idempotent: each row's fingerprint (what the event says, not where the row sits in
        the file) is stored with the event in the same script, so importing a file twice, or
        a file that repeats rows, adds nothing the second time.
Rule 2: a bad row is reported as ``FILE:LINE: what is wrong`` and skipped; good rows are still
        imported. A bad header or an unreadable file stops the import before anything is written.
Rule 3: writes are pipelined in batches (``BATCH`` rows, two round trips per batch), so that a
        million events take minutes.
"""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm import tqdm

from relay.model import ConsentEvent
from relay.store.consent import Pending, RedisConsentStore
from relay.store.consent_proof import check_proof, fingerprint, parse_time, validate_event

BATCH = 1000
REQUIRED = ("address", "event", "occurred_at")
OPTIONAL = (
    "purposes", "actor", "method", "notice_id", "notice_version", "notice_language",
    "notice_hash", "ip", "user_agent", "token_id", "controller",
)  # fmt: skip
EVIDENCE = ("ip", "user_agent", "token_id")
IMPORT_SOURCE = ("import_file", "import_line")
# The proof fields of a granted/informed row (consent_proof Rule 6), as columns.
_NAMES = {"method": "method", "source": "source_<name>", "notice.version": "notice_version"}


class ImportFileError(ValueError):
    """The file as a whole cannot be imported (unreadable, bad header); nothing was written."""


@dataclasses.dataclass
class ImportReport:
    rows: int = 0
    added: int = 0
    skipped: int = 0  # already imported (or repeated in the file)
    bad: int = 0


def _check_header(path: str, header: list[str]) -> list[str]:
    names = [h.strip().lower() for h in header]
    for name in names:
        if name not in REQUIRED and name not in OPTIONAL and not name.startswith("source_"):
            known = ", ".join((*REQUIRED, *OPTIONAL, "source_<name>"))
            raise ImportFileError(f"{path}:1: unknown column {name!r} (known: {known})")
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise ImportFileError(f"{path}:1: missing column(s): {', '.join(missing)}")
    if len(set(names)) != len(names):
        raise ImportFileError(f"{path}:1: a column is named twice")
    return names


def row_event(
    cells: dict[str, str], file_name: str, line: int, controller: str = ""
) -> ConsentEvent:
    """One CSV row (header name -> cell) -> an unvalidated event (ValueError on bad cells)."""
    source = {k[len("source_") :]: v for k, v in cells.items() if k.startswith("source_") and v}
    source.update(import_file=file_name, import_line=str(line))
    notice = {k[len("notice_") :]: v for k, v in cells.items() if k.startswith("notice_") and v}
    purposes: tuple[Any, ...] = tuple(
        p.strip() for p in cells.get("purposes", "").split(";") if p.strip()
    )  # plain strings here; validate_event turns them into Purpose or names the bad one
    return ConsentEvent(
        event=cells["event"],  # type: ignore[arg-type]  # checked by validate_event
        purposes=purposes,
        address=cells["address"],
        occurred_at=parse_time(cells["occurred_at"]),
        actor=cells.get("actor") or "import",
        method=cells.get("method") or "import",
        source=source,
        notice=notice,
        evidence={k: cells[k] for k in EVIDENCE if cells.get(k)},
        controller=cells.get("controller") or controller,
    )


def _rows(path: Path) -> Iterator[tuple[int, dict[str, str] | str]]:
    """(first line of the record, its cells or a problem) for every non-blank record."""
    shown = str(path)
    line = 1
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            if header is None:
                raise ImportFileError(f"{shown}:1: empty file (a header row is needed)")
            names = _check_header(shown, header)
            line = reader.line_num + 1
            for cells in reader:
                start, line = line, reader.line_num + 1
                if not cells or cells == [""]:
                    continue
                if len(cells) != len(names):
                    yield start, f"has {len(cells)} fields, the header has {len(names)}"
                    continue
                yield start, {n: c.strip() for n, c in zip(names, cells, strict=True)}
    except UnicodeDecodeError:
        raise ImportFileError(f"{shown}:{line}: not UTF-8 text") from None
    except csv.Error as exc:
        raise ImportFileError(f"{shown}:{line}: not valid CSV: {exc}") from None
    except OSError as exc:
        raise ImportFileError(f"{shown}: cannot read: {exc.strerror}") from None


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as handle:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
    except OSError:
        return 0


async def import_csv(
    store: RedisConsentStore,
    path: Path,
    *,
    on_bad: Callable[[str], None],
    progress: bool = True,
    batch: int = BATCH,
    controller: str = "",
) -> ImportReport:
    """Import one CSV file; ``on_bad`` receives ``FILE:LINE: problem`` for each bad row."""
    report = ImportReport()
    pending: list[Pending] = []
    now = datetime.now(UTC)
    bar = tqdm(
        total=max(count_lines(path) - 1, 0),
        unit=" rows",
        disable=not progress,
        mininterval=0.5,
        desc=path.name,
    )
    try:
        for line, cells in _rows(path):
            report.rows += 1
            bar.update(1)
            try:
                if isinstance(cells, str):
                    raise ValueError(cells)
                event = validate_event(row_event(cells, path.name, line, controller), now)
                defaulted = () if cells.get("method") else ("method",)
                check_proof(event, defaulted=defaulted, names=_NAMES)
                fp = fingerprint(event, ignore_source=IMPORT_SOURCE)
                item = store.prepare(event, now, fp, validated=True)  # or an unknown controller
            except ValueError as exc:
                report.bad += 1
                on_bad(f"{path}:{line}: {exc}")
                continue
            pending.append(item)
            if len(pending) >= batch:
                await _flush(store, pending, report)
                now = datetime.now(UTC)
        await _flush(store, pending, report)
        bar.total = bar.n  # the line count was an estimate (blank lines, multi-line cells)
        bar.refresh()
    finally:
        bar.close()
    return report


async def _flush(store: RedisConsentStore, pending: list[Pending], report: ImportReport) -> None:
    added, skipped = await store.append_many(pending)
    report.added += added
    report.skipped += skipped
    pending.clear()
