-- claim.lua: identifier bookkeeping (dedup + cancellation matching), one atomic step per call.
--
-- Claims live in small hashes bucketed by identifier shard and UTC day of *received* time (keys.py `claims`):
-- `<p>:idb:{<meter>|<shard>}:<day>`, field = 8-byte identifier digest, value = the identifier's entries
-- received that day, each packed in 13 bytes (21 with a link):
--   kind (1 byte) | received ms within the day (u32) | record position: partition (u16), offset (u48)
--   [ | link: partition (u16), offset (u48) ]
-- kinds: 'E' an accepted event, active; 'X' an event cancelled (link = the cancellation's position);
--        'A' an event that arrived cancelled (link = the waiting cancellation's position);
--        'C' a cancellation waiting for its event; 'U' a cancellation used (link = the event's position).
-- Events are always on meter-events and cancellations on meter-event-adjustments, so a position needs no
-- topic. A claim does not hold customer, timestamp or value: a cancellation gets them by reading its
-- event's record from Kafka at the position returned here (rare, and cached by the engine).
-- Everything within 24 h of a received time R is in the buckets of days(R)-1 .. day(R)+1 (loaded on demand;
-- matching a waiting cancellation may need days(R)±2). Buckets expire as a whole (see `exp` below).
-- Replaying a record (same position) returns what the first run decided, so a crash anywhere is harmless.
--
-- KEYS: the day bucket of each op's received day (other days' keys are derived from it: same hash tag)
-- ARGV[1]: the ops, 32 bytes each: kind 'E'|'C', identity index u32 (unused here), key index u16, received
--          day u32, field (8 bytes), the op's own entry (13 bytes)
-- ARGV[2]: expiries to set, 10 bytes each: key index u16, expire-at ms u64 — set (only ever raised) on the
--          keys this call writes; the caller remembers what it set and asks again only when it must rise
-- Every op reads its buckets and writes back what it changed before the next op, so ops of one identifier
-- in one call see each other without a cache (the common op, a new identifier: 3 HGETs and 1 HSET).
-- Returns one result per op, then the list of key indices whose expiry was set:
--   E: 'n' (new) | {'new', cp, co} (arrived cancelled by the cancellation at cp/co) | 'd' (duplicate)
--      | {'mine', cp, co, arrived} (a replay; cp = -1 when not cancelled; arrived 1/0)
--   C: {'cancel', ep, eo, R} | {'mine', ep, eo, R} (the event at ep/eo received at R) | 'o' (no-op)
--      | 'p' (pending) | 'u' (consumed)
local DAYMS = 86400000
local WIN = 86400000
local blob = ARGV[1]
local expblob = ARGV[2]
local written, out = {}, {}

local function linked(k) return k == 'X' or k == 'A' or k == 'U' end
local function is_event(k) return k == 'E' or k == 'X' or k == 'A' end

local function decode(c, raw, day)
  local p, n, start = 1, #raw, day * DAYMS
  while p <= n do
    local k = string.sub(raw, p, p)
    local rel = struct.unpack('>I4', raw, p + 1)
    local x = {k = k, R = start + rel, pos = string.sub(raw, p + 5, p + 12), day = day}
    if linked(k) then
      x.link = string.sub(raw, p + 13, p + 20)
      p = p + 21
    else
      p = p + 13
    end
    c.e[#c.e + 1] = x
  end
end

local function load(c, day)
  if c.days[day] ~= nil then return end
  local raw = redis.call('HGET', c.base .. day, c.field)
  c.days[day] = raw and true or false
  if raw then decode(c, raw, day) end
end

local function around(c, R)
  local d = math.floor(R / DAYMS)
  load(c, d - 1); load(c, d); load(c, d + 1)
end

local function touch(c, x) c.dirty[x.day] = true end

-- The event a cancellation received at Rc targets: the latest event received at or before it within 24 h,
-- else the earliest one received after it within 24 h (docs/semantics.md).
local function target_of(c, Rc)
  around(c, Rc)
  local before, after = nil, nil
  for _, x in ipairs(c.e) do
    if is_event(x.k) then
      if x.R <= Rc and Rc - x.R <= WIN and (before == nil or x.R > before.R) then before = x end
      if x.R > Rc and x.R - Rc <= WIN and (after == nil or x.R < after.R) then after = x end
    end
  end
  return before or after
end

local function position(s)
  local part, off = struct.unpack('>HI6', s)
  return part, off
end

local function event_op(c, R, pos, day)
  for _, x in ipairs(c.e) do
    if is_event(x.k) and x.pos == pos then
      if x.link == nil then return {'mine', -1, 0, 0} end
      local lp, lo = position(x.link)
      return {'mine', lp, lo, x.k == 'A' and 1 or 0}
    end
  end
  for _, x in ipairs(c.e) do
    if is_event(x.k) and math.abs(x.R - R) <= WIN then return 'd' end
  end
  local me = {k = 'E', R = R, pos = pos, day = day}
  c.e[#c.e + 1] = me
  touch(c, me)
  -- Waiting cancellations whose target is this event: the first cancels it, the others were cancelling
  -- the same event and become no-ops (they must not wait on for a later reuse of the identifier).
  local n = #c.e
  for i = 1, n do
    local x = c.e[i]
    if x.k == 'C' and math.abs(x.R - R) <= WIN and target_of(c, x.R) == me then
      x.k, x.link = 'U', pos
      touch(c, x)
      if me.link == nil then me.k, me.link = 'A', x.pos end
    end
  end
  if me.link == nil then return 'n' end
  local lp, lo = position(me.link)
  return {'new', lp, lo}
end

local function cancel_op(c, R, pos, day)
  for _, x in ipairs(c.e) do
    if (x.k == 'C' or x.k == 'U') and x.pos == pos then
      if x.k == 'C' then return 'p' end
      return 'u'
    end
  end
  for _, x in ipairs(c.e) do
    if is_event(x.k) and x.link == pos then
      local ep, eo = position(x.pos)
      return {'mine', ep, eo, x.R}
    end
  end
  local t = target_of(c, R)
  if t == nil then
    local me = {k = 'C', R = R, pos = pos, day = day}
    c.e[#c.e + 1] = me
    touch(c, me)
    return 'p'
  end
  if t.link ~= nil then return 'o' end
  t.k, t.link = 'X', pos
  touch(c, t)
  local ep, eo = position(t.pos)
  return {'cancel', ep, eo, t.R}
end

-- write back the days an op changed (an emptied field is removed)
local function save(c)
  for day, _ in pairs(c.dirty) do
    local parts = {}
    local start = day * DAYMS
    for _, x in ipairs(c.e) do
      if x.day == day then
        parts[#parts + 1] = x.k .. struct.pack('>I4', x.R - start) .. x.pos .. (x.link or '')
      end
    end
    if #parts > 0 then
      redis.call('HSET', c.base .. day, c.field, table.concat(parts))
    elseif c.days[day] then
      redis.call('HDEL', c.base .. day, c.field)
    end
  end
end

local bases = {}
local p, nblob = 1, #blob
while p <= nblob do
  local kind, _, ki, day, field, entry, np = struct.unpack('>c1I4HI4c8c13', blob, p)
  p = np
  local key = KEYS[ki]
  local base = bases[ki]
  if base == nil then
    base = string.sub(key, 1, #key - #tostring(day))
    bases[ki] = base
  end
  local prev = redis.call('HGET', base .. (day - 1), field)
  local cur = redis.call('HGET', key, field)
  local nxt = redis.call('HGET', base .. (day + 1), field)
  if not (prev or cur or nxt) then
    -- nobody holds this identifier within a day either side: the op's own entry is the whole claim
    redis.call('HSET', key, field, entry)
    written[ki] = true
    out[#out + 1] = (kind == 'E') and 'n' or 'p'
  else
    local c = {base = base, field = field, e = {}, dirty = {},
               days = {[day - 1] = prev and true or false, [day] = cur and true or false,
                       [day + 1] = nxt and true or false}}
    if prev then decode(c, prev, day - 1) end
    if cur then decode(c, cur, day) end
    if nxt then decode(c, nxt, day + 1) end
    local R = day * DAYMS + struct.unpack('>I4', entry, 2)
    local pos = string.sub(entry, 6, 13)
    local res
    if kind == 'E' then res = event_op(c, R, pos, day) else res = cancel_op(c, R, pos, day) end
    save(c)
    if c.dirty[day] then written[ki] = true end
    out[#out + 1] = res
  end
end

local done = {}
local q, nexp = 1, #expblob
while q <= nexp do
  local ki, at, nq = struct.unpack('>HI8', expblob, q)
  q = nq
  if written[ki] then
    redis.call('PEXPIREAT', KEYS[ki], at, 'NX')
    redis.call('PEXPIREAT', KEYS[ki], at, 'GT')
    done[#done + 1] = ki
  end
end
out[#out + 1] = done
return out
