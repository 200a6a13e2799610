"""Export of every consent proof (``relay consent export``): JSON Lines or CSV.

Stage: CLI edge over the consent store (read only).
Input: the consent store's records, recipient by recipient; an optional controller id.
Output: one line (JSON) or row (CSV) per stored consent event, with its recipient key, its
position in the recipient's chain, and the chain's verification status.

Rule 1: every stored event appears once: recipient keys are collected from a SCAN (which may
        return a key twice) into a set, sorted, then read in batches, each batch's records and
        states at one instant (MULTI/EXEC) like ``relay consent verify``. The same store gives
        the same bytes. Memory grows with the number of recipients (about 100 bytes each), never
        with the number of events.
Rule 2: a JSON line carries the stored record whole under ``proof``: an auditor can recompute
        its SHA-256 (canonical JSON of every field but ``hash``) and follow ``prev`` without the
        relay. ``chain`` is ``verified`` or the first problem ``check_chain`` found for that
        recipient (the problem of this very event when it has one).
Rule 3: CSV columns are ``CSV_COLUMNS``, fixed and appended to only; mappings (``source``,
        evidence beyond ip/user_agent/token_id) are compact JSON objects so that no value is
        ambiguous; purposes are separated by ``;`` as in ``relay consent import``.
Rule 4: controllers are exported one after the other, each from its own keys (``redis_keys``
        Rule 3); an event recorded before controllers existed names none and is given the
        controller whose keys hold it, as ``relay consent show`` does.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from typing import IO, Any

from redis.exceptions import RedisError

from relay.errors import StoreUnavailable
from relay.store import consent_read
from relay.store.consent_verify import ChainProblem, check_chain
from relay.store.redis_conn import AsyncRedis
from relay.store.redis_keys import Keys

BATCH = 200
FORMATS = ("jsonl", "csv")
EVIDENCE = ("ip", "user_agent", "token_id")
CSV_COLUMNS: tuple[str, ...] = (
    "recipient_key", "seq", "chain", "id", "event", "purposes", "controller", "address",
    "occurred_at", "recorded_at", "actor", "method", "notice_id", "notice_version",
    "notice_language", "notice_hash", "ip", "user_agent", "token_id", "source",
    "evidence_other", "rules_digest", "hash", "prev",
)  # fmt: skip


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _compact(value: object) -> str:
    if not value:
        return ""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def chain_status(problems: Sequence[ChainProblem], index: int) -> str:
    ranked = [p for p in problems if p.index == index] or list(problems)
    return f"broken: {ranked[0]}" if ranked else "verified"


def csv_row(
    rkey: str, seq: int, chain: str, proof: Mapping[str, Any], owner: str = ""
) -> list[str]:
    notice = proof.get("notice") or {}
    evidence = proof.get("evidence") or {}
    other = {k: v for k, v in evidence.items() if k not in EVIDENCE and v}
    return [
        rkey,
        str(seq),
        chain,
        str(proof.get("id", "")),
        str(proof.get("event", "")),
        ";".join(proof.get("purposes") or []),
        str(proof.get("controller") or owner),
        str(proof.get("address", "")),
        str(proof.get("occurred_at", "")),
        str(proof.get("recorded_at", "")),
        str(proof.get("actor", "")),
        str(proof.get("method", "")),
        *(str(notice.get(k, "")) for k in ("id", "version", "language", "hash")),
        *(str(evidence.get(k, "")) for k in EVIDENCE),
        _compact(proof.get("source")),
        _compact(other),
        str(proof.get("rules_digest", "")),
        str(proof.get("hash", "")),
        str(proof.get("prev", "")),
    ]


async def recipient_keys(client: AsyncRedis, keys: Keys, scope: str = "") -> list[str]:
    """Every recipient with stored events under one scope, each once, sorted (Rule 1)."""
    return sorted(await consent_read.recipient_keys(client, keys, scope))


async def export_consent(
    client: AsyncRedis,
    keys: Keys,
    address_key: bytes,
    fmt: str,
    out: IO[str],
    owners: Sequence[tuple[str, str]] = (("", ""),),
    on_progress: Callable[[int], None] = lambda _n: None,
) -> tuple[int, int]:
    """Write every proof of the ``(controller id, key scope)`` pairs, in that order (Rule 4);
    (recipients read, events written)."""
    if fmt not in FORMATS:
        raise ValueError(f"--format must be one of {', '.join(FORMATS)}")
    writer = csv.writer(out, lineterminator="\r\n") if fmt == "csv" else None
    if writer is not None:
        writer.writerow(CSV_COLUMNS)
    recipients = written = 0
    try:
        for owner, scope in owners:
            rkeys = await recipient_keys(client, keys, scope)
            recipients += len(rkeys)
            for begin in range(0, len(rkeys), BATCH):
                batch = rkeys[begin : begin + BATCH]
                chains = await consent_read.read_chains(client, keys, batch, scope)
                for rkey, (raw, fields) in zip(batch, chains, strict=True):
                    report = check_chain(rkey, raw, fields, address_key)
                    for seq, item in enumerate(raw):
                        written += _write(writer, out, rkey, seq, report.problems, item, owner)
                on_progress(len(batch))
    except (RedisError, OSError, TimeoutError) as exc:
        raise StoreUnavailable(f"consent store: cannot read the proofs: {exc}") from exc
    return recipients, written


def _write(
    writer: Any,
    out: IO[str],
    rkey: str,
    seq: int,
    problems: Sequence[ChainProblem],
    item: bytes,
    owner: str,
) -> int:
    try:
        proof = json.loads(item)
    except (ValueError, UnicodeDecodeError):
        proof = None
    if not isinstance(proof, dict):
        # A damaged record is exported as what it is, never dropped (check_chain names it).
        proof = {"damaged_record": item.decode("utf-8", "replace")}
    chain = chain_status(problems, seq)
    if writer is None:
        line = {"recipient_key": rkey, "seq": seq, "chain": chain, "controller":
                proof.get("controller") or owner, "proof": proof}  # fmt: skip
        out.write(json.dumps(line, sort_keys=True, separators=(",", ":"), ensure_ascii=False))
        out.write("\n")
    else:
        writer.writerow(csv_row(rkey, seq, chain, proof, owner))
    return 1


__all__ = ["CSV_COLUMNS", "FORMATS", "chain_status", "csv_row", "export_consent"]
