"""The Lua script that stores a batch of decision records (``AuditLog`` Rule 1).

Stage: audit (data for the async edge). One call stores each new record in the stream, its
message and recipient indexes and its day's counts (``audit_counts``), atomically, and skips any
record whose id the bucket's record-id hash already holds, so a retried write or a replayed
journal never stores or counts a record twice.

Rule 2: every step costs the same whatever the log holds: the exactly-once check is one hash
        lookup, and the message index is a sorted set. (It used to read the message's whole
        index and every entry in it, so messages sharing a Message-ID, or all those without
        one, made each write slower than the last: at 2,000 messages of one id, 1,500 XRANGE
        calls and 2 ms of Redis time per record.)
"""

from __future__ import annotations

# Rule 1. KEYS[1] is the stream, KEYS[2..5] the per-day counts (``audit_counts``), KEYS[6] the
# record-id hash; KEYS[5+2i] and KEYS[6+2i] are record i's message and recipient indexes.
# ARGV comes in threes per record: the record as stored (it starts with its record id in hex
# and a colon), its tally (``field=n`` pairs) and "1" when it holds a tracker tracked without
# consent.
WRITE_SCRIPT = """
local stream, counts, dims, days, untracked = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ids = KEYS[6]
local pattern = '^(%x+):'
local written = 0
if #ARGV % 3 ~= 0 then return redis.error_reply('audit batch: arguments come in threes') end
for i = 1, #ARGV / 3 do
  local mkey, rkey = KEYS[5 + 2 * i], KEYS[6 + 2 * i]
  local payload, tally, flag = ARGV[3 * i - 2], ARGV[3 * i - 1], ARGV[3 * i]
  local rid = string.match(payload, pattern)
  if not rid then return redis.error_reply('audit record ' .. i .. ' has no record id') end
  if redis.call('HEXISTS', ids, rid) == 0 then
    local sid = redis.call('XADD', stream, '*', 'r', payload)
    local ms = tonumber(string.match(sid, '^(%d+)'))
    redis.call('HSET', ids, rid, sid)
    redis.call('ZADD', mkey, ms, sid)
    redis.call('ZADD', rkey, ms, sid)
    local day = string.format('%d', math.floor(ms / 86400000))
    for name, by in string.gmatch(tally, '([^%s=]+)=(%d+)') do
      -- A field new on this day may be a new day, or a new dimension: only then are the
      -- day and dimension sets written.
      if redis.call('HINCRBY', counts, day .. '|' .. name, by) == tonumber(by) then
        redis.call('SADD', dims, name)
        redis.call('ZADD', days, day, day)
      end
    end
    if flag == '1' then redis.call('ZADD', untracked, ms, sid) end
    written = written + 1
  end
end
return written
"""
