-- claim.lua: identifier bookkeeping (dedup + cancellation matching), one atomic step per call.
--
-- Every KEYS[i] is a claim key `<p>:id:{<meter>|<digest>}` holding a msgpack list of entries:
--   {'E', R, ref, customer, ts, value, state, arrived_cancelled}  an accepted event
--        state = '' (active) or the ref of the cancellation that cancelled it
--   {'C', R, ref, used}                                          a cancellation waiting for its event
--        used = '' (pending) or the ref of the event it cancelled
-- R is the received time (Kafka timestamp, ms); ref is "<topic>/<partition>/<offset>" of the record.
-- Replaying a record (same ref) returns what the first run decided, so a crash anywhere is harmless.
--
-- ARGV: n, then n ops of 8 fields: kind ('E' or 'C'), key index, R, ref, customer, ts, value, ttl_ms
-- Returns n results, each a list: {status, a, b, c, d, e}
--   E: {'new', state} | {'mine', state, arrived_cancelled} | {'dup'}
--   C: {'cancel', event_ref, customer, ts, value, R_event} | {'mine', event_ref, customer, ts, value, R_event}
--      | {'noop'} | {'pending'} | {'consumed'}
local WIN = 86400000
local KEEP = 3 * WIN
local n = tonumber(ARGV[1])
local cache, dirty, ttl = {}, {}, {}
local out = {}

local function load(ki)
  local e = cache[ki]
  if e == nil then
    local raw = redis.call('GET', KEYS[ki])
    if raw then e = cmsgpack.unpack(raw) else e = {} end
    cache[ki] = e
  end
  return e
end

local function event_op(e, R, ref, cust, ts, value)
  for _, x in ipairs(e) do
    if x[1] == 'E' and x[3] == ref then return {'mine', x[7], x[8]} end
  end
  for _, x in ipairs(e) do
    if x[1] == 'E' and math.abs(x[2] - R) <= WIN then return {'dup'} end
  end
  local state, arrived = '', ''
  for _, x in ipairs(e) do
    if x[1] == 'C' and x[4] == '' and math.abs(x[2] - R) <= WIN then
      x[4] = ref
      state, arrived = x[3], '1'
      break
    end
  end
  e[#e + 1] = {'E', R, ref, cust, ts, value, state, arrived}
  return {'new', state}
end

local function cancel_op(e, R, ref)
  for _, x in ipairs(e) do
    if x[1] == 'E' and x[7] == ref then return {'mine', x[3], x[4], x[5], x[6], x[2]} end
    if x[1] == 'C' and x[3] == ref then
      if x[4] == '' then return {'pending'} end
      return {'consumed'}
    end
  end
  local before, after = nil, nil
  for _, x in ipairs(e) do
    if x[1] == 'E' then
      if x[2] <= R and R - x[2] <= WIN and (before == nil or x[2] > before[2]) then before = x end
      if x[2] > R and x[2] - R <= WIN and (after == nil or x[2] < after[2]) then after = x end
    end
  end
  local t = before or after
  if t == nil then
    e[#e + 1] = {'C', R, ref, ''}
    return {'pending'}
  end
  if t[7] ~= '' then return {'noop'} end
  t[7] = ref
  return {'cancel', t[3], t[4], t[5], t[6], t[2]}
end

for i = 0, n - 1 do
  local b = 2 + i * 8
  local kind, ki = ARGV[b], tonumber(ARGV[b + 1])
  local R, ref = tonumber(ARGV[b + 2]), ARGV[b + 3]
  local e = load(ki)
  local res
  if kind == 'E' then
    res = event_op(e, R, ref, ARGV[b + 4], ARGV[b + 5], ARGV[b + 6])
  else
    res = cancel_op(e, R, ref)
  end
  if res[1] == 'new' or res[1] == 'cancel' or res[1] == 'pending' then dirty[ki] = true end
  local t = tonumber(ARGV[b + 7])
  if ttl[ki] == nil or t > ttl[ki] then ttl[ki] = t end
  out[#out + 1] = res
end

for ki, _ in pairs(dirty) do
  local e = cache[ki]
  -- forget entries far older than the newest one: nothing can match them any more
  local newest = 0
  for _, x in ipairs(e) do if x[2] > newest then newest = x[2] end end
  local kept = {}
  for _, x in ipairs(e) do if newest - x[2] <= KEEP then kept[#kept + 1] = x end end
  redis.call('SET', KEYS[ki], cmsgpack.pack(kept), 'PX', ttl[ki])
end
return out
