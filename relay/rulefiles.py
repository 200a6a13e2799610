"""Rule files: shipped defaults plus local overrides -> one merged, located, digested rule set.

This module knows how rule files are laid out, not what the rules mean: the detection and the
policy modules each validate their own tables through ``RuleEntry.check``.

Rule 1: the shipped folder is read-only; operators put overrides in a separate local folder.
        An entry there with the id of a shipped entry replaces the fields it names (merge by id);
        a new id adds an entry; ``enabled = false`` switches one off.
Rule 2: every entry of an array of tables (``[[tracker]]``, ``[[decision]]`` ...) has an ``id``,
        a ``description`` and may have ``enabled``; the file and line of each entry are kept so
        that every error names file, line and key.
Rule 3: plain tables (``[legacy]``, ``[reask]`` ...) merge key by key, local over shipped;
        nested tables (``[pack.strict]``, ``[packs.by_sender_domain]``) merge the same way at
        every level, and the file and line of every key are kept (``"pack.strict.description"``).
Rule 4: long lists are plain text under ``lists/``, one entry a line, ``#`` starts a comment;
        a local list of the same name is appended to the shipped one.
Rule 5: the digest is a SHA-256 over the effective content, so two relays with the same rules
        write the same digest into their decision records whatever the file layout.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relay.errors import RulesError

SHIPPED_RULES = Path(__file__).resolve().parent / "rules"


@dataclass(frozen=True)
class RuleEntry:
    table: str
    id: str
    data: Mapping[str, Any]
    file: str
    line: int
    key_lines: Mapping[str, tuple[str, int]] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.data.get("enabled", True))

    def where(self, key: str | None = None) -> str:
        if key is not None and key in self.key_lines:
            file, line = self.key_lines[key]
            return f"{file}:{line}"
        return f"{self.file}:{self.line}"

    def error(self, key: str | None, message: str) -> RulesError:
        label = f"[[{self.table}]] {self.id!r}" + (f" key {key!r}" if key else "")
        return RulesError(f"{self.where(key)}: {label}: {message}")

    def check(self, allowed: Iterable[str], required: Iterable[str] = ()) -> None:
        """Reject unknown keys and missing required ones (``id``/``description``/``enabled``
        are always allowed; ``description`` is always required)."""
        known = {"id", "description", "enabled", *allowed}
        for key in self.data:
            if key not in known:
                raise self.error(key, f"unknown key (allowed: {', '.join(sorted(known))})")
        for key in ("description", *required):
            if key not in self.data:
                raise self.error(None, f"missing required key {key!r}")
        if not isinstance(self.data.get("enabled", True), bool):
            raise self.error("enabled", "must be true or false")


@dataclass(frozen=True)
class RuleSet:
    entries: tuple[RuleEntry, ...]
    tables: Mapping[str, Mapping[str, Any]]  # merged plain tables
    table_lines: Mapping[str, tuple[str, int]]  # "legacy.publication_date" -> (file, line)
    lists: Mapping[str, tuple[str, ...]]
    files: tuple[str, ...]
    digest: str
    # Names of the tables the loaders asked for, so that ``relay rules check`` can refuse a
    # table nobody reads (a misspelt "[[decison]]" would otherwise be ignored without a word).
    read: set[str] = field(default_factory=set, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.tables, _ReadTracking):
            object.__setattr__(self, "tables", _ReadTracking(dict(self.tables), self.read))

    def of(self, table: str, *, include_disabled: bool = False) -> tuple[RuleEntry, ...]:
        self.read.add(table)
        return tuple(
            e for e in self.entries if e.table == table and (include_disabled or e.enabled)
        )

    def where(self, dotted: str) -> str:
        file, line = self.table_lines.get(dotted, ("<rules>", 0))
        return f"{file}:{line}"

    def unread(self, also_read: Iterable[str] = ()) -> tuple[str, ...]:
        """``file:line: [table]`` for every table that no loader asked for (nor ``also_read``)."""
        known = self.read | set(also_read)
        found: dict[str, str] = {}
        for entry in self.entries:
            if entry.table not in known:
                found.setdefault(entry.table, f"{entry.where()}: [[{entry.table}]]")
        for table in self.tables:  # iterating does not mark a table as read
            if table not in known:
                found.setdefault(table, f"{self.where(table)}: [{table}]")
        return tuple(found.values())


class _ReadTracking(Mapping[str, Any]):
    """The merged plain tables; looking one up records its name in ``read``."""

    def __init__(self, data: dict[str, Any], read: set[str]) -> None:
        self._data = data
        self._read = read

    def __getitem__(self, key: str) -> Any:
        self._read.add(key)
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


_HEADER = re.compile(r"^\s*\[\[\s*([A-Za-z0-9_.-]+)\s*\]\]")
_TABLE = re.compile(r"^\s*\[\s*([A-Za-z0-9_.-]+)\s*\]")
# A bare key, or a quoted one (domain names in ``[packs.by_sender_domain]`` are quoted).
_KEY = re.compile(r"""^\s*(?:([A-Za-z0-9_-]+)|"([^"]+)"|'([^']+)')\s*=""")


def _locate(text: str) -> tuple[list[tuple[str, int, dict[str, int]]], dict[str, int]]:
    """Lines of each array entry (in order) with its keys, and of each plain-table key."""
    entries: list[tuple[str, int, dict[str, int]]] = []
    plain: dict[str, int] = {}
    current_plain: str | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if m := _HEADER.match(line):
            entries.append((m.group(1), number, {}))
            current_plain = None
        elif m := _TABLE.match(line):
            current_plain = m.group(1)
            plain.setdefault(current_plain, number)
        elif m := _KEY.match(line):
            key = m.group(1) or m.group(2) or m.group(3)
            if current_plain is not None:
                plain.setdefault(f"{current_plain}.{key}", number)
            elif entries:
                entries[-1][2].setdefault(key, number)
    return entries, plain


def _read_toml(path: Path) -> tuple[dict[str, Any], str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        # Python 3.11 puts the position only in the message: "... (at line 4, column 11)".
        found = re.search(r"at line (\d+)", str(exc))
        line = getattr(exc, "lineno", None) or (int(found.group(1)) if found else 0)
        raise RulesError(f"{path}:{line}: not valid TOML: {exc}") from None


class _Merger:
    def __init__(self) -> None:
        self.entries: dict[tuple[str, str], RuleEntry] = {}
        self.order: list[tuple[str, str]] = []
        self.tables: dict[str, dict[str, Any]] = {}
        self.table_lines: dict[str, tuple[str, int]] = {}

    def add_file(self, path: Path, *, local: bool) -> None:
        data, text = _read_toml(path)
        located, plain_lines = _locate(text)
        name = str(path)
        for table, value in data.items():
            if isinstance(value, list) and all(isinstance(v, dict) for v in value):
                # tomllib keeps each array's items in file order, so the n-th item of a table
                # is the n-th "[[table]]" header of the text.
                places = [(line, keys) for t, line, keys in located if t == table]
                for n, item in enumerate(value):
                    line, keys = places[n] if n < len(places) else (0, {})
                    self._add_entry(table, item, name, line, keys, local=local)
            elif isinstance(value, dict):
                # "[pack.strict]" alone defines "pack": its first sub-table's line stands for it.
                children = [n for k, n in plain_lines.items() if k.startswith(f"{table}.")]
                line = plain_lines.get(table) or min(children, default=0)
                self.table_lines.setdefault(table, (name, line))
                merged = self.tables.setdefault(table, {})
                self._merge_table(merged, value, table, name, plain_lines)
            else:
                lines = text.splitlines()
                line = next((n for n, ln in enumerate(lines, 1) if ln.startswith(table)), 0)
                raise RulesError(
                    f"{name}:{line}: top-level key {table!r}: put it in a [table] or [[list]]"
                )

    def _merge_table(
        self,
        target: dict[str, Any],
        value: Mapping[str, Any],
        dotted: str,
        file: str,
        plain_lines: Mapping[str, int],
    ) -> None:
        """Merge ``value`` into ``target`` key by key, recursing into sub-tables."""
        for key, v in value.items():
            path = f"{dotted}.{key}"
            # A sub-table's own header line stands for it when it has no "key =" line.
            line = plain_lines.get(path, 0) or plain_lines.get(dotted, 0)
            self.table_lines[path] = (file, line)
            if isinstance(v, dict):
                sub = target.get(key)
                if not isinstance(sub, dict):
                    sub = target[key] = {}
                self._merge_table(sub, v, path, file, plain_lines)
            else:
                target[key] = v

    def _add_entry(
        self,
        table: str,
        item: dict[str, Any],
        file: str,
        line: int,
        keys: dict[str, int],
        *,
        local: bool,
    ) -> None:
        rule_id = item.get("id")
        if not isinstance(rule_id, str) or not rule_id:
            raise RulesError(f"{file}:{line}: [[{table}]] entry without a string 'id'")
        key = (table, rule_id)
        key_lines = {k: (file, n) for k, n in keys.items()}
        previous = self.entries.get(key)
        if previous is not None and not local:
            raise RulesError(
                f"{file}:{line}: [[{table}]] id {rule_id!r} already defined at {previous.where()}"
            )
        if previous is not None:
            data = {**previous.data, **item}
            lines = {**previous.key_lines, **key_lines}
            self.entries[key] = RuleEntry(table, rule_id, data, file, line, lines)
        else:
            self.entries[key] = RuleEntry(table, rule_id, dict(item), file, line, key_lines)
            self.order.append(key)


def _read_lists(folders: Iterable[Path]) -> dict[str, tuple[str, ...]]:
    lists: dict[str, list[str]] = {}
    for folder in folders:
        lists_dir = folder / "lists"
        if not lists_dir.is_dir():
            continue
        for path in sorted(lists_dir.glob("*.txt")):
            items = lists.setdefault(path.stem, [])
            for line in path.read_text(encoding="utf-8").splitlines():
                entry = line.split("#", 1)[0].strip()
                if entry:
                    items.append(entry)
    return {name: tuple(items) for name, items in lists.items()}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.toml") if p.is_file())


def load_rules(shipped: str | Path = "", local: str | Path = "") -> RuleSet:
    """Read the shipped folder, then the local one; raise ``RulesError`` naming file and line."""
    shipped_dir = Path(shipped) if shipped else SHIPPED_RULES
    if not shipped_dir.is_dir():
        raise RulesError(f"{shipped_dir}: rules folder not found")
    folders = [shipped_dir]
    local_dir = Path(local) if local else None
    if (
        local_dir is not None
        and local_dir.is_dir()
        and local_dir.resolve() != shipped_dir.resolve()
    ):
        folders.append(local_dir)
    merger = _Merger()
    files: list[str] = []
    for number, folder in enumerate(folders):
        for path in _files(folder):
            merger.add_file(path, local=number > 0)
            files.append(str(path))
    lists = _read_lists(folders)
    entries = tuple(merger.entries[k] for k in merger.order)
    effective = {
        "entries": [[e.table, e.id, e.data] for e in entries],
        "tables": merger.tables,
        "lists": lists,
    }
    blob = json.dumps(effective, sort_keys=True, default=str, separators=(",", ":"))
    digest = "sha256:" + hashlib.sha256(blob.encode()).hexdigest()[:16]
    return RuleSet(entries, merger.tables, merger.table_lines, lists, tuple(files), digest)
