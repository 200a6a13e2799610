"""Query parameters of the auditors' pages: date ranges and filters, checked.

Stage: pure helper of the ``/audit/`` handlers. Input: a query's parameters. Output: a
``DayRange`` and ``Filters``; a ``ValueError`` naming the parameter when one is wrong (the
handler answers it as a 400 page).

Rule 1: dates are UTC calendar days, ``from`` and ``to`` both included (as people say them);
        the store's half-open range is ``[from 00:00, to + 1 day 00:00)``.
Rule 2: coded filters (category, purpose, action, basis) accept only known codes; free ones
        (sender domain, rule id) only the characters such ids are made of, so nothing a
        visitor types reaches a page unescaped or a Redis call unchecked.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

from relay.store.audit_counts import EPOCH_DAY
from relay.store.audit_legend import ACTIONS, BASES, CATEGORIES, PURPOSES
from relay.store.audit_query import Filters

MAX_DAYS = 366
IMPLICIT_CONTROLLER = "-"  # the parameter value naming the implicit single controller ("")
_FREE = re.compile(r"^[A-Za-z0-9_.:@+-]{1,200}$")
_CODED = {"category": CATEGORIES, "purpose": PURPOSES, "action": ACTIONS, "basis": BASES}


@dataclass(frozen=True)
class DayRange:
    first: date
    last: date  # included

    @property
    def since(self) -> datetime:
        return datetime(self.first.year, self.first.month, self.first.day, tzinfo=UTC)

    @property
    def until(self) -> datetime:
        return self.since + timedelta(days=(self.last - self.first).days + 1)

    @property
    def first_day(self) -> int:
        return (self.first - EPOCH_DAY).days

    @property
    def last_day(self) -> int:
        return (self.last - EPOCH_DAY).days

    @property
    def days(self) -> int:
        return (self.last - self.first).days + 1

    def query(self) -> dict[str, str]:
        return {"from": self.first.isoformat(), "to": self.last.isoformat()}


def _date(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{name}: not a date (YYYY-MM-DD): {value[:40]!r}") from None


def day_range(
    params: Mapping[str, str],
    default_days: int = 30,
    max_days: int = MAX_DAYS,
    today: date | None = None,
) -> DayRange:
    """Rule 1; the last ``default_days`` days up to today when nothing is given."""
    today = today or datetime.now(UTC).date()
    last = _date(params["to"], "to") if params.get("to") else today
    first = (
        _date(params["from"], "from")
        if params.get("from")
        else last - timedelta(days=default_days - 1)
    )
    if last < first:
        raise ValueError("to: the last day is before the first day (from)")
    if (last - first).days + 1 > max_days:
        raise ValueError(f"from, to: at most {max_days} days at a time")
    return DayRange(first, last)


def controller(params: Mapping[str, str]) -> str | None:
    """None: every controller; "": the implicit single controller; else an id."""
    value = params.get("controller", "")
    if not value:
        return None
    if value == IMPLICIT_CONTROLLER:
        return ""
    if not _FREE.match(value):
        raise ValueError("controller: not a controller id")
    return value


def filters(params: Mapping[str, str], *, without_consent: bool = False) -> Filters:
    """Rule 2."""
    values: dict[str, str] = {}
    for name, known in _CODED.items():
        value = params.get(name, "")
        if value and value not in known:
            raise ValueError(f"{name}: unknown code {value[:40]!r} (known: {', '.join(known)})")
        values[name] = value
    for name in ("domain", "rule"):
        value = params.get(name, "").strip()
        if value and not _FREE.match(value):
            raise ValueError(f"{name}: letters, digits and . _ - : only")
        values[name] = value
    return Filters(
        controller=controller(params),
        sender_domain=values["domain"].lower(),
        category=values["category"],
        purpose=values["purpose"],
        action=values["action"],
        basis=values["basis"],
        rule=values["rule"],
        without_consent=without_consent or params.get("without_consent") == "1",
    )


def filter_query(f: Filters) -> dict[str, str]:
    """The parameters that give ``f`` back (for links to the next page)."""
    out = {
        "domain": f.sender_domain,
        "category": f.category,
        "purpose": f.purpose,
        "action": f.action,
        "basis": f.basis,
        "rule": f.rule,
    }
    if f.controller is not None:
        out["controller"] = f.controller or IMPLICIT_CONTROLLER
    return out


def query(**values: str | None) -> str:
    """``?a=1&b=2`` of the non-empty values (or "")."""
    kept = {k: v for k, v in values.items() if v}
    return "?" + urlencode(kept) if kept else ""


__all__ = [
    "IMPLICIT_CONTROLLER",
    "MAX_DAYS",
    "DayRange",
    "controller",
    "day_range",
    "filter_query",
    "filters",
    "query",
]
