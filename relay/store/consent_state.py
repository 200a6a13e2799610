"""Derived consent state: the Lua script that appends an event and updates the cached state, and
the pure function that turns that cache into a ``ConsentState`` at decision time.

Stage: part of the consent store (the script runs inside Redis; ``derive`` is pure).
Input: one validated, chained event record (script); the state hash of a recipient (derive).
Output: the appended record and updated hash; a ``ConsentState`` at ``now``.

Rule 1: append and state update happen in one script, so a reader never sees one without the
        other. The script refuses the append (returns the current head) when the chain head is
        not the ``prev`` the caller hashed against: Redis's Lua has no SHA-256, so the client
        computes the hash and the script does a compare-and-set; a concurrent writer retries.
Rule 2: the state keeps, per purpose, the event with the latest *occurred_at* (not the latest
        recorded): imports may bring older events after newer ones. On equal times the event
        recorded last wins.
Rule 3: the state hash fields (``FIELD_*`` below) are ``at|...`` strings whose ``at`` is the
        fixed-width UTC time of ``consent_proof.format_time``, compared as strings in Lua.
Rule 4: validity at ``now`` is decided here, not stored: a grant older than ``lifetime_days``
        and (with ``renew_on_notice_change``) a grant under another notice version count as
        ``expired``. Changing the settings therefore takes effect without rewriting data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta

from relay.model import ConsentEvent, ConsentState, EventType, Purpose, PurposeConsent
from relay.settings import ConsentSettings
from relay.store.consent_proof import TIME_WIDTH, format_time, parse_time

FIELD_HEAD = "head"  # hash of the last appended record ("" before the first)
FIELD_COUNT = "count"  # number of records appended
PURPOSE_PREFIX = "p:"  # p:<purpose> -> at|event|event_id|notice_version
FIELD_GRANTED = "granted"  # at|id of the latest grant (answers an earlier request)
FIELD_REFUSED = "refused"  # at|id of the latest refusal or withdrawal
FIELD_REQUESTED = "requested"  # at|id of the latest consent request sent
FIELD_COLLECTED = "collected"  # at|id of the earliest collection of the address
FIELD_INFORMED = "informed"  # at|id|purpose,purpose of the earliest legacy notice
FIELD_OBJECTED = "objected"  # at|id of the latest objection
_PURPOSE_IDS = frozenset(p.value for p in Purpose)

# KEYS: events list, state hash, import fingerprints set (all three of one recipient, so they
#       share the recipient's hash slot on a Redis Cluster).
# ARGV: expected prev, record JSON, record hash, fingerprint ("" = none), event, occurred_at,
#       event id, notice version, purposes...
#       A fingerprint ``id:<32 hex digits>`` (35 bytes; import fingerprints are 16) is a replay
#       from the write journal: the event is skipped when the list already holds an event with
#       that id, and nothing is added to the set.
# Returns {1, hash} appended (or found already appended under its id when the chain moved),
# {0, head} chain moved on (retry), {2, ""} fingerprint already seen.
RECORD_LUA = """
local replay = #ARGV[4] == 35 and string.sub(ARGV[4], 1, 3) == 'id:'
if replay then
  local wanted = string.sub(ARGV[4], 4)
  for _, stored in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local ok, record = pcall(cjson.decode, stored)
    if ok and type(record) == 'table' and record['id'] == wanted then
      return {2, ''}
    end
  end
elseif ARGV[4] ~= '' and redis.call('SISMEMBER', KEYS[3], ARGV[4]) == 1 then
  return {2, ''}
end
local head = redis.call('HGET', KEYS[2], 'head') or ''
if head ~= ARGV[1] then
  -- This very append may already have run (a call re-sent after a lost reply): the chain
  -- moved because of it. Then it is done, not to be chained again.
  for _, stored in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
    local ok, record = pcall(cjson.decode, stored)
    if ok and type(record) == 'table' and record['id'] == ARGV[7] then
      return {1, head}
    end
  end
  return {0, head}
end
redis.call('RPUSH', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[2], 'head', ARGV[3])
redis.call('HINCRBY', KEYS[2], 'count', 1)
if ARGV[4] ~= '' and not replay then
  redis.call('SADD', KEYS[3], ARGV[4])
end
local ev, at, id = ARGV[5], ARGV[6], ARGV[7]
local function put(field, value, keep_earliest)
  local cur = redis.call('HGET', KEYS[2], field)
  local cur_at = cur and string.sub(cur, 1, 27)
  if (not cur) or (keep_earliest and at < cur_at) or ((not keep_earliest) and at >= cur_at) then
    redis.call('HSET', KEYS[2], field, value)
  end
end
if ev == 'granted' or ev == 'refused' or ev == 'withdrawn' or ev == 'expired' then
  for i = 9, #ARGV do
    put('p:' .. ARGV[i], at .. '|' .. ev .. '|' .. id .. '|' .. ARGV[8], false)
  end
  if ev == 'granted' then
    put('granted', at .. '|' .. id, false)
  elseif ev ~= 'expired' then
    put('refused', at .. '|' .. id, false)
  end
elseif ev == 'requested' then
  put('requested', at .. '|' .. id, false)
elseif ev == 'collected' then
  put('collected', at .. '|' .. id, true)
elseif ev == 'informed' then
  put('informed', at .. '|' .. id .. '|' .. table.concat(ARGV, ',', 9), true)
elseif ev == 'objected' then
  put('objected', at .. '|' .. id, false)
end
return {1, ARGV[3]}
"""


def script_args(
    event: ConsentEvent, prev: str, record_json: bytes, digest: str
) -> list[str | bytes]:
    """ARGV for ``RECORD_LUA`` without the fingerprint slot filled (the caller sets index 3)."""
    return [
        prev,
        record_json,
        digest,
        b"",
        event.event.value,
        format_time(event.occurred_at),
        event.id,
        event.notice.get("version", ""),
        *(p.value for p in event.purposes),
    ]


def _split(value: str | None, parts: int) -> list[str] | None:
    if not value:
        return None
    fields = value.split("|", parts - 1)
    return fields if len(fields) == parts else None


def _time(text: str) -> datetime:
    return parse_time(text[:TIME_WIDTH], "state")


def _purpose(
    value: str, now: datetime, settings: ConsentSettings
) -> tuple[PurposeConsent, str] | None:
    fields = _split(value, 4)
    if fields is None:
        return None
    at_text, kind, event_id, notice_version = fields
    at = _time(at_text)
    state = EventType(kind)
    version = notice_version or None  # "" in the store: the event named no notice version
    if state is EventType.GRANTED:
        ends = at + timedelta(days=settings.lifetime_days)
        if now >= ends:
            return PurposeConsent(EventType.EXPIRED, ends, event_id, version), event_id
        if settings.renew_on_notice_change and notice_version != settings.notice_version:
            return PurposeConsent(EventType.EXPIRED, at, event_id, version), event_id
    return PurposeConsent(state, at, event_id, version), event_id


def derive(
    rkey: str, fields: Mapping[str, str], now: datetime, settings: ConsentSettings
) -> ConsentState:
    """The cached state hash of one recipient -> its ``ConsentState`` at ``now``."""
    purposes: dict[Purpose, PurposeConsent] = {}
    ids: list[str] = []
    for name, value in fields.items():
        if not name.startswith(PURPOSE_PREFIX):
            continue
        try:
            purpose = Purpose(name[len(PURPOSE_PREFIX) :])
        except ValueError:
            continue  # a purpose retired from the vocabulary: nothing may rely on it
        found = _purpose(value, now, settings)
        if found is not None:
            purposes[purpose] = found[0]
            ids.append(found[1])
    marks: dict[str, tuple[datetime, str] | None] = {}
    for name in (FIELD_GRANTED, FIELD_REFUSED, FIELD_REQUESTED, FIELD_COLLECTED, FIELD_OBJECTED):
        split = _split(fields.get(name), 2)
        marks[name] = (_time(split[0]), split[1]) if split else None
    legacy: tuple[Purpose, ...] = ()
    informed = _split(fields.get(FIELD_INFORMED), 3)
    if informed:
        legacy = tuple(Purpose(p) for p in informed[2].split(",") if p in _PURPOSE_IDS)
        marks[FIELD_INFORMED] = (_time(informed[0]), informed[1])
    for name in (FIELD_COLLECTED, FIELD_INFORMED, FIELD_OBJECTED):
        mark = marks.get(name)
        if mark:
            ids.append(mark[1])
    return ConsentState(
        recipient_key=rkey,
        purposes=purposes,
        collected_at=_at(marks.get(FIELD_COLLECTED)),
        informed_at=_at(marks.get(FIELD_INFORMED)),
        objected=marks[FIELD_OBJECTED] is not None,
        last_solicited_at=_last_solicited(marks),
        legacy_purposes=legacy if informed else (),
        event_ids=tuple(dict.fromkeys(ids)),
    )


def _at(mark: tuple[datetime, str] | None) -> datetime | None:
    return mark[0] if mark else None


def _last_solicited(marks: Mapping[str, tuple[datetime, str] | None]) -> datetime | None:
    """Latest refusal/withdrawal, or the latest request unless a grant answered it."""
    refused = _at(marks.get(FIELD_REFUSED))
    requested = _at(marks.get(FIELD_REQUESTED))
    granted = _at(marks.get(FIELD_GRANTED))
    if requested is not None and granted is not None and granted >= requested:
        requested = None
    candidates = [t for t in (refused, requested) if t is not None]
    return max(candidates) if candidates else None


def replay(events: Iterable[ConsentEvent]) -> dict[str, str]:
    """The state hash ``RECORD_LUA`` builds from these events, computed in Python.

    ``relay consent verify`` compares it with the cached hash, so a state edited behind the
    store's back (or a script bug) is found as well as an edited event.
    """
    state: dict[str, str] = {}

    def put(name: str, value: str, at: str, keep_earliest: bool) -> None:
        current = state.get(name)
        cur_at = current[:TIME_WIDTH] if current else ""
        if current is None or (at < cur_at if keep_earliest else at >= cur_at):
            state[name] = value

    for event in events:
        at, kind, eid = format_time(event.occurred_at), event.event, event.id
        names = [p.value for p in event.purposes]
        if kind in (EventType.GRANTED, EventType.REFUSED, EventType.WITHDRAWN, EventType.EXPIRED):
            version = event.notice.get("version", "")
            for name in names:
                put(PURPOSE_PREFIX + name, f"{at}|{kind.value}|{eid}|{version}", at, False)
            if kind is EventType.GRANTED:
                put(FIELD_GRANTED, f"{at}|{eid}", at, False)
            elif kind is not EventType.EXPIRED:
                put(FIELD_REFUSED, f"{at}|{eid}", at, False)
        elif kind is EventType.REQUESTED:
            put(FIELD_REQUESTED, f"{at}|{eid}", at, False)
        elif kind is EventType.COLLECTED:
            put(FIELD_COLLECTED, f"{at}|{eid}", at, True)
        elif kind is EventType.INFORMED:
            put(FIELD_INFORMED, f"{at}|{eid}|{','.join(names)}", at, True)
        elif kind is EventType.OBJECTED:
            put(FIELD_OBJECTED, f"{at}|{eid}", at, False)
    return state
