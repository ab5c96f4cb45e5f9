-- claim.lua: identifier bookkeeping (dedup + cancellation matching), one atomic step per call.
--
-- Every KEYS[i] is a claim key `<p>:id:{<meter>|<digest>}` holding a list of entries, each stored as 8
-- length-prefixed fields ("<len>:<bytes>"; binary-safe, and far cheaper than cmsgpack for one entry):
--   {'E', R, ref, customer, ts, value, state, arrived_cancelled}  an accepted event
--        state = '' (active) or the ref of the cancellation that cancelled it
--   {'C', R, ref, used}                                          a cancellation waiting for its event
--        used = '' (pending) or the ref of the event it cancelled
-- R is the received time (Kafka timestamp, ms); ref is "<topic>/<partition>/<offset>" of the record.
-- Replaying a record (same ref) returns what the first run decided, so a crash anywhere is harmless.
--
-- ARGV[1]: msgpack array of ops, each {kind ('E' or 'C'), key index, R, ref, customer, ts, value, ttl_ms,
--          the op's own entry already encoded by the caller (what enc({entry}) would give)}
-- Returns n results, each a list: {status, a, b, c, d, e}
--   E: {'new', state} | {'mine', state, arrived_cancelled} | {'dup'}   ('n' stands for {'new', ''})
--   C: {'cancel', event_ref, customer, ts, value, R_event} | {'mine', event_ref, customer, ts, value, R_event}
--      | {'noop'} | {'pending'} | {'consumed'}                                     ('p' stands for {'pending'})
local WIN = 86400000
local KEEP = 3 * WIN
local ops = cmsgpack.unpack(ARGV[1])
local cache, dirty, ttl = {}, {}, {}
local out = {}

local function enc(entries)
  local parts = {}
  for _, x in ipairs(entries) do
    for f = 1, 8 do
      local v = x[f]
      if v == nil then v = '' elseif type(v) == 'number' then v = string.format('%.0f', v) end
      parts[#parts + 1] = #v .. ':' .. v
    end
  end
  return table.concat(parts)
end

local function dec(raw)
  local entries, pos, n = {}, 1, #raw
  while pos <= n do
    local x = {}
    for f = 1, 8 do
      local colon = string.find(raw, ':', pos, true)
      local len = tonumber(string.sub(raw, pos, colon - 1))
      x[f] = string.sub(raw, colon + 1, colon + len)
      pos = colon + len + 1
    end
    x[2] = tonumber(x[2])
    entries[#entries + 1] = x
  end
  return entries
end



-- The event a cancellation received at Rc targets: the latest event received at or before it within 24 h,
-- else the earliest one received after it within 24 h (docs/semantics.md).
local function target_of(e, Rc)
  local before, after = nil, nil
  for _, x in ipairs(e) do
    if x[1] == 'E' then
      if x[2] <= Rc and Rc - x[2] <= WIN and (before == nil or x[2] > before[2]) then before = x end
      if x[2] > Rc and x[2] - Rc <= WIN and (after == nil or x[2] < after[2]) then after = x end
    end
  end
  return before or after
end

local function event_op(e, R, ref, cust, ts, value)
  for _, x in ipairs(e) do
    if x[1] == 'E' and x[3] == ref then return {'mine', x[7], x[8]} end
  end
  for _, x in ipairs(e) do
    if x[1] == 'E' and math.abs(x[2] - R) <= WIN then return {'dup'} end
  end
  local me = {'E', R, ref, cust, ts, value, '', ''}
  e[#e + 1] = me
  -- Waiting cancellations whose target is this event: the first cancels it, the others were cancelling
  -- the same event and become no-ops (they must not wait on for a later reuse of the identifier).
  for _, x in ipairs(e) do
    if x[1] == 'C' and x[4] == '' and math.abs(x[2] - R) <= WIN and target_of(e, x[2]) == me then
      x[4] = ref
      if me[7] == '' then me[7], me[8] = x[3], '1' end
    end
  end
  return {'new', me[7]}
end

local function cancel_op(e, R, ref)
  for _, x in ipairs(e) do
    if x[1] == 'E' and x[7] == ref then return {'mine', x[3], x[4], x[5], x[6], x[2]} end
    if x[1] == 'C' and x[3] == ref then
      if x[4] == '' then return {'pending'} end
      return {'consumed'}
    end
  end
  local t = target_of(e, R)
  if t == nil then
    e[#e + 1] = {'C', R, ref, '', '', '', '', ''}
    return {'pending'}
  end
  if t[7] ~= '' then return {'noop'} end
  t[7] = ref
  return {'cancel', t[3], t[4], t[5], t[6], t[2]}
end

for _, op in ipairs(ops) do
  local kind, ki, R, ref = op[1], op[2], op[3], op[4]
  local res
  if cache[ki] == nil then
    -- Fast path for the common case, an identifier nobody holds: one SET NX GET creates the claim and
    -- tells us in the same call whether it existed (Redis >= 7.0). Only if it did, decode and decide.
    local entry
    if kind == 'E' then entry = {'E', R, ref, op[5], op[6], op[7], '', ''}
    else entry = {'C', R, ref, '', '', '', '', ''} end
    local old = redis.call('SET', KEYS[ki], op[9], 'NX', 'GET', 'PX', op[8])
    if old then
      cache[ki] = dec(old)
    else
      cache[ki] = {entry}
      ttl[ki] = op[8]
      if kind == 'E' then res = 'n' else res = 'p' end
    end
  end
  if res == nil then
    local e = cache[ki]
    if kind == 'E' then
      res = event_op(e, R, ref, op[5], op[6], op[7])
    else
      res = cancel_op(e, R, ref)
    end
    if res[1] == 'new' or res[1] == 'cancel' or res[1] == 'pending' then dirty[ki] = true end
    if res[1] == 'new' and res[2] == '' then res = 'n' end
    local t = op[8]
    if ttl[ki] == nil or t > ttl[ki] then ttl[ki] = t end
  end
  out[#out + 1] = res
end

for ki, _ in pairs(dirty) do
  local e = cache[ki]
  -- forget entries far older than the newest one: nothing can match them any more
  local newest = 0
  for _, x in ipairs(e) do if x[2] > newest then newest = x[2] end end
  local kept = {}
  for _, x in ipairs(e) do if newest - x[2] <= KEEP then kept[#kept + 1] = x end end
  redis.call('SET', KEYS[ki], enc(kept), 'PX', ttl[ki])
end
return out
