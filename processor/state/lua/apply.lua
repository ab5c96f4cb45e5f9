-- apply.lua: the aggregate change of accepted events and resolved cancellations, one atomic step.
--
-- All keys of one call belong to (meter, customer) pairs; on Redis Cluster the caller groups ops so that
-- each call's keys share one hash slot `{<meter>:<customer>}`.
-- Exactly once: each op carries its source ("<topic>/<partition>") and offset; the watermark hash
-- `<p>:wm:{m:c}` remembers the highest offset applied per source, and an op at or below it is skipped.
-- Records of a partition are applied in offset order, so this is an exact replay guard.
--
-- ARGV[1]: msgpack {cand_ttl_ms, best_ttl_ms, wm_ttl_ms, usage retention in seconds}
-- ARGV[2]: msgpack array of ops, each {kind, wm, hour, day, cand, best, src, offset, ident, rank, value, ts,
--          formula, minutes}
--   kind     '+' / '-' additive add/remove (raw sum and count)
--            'c+' / 'c-' candidate add/remove (pre-aggregated windows)
--            'l+' / 'l-' candidate add/remove for raw `last` (hour candidates + per-minute "rank|value")
--   wm, hour, day, cand, best, minutes  key indices into KEYS (cand/best are 0 for additive ops)
--   value    decimal string (the event's value; the delta of additive ops)
-- ARGV[3]: msgpack array of additive runs, each {wm, src, first_offset, last_offset, n, {key, field, delta, ...}}:
--          the '+'/'-' ops of one (watermark, source) in ascending offsets, summed by the caller into one
--          delta per bucket field (hour, day, minute). A run whose first offset is above the watermark is
--          applied whole; otherwise none of it is, and its index is returned for a per-op call (ARGV[2]).
-- ARGV[4]: msgpack array of the minutes key indices of the runs (their expiry is set)
-- ARGV[5]: msgpack {cutoff (unix s), {hour/day key indices to trim}, {key index, expire-at ms, ...}}: usage
--          retention (keys.py; METERSTREAM_USAGE_RETENTION_DAYS, retention seconds in ARGV[1][4])
-- Returns {applied, {indices of the runs to send again op by op}, {key indices whose expiry was set}}.
-- Additive changes are summed per bucket in Lua and written once per bucket at the end of the call.
local ttls = cmsgpack.unpack(ARGV[1])
local ops = cmsgpack.unpack(ARGV[2])
local CAND_TTL, BEST_TTL, WM_TTL, RETAIN_S = ttls[1], ttls[2], ttls[3], ttls[4]
local minute_keys = {}  -- minutes keys written by this call (one PEXPIREAT each at the end)

-- ---- exact decimal arithmetic --------------------------------------------------------------------
local function split(s)
  if string.sub(s, 1, 1) == '-' then return -1, string.sub(s, 2) end
  return 1, s
end
local function strip(d)
  d = string.gsub(d, '^0+', '')
  if d == '' then return '0' end
  return d
end
local function cmpmag(a, b)
  if #a ~= #b then return (#a < #b) and -1 or 1 end
  if a == b then return 0 end
  return (a < b) and -1 or 1
end
local function addmag(a, b)
  local res, carry, i, j = {}, 0, #a, #b
  while i > 0 or j > 0 or carry > 0 do
    local s = carry
    if i > 0 then s = s + string.byte(a, i) - 48; i = i - 1 end
    if j > 0 then s = s + string.byte(b, j) - 48; j = j - 1 end
    res[#res + 1] = string.char(48 + s % 10)
    carry = math.floor(s / 10)
  end
  return strip(string.reverse(table.concat(res)))
end
local function submag(a, b) -- a >= b
  local res, borrow, i, j = {}, 0, #a, #b
  while i > 0 do
    local s = string.byte(a, i) - 48 - borrow
    if j > 0 then s = s - (string.byte(b, j) - 48); j = j - 1 end
    if s < 0 then s = s + 10; borrow = 1 else borrow = 0 end
    res[#res + 1] = string.char(48 + s)
    i = i - 1
  end
  return strip(string.reverse(table.concat(res)))
end
local function badd(x, y)
  if #x < 16 and #y < 16 then
    local r = tonumber(x) + tonumber(y)
    if r == 0 then return '0' end
    return string.format('%.0f', r)
  end
  local sx, mx = split(x)
  local sy, my = split(y)
  mx, my = strip(mx), strip(my)
  local sign, mag
  if sx == sy then
    sign, mag = sx, addmag(mx, my)
  else
    local c = cmpmag(mx, my)
    if c == 0 then return '0' end
    if c > 0 then sign, mag = sx, submag(mx, my) else sign, mag = sy, submag(my, mx) end
  end
  if mag == '0' then return '0' end
  if sign < 0 then return '-' .. mag end
  return mag
end
local function neg(v)
  if v == '0' then return v end
  if string.sub(v, 1, 1) == '-' then return string.sub(v, 2) end
  return '-' .. v
end

-- ---- buckets ---------------------------------------------------------------------------------------
local function minute_of(ts) return ts - ts % 60 end
local function hour_of(ts) return ts - ts % 3600 end
local function day_of(ts) return ts - ts % 86400 end
-- A sum/count bucket that comes to 0 is removed: "no surviving event" and "nets to 0" read the same,
-- and the stored state no longer depends on how batches or the two input topics interleaved.
local function hincr(key, field, delta)
  if #delta < 16 then
    -- HINCRBY is exact for 64-bit integers; it refuses (error reply) a stored value or a result beyond
    -- 64 bits, and then the decimal-string path below takes over.
    local r = redis.pcall('HINCRBY', key, field, delta)
    if type(r) == 'number' then
      if r == 0 then redis.call('HDEL', key, field) end
      return
    end
  end
  local cur = redis.call('HGET', key, field) or '0'
  local new = badd(cur, delta)
  if new == '0' then redis.call('HDEL', key, field) else redis.call('HSET', key, field, new) end
end
-- `last` over a day = the value of its latest non-empty hour (hours split timestamps in order)
local function refresh_last_day(hkey, dkey, day)
  for h = day + 23 * 3600, day, -3600 do
    local v = redis.call('HGET', hkey, tostring(h))
    if v then redis.call('HSET', dkey, tostring(day), v); return end
  end
  redis.call('HDEL', dkey, tostring(day))
end
-- add (sign 1) or withdraw (sign -1) one surviving event's contribution to its hour and day buckets
-- mkey is nil for raw `last`, whose minutes are kept by minute_last_* below
local function contribute(sign, formula, hkey, dkey, mkey, value, ts)
  local h, d, m = hour_of(ts), day_of(ts), minute_of(ts)
  if formula == 'last' then
    if sign > 0 then
      redis.call('HSET', hkey, tostring(h), value)
      if mkey then redis.call('HSET', mkey, tostring(m), value) end
    else
      redis.call('HDEL', hkey, tostring(h))
      if mkey then redis.call('HDEL', mkey, tostring(m)) end
    end
    refresh_last_day(hkey, dkey, d)
    return
  end
  local delta = (formula == 'count') and '1' or value
  if sign < 0 then delta = neg(delta) end
  hincr(hkey, tostring(h), delta)
  hincr(dkey, tostring(d), delta)
  if mkey then hincr(mkey, tostring(m), delta) end
end

-- candidates: HASH ident -> "rank|value|ts" ('X' marks a cancelled ident, so a late add stays out)
local function parse(s)
  local r, v, t = string.match(s, '^([^|]*)|([^|]*)|([^|]*)$')
  return r, v, tonumber(t)
end
local function best_of(ckey)
  local all = redis.call('HGETALL', ckey)
  local bi, br, bv, bt = nil, nil, nil, nil
  for k = 1, #all, 2 do
    local s = all[k + 1]
    if s ~= 'X' then
      local r, v, t = parse(s)
      if br == nil or r > br then bi, br, bv, bt = all[k], r, v, t end
    end
  end
  return bi, br, bv, bt
end

local function cand_add(f, hkey, dkey, mkey, ckey, bkey, ident, rank, value, ts)
  if redis.call('HGET', ckey, ident) == 'X' then return false end
  local best = redis.call('GET', bkey)
  if redis.call('EXISTS', ckey) == 0 and best then
    local bi, bs = string.match(best, '^(.-)\n(.*)$')
    redis.call('HSET', ckey, bi, bs)
  end
  redis.call('HSET', ckey, ident, rank .. '|' .. value .. '|' .. ts)
  redis.call('PEXPIRE', ckey, CAND_TTL)
  local br, bv, bt = nil, nil, nil
  if best then
    local _, bs = string.match(best, '^(.-)\n(.*)$')
    br, bv, bt = parse(bs)
  end
  if br == nil or rank > br then
    if br ~= nil then contribute(-1, f, hkey, dkey, mkey, bv, bt) end
    contribute(1, f, hkey, dkey, mkey, value, tonumber(ts))
    redis.call('SET', bkey, ident .. '\n' .. rank .. '|' .. value .. '|' .. ts, 'PX', BEST_TTL)
  end
  return true
end

-- returns the removed candidate's stored "rank|value|ts" (nil if it was never added)
local function cand_remove(f, hkey, dkey, mkey, ckey, bkey, ident)
  local was = redis.call('HGET', ckey, ident)
  redis.call('HSET', ckey, ident, 'X')
  redis.call('PEXPIRE', ckey, CAND_TTL)
  if was == 'X' then was = false end
  local best = redis.call('GET', bkey)
  if not best then return was end
  local bi, bs = string.match(best, '^(.-)\n(.*)$')
  if bi ~= ident then return was end
  local _, bv, bt = parse(bs)
  contribute(-1, f, hkey, dkey, mkey, bv, bt)
  local ni, nr, nv, nt = best_of(ckey)
  if ni == nil then
    redis.call('DEL', bkey)
  else
    contribute(1, f, hkey, dkey, mkey, nv, nt)
    redis.call('SET', bkey, ni .. '\n' .. nr .. '|' .. nv .. '|' .. nt, 'PX', BEST_TTL)
  end
  return was
end

-- raw `last` per minute: "rank|value" of the greatest-ranked event of each minute
local function minute_last_add(mkey, rank, value, ts)
  local m = tostring(minute_of(ts))
  local cur = redis.call('HGET', mkey, m)
  if cur == false or rank > string.match(cur, '^([^|]*)') then
    redis.call('HSET', mkey, m, rank .. '|' .. value)
  end
end
local function minute_last_remove(mkey, ckey, was)
  if not was then return end
  local rank, _, ts = parse(was)
  local m = minute_of(ts)
  local cur = redis.call('HGET', mkey, tostring(m))
  if cur == false or string.match(cur, '^([^|]*)') ~= rank then return end
  local all = redis.call('HGETALL', ckey)
  local br, bv = nil, nil
  for k = 1, #all, 2 do
    local s = all[k + 1]
    if s ~= 'X' then
      local r, v, t = parse(s)
      if minute_of(t) == m and (br == nil or r > br) then br, bv = r, v end
    end
  end
  if br == nil then redis.call('HDEL', mkey, tostring(m)) else redis.call('HSET', mkey, tostring(m), br .. '|' .. bv) end
end

local applied = 0
local wms = {}      -- wm key index -> {src -> offset}, read once, written once
local pending = {}  -- hash key -> {field -> delta}, additive changes written once
local function wm_of(wi)
  local t = wms[wi]
  if t == nil then
    t = {}
    local raw = redis.call('HGETALL', KEYS[wi])
    for k = 1, #raw, 2 do t[raw[k]] = tonumber(raw[k + 1]) end
    wms[wi] = t
  end
  return t
end
local function add_pending(key, field, delta)
  local t = pending[key]
  if t == nil then t = {}; pending[key] = t end
  t[field] = badd(t[field] or '0', delta)
end

local runs = cmsgpack.unpack(ARGV[3])
local redo = {}
for i, run in ipairs(runs) do
  local wi, src = run[1], run[2]
  local wm = wm_of(wi)
  if run[3] > (wm[src] or -1) then
    local f = run[6]
    for j = 1, #f, 3 do add_pending(KEYS[f[j]], f[j + 1], f[j + 2]) end
    wm[src] = run[4]
    wm.dirty = true
    applied = applied + run[5]
  else
    redo[#redo + 1] = i
  end
end
for _, mi in ipairs(cmsgpack.unpack(ARGV[4])) do minute_keys[KEYS[mi]] = true end

for _, op in ipairs(ops) do
  local kind, wi = op[1], op[2]
  local src, offset = op[7], op[8]
  local wm = wm_of(wi)
  if offset > (wm[src] or -1) then
    local hkey, dkey, mkey = KEYS[op[3]], KEYS[op[4]], KEYS[op[14]]
    local ident, rank, value, ts, f = op[9], op[10], op[11], op[12], op[13]
    minute_keys[mkey] = true
    if kind == '+' or kind == '-' then
      local delta = (f == 'count') and '1' or value
      if kind == '-' then delta = neg(delta) end
      add_pending(hkey, tostring(hour_of(ts)), delta)
      add_pending(dkey, tostring(day_of(ts)), delta)
      add_pending(mkey, tostring(minute_of(ts)), delta)
    elseif kind == 'c+' then
      cand_add(f, hkey, dkey, mkey, KEYS[op[5]], KEYS[op[6]], ident, rank, value, tostring(ts))
    elseif kind == 'c-' then
      cand_remove(f, hkey, dkey, mkey, KEYS[op[5]], KEYS[op[6]], ident)
    elseif kind == 'l+' then
      if cand_add(f, hkey, dkey, nil, KEYS[op[5]], KEYS[op[6]], ident, rank, value, tostring(ts)) then
        minute_last_add(mkey, rank, value, ts)
      end
    else
      minute_last_remove(mkey, KEYS[op[5]], cand_remove(f, hkey, dkey, nil, KEYS[op[5]], KEYS[op[6]], ident))
    end
    wm[src] = offset
    wm.dirty = true
    applied = applied + 1
  end
end
for key, fields in pairs(pending) do
  for field, delta in pairs(fields) do
    if delta ~= '0' then hincr(key, field, delta) end
  end
end
-- usage retention: a minute hash (one UTC day) goes RETAIN_S after the end of its day
for mkey, _ in pairs(minute_keys) do
  local day = tonumber(string.match(mkey, ':(%-?%d+)$'))
  redis.call('PEXPIREAT', mkey, (day + 86400 + RETAIN_S) * 1000)
end
-- hour and day hashes: fields older than the cutoff are dropped (once a day per key and processor), and
-- a whole hash goes when its newest bucket is past retention (expiry only ever raised)
local retention = cmsgpack.unpack(ARGV[5])
local cutoff = retention[1]
for _, ki in ipairs(retention[2]) do
  local old = {}
  for _, f in ipairs(redis.call('HKEYS', KEYS[ki])) do
    if tonumber(f) < cutoff then old[#old + 1] = f end
    if #old >= 1000 then redis.call('HDEL', KEYS[ki], unpack(old)); old = {} end
  end
  if #old > 0 then redis.call('HDEL', KEYS[ki], unpack(old)) end
end
local expired = {}
local ex = retention[3]
for j = 1, #ex, 2 do
  local key = KEYS[ex[j]]
  if redis.call('EXISTS', key) == 1 then
    redis.call('PEXPIREAT', key, ex[j + 1], 'NX')
    redis.call('PEXPIREAT', key, ex[j + 1], 'GT')
    expired[#expired + 1] = ex[j]
  end
end
for wi, t in pairs(wms) do
  if t.dirty then
    t.dirty = nil
    local flat = {}
    for src, off in pairs(t) do flat[#flat + 1] = src; flat[#flat + 1] = off end
    redis.call('HSET', KEYS[wi], unpack(flat))
    redis.call('PEXPIRE', KEYS[wi], WM_TTL)
  end
end
return {applied, redo, expired}
