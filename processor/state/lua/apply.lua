-- apply.lua: the aggregate change of accepted events and resolved cancellations, one atomic step.
--
-- All keys of one call belong to (meter, customer) pairs; on Redis Cluster the caller groups ops so that
-- each call's keys share one hash slot `{<meter>:<customer>}`.
-- Exactly once: each op carries its source ("<topic>/<partition>") and offset; the watermark hash
-- `<p>:wm:{m:c}` remembers the highest offset applied per source, and an op at or below it is skipped.
-- Records of a partition are applied in offset order, so this is an exact replay guard.
--
-- ARGV: n, cand_ttl_ms, best_ttl_ms, wm_ttl_ms, then n ops of 13 fields:
--   kind     '+' / '-' additive add/remove (raw sum and count)
--            'c+' / 'c-' candidate add/remove (pre-aggregated windows, raw last)
--   wm, hour, day, cand, best  key indices (cand/best are 0 for additive ops)
--   src, offset, ident, rank, value (decimal string: the delta for additive ops), ts, formula
-- Values are arbitrary-precision decimal strings; badd() adds them exactly.
local n = tonumber(ARGV[1])
local CAND_TTL, BEST_TTL, WM_TTL = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])

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
local function hour_of(ts) return ts - ts % 3600 end
local function day_of(ts) return ts - ts % 86400 end
local function hincr(key, field, delta)
  local cur = redis.call('HGET', key, field) or '0'
  redis.call('HSET', key, field, badd(cur, delta))
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
local function contribute(sign, formula, hkey, dkey, value, ts)
  local h, d = hour_of(ts), day_of(ts)
  if formula == 'last' then
    if sign > 0 then redis.call('HSET', hkey, tostring(h), value) else redis.call('HDEL', hkey, tostring(h)) end
    refresh_last_day(hkey, dkey, d)
    return
  end
  local delta = (formula == 'count') and '1' or value
  if sign < 0 then delta = neg(delta) end
  hincr(hkey, tostring(h), delta)
  hincr(dkey, tostring(d), delta)
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

local function cand_add(f, hkey, dkey, ckey, bkey, ident, rank, value, ts)
  if redis.call('HGET', ckey, ident) == 'X' then return end
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
    if br ~= nil then contribute(-1, f, hkey, dkey, bv, bt) end
    contribute(1, f, hkey, dkey, value, tonumber(ts))
    redis.call('SET', bkey, ident .. '\n' .. rank .. '|' .. value .. '|' .. ts, 'PX', BEST_TTL)
  end
end

local function cand_remove(f, hkey, dkey, ckey, bkey, ident)
  redis.call('HSET', ckey, ident, 'X')
  redis.call('PEXPIRE', ckey, CAND_TTL)
  local best = redis.call('GET', bkey)
  if not best then return end
  local bi, bs = string.match(best, '^(.-)\n(.*)$')
  if bi ~= ident then return end
  local _, bv, bt = parse(bs)
  contribute(-1, f, hkey, dkey, bv, bt)
  local ni, nr, nv, nt = best_of(ckey)
  if ni == nil then
    redis.call('DEL', bkey)
  else
    contribute(1, f, hkey, dkey, nv, nt)
    redis.call('SET', bkey, ni .. '\n' .. nr .. '|' .. nv .. '|' .. nt, 'PX', BEST_TTL)
  end
end

local applied = 0
for i = 0, n - 1 do
  local b = 5 + i * 13
  local kind = ARGV[b]
  local wkey, hkey, dkey = KEYS[tonumber(ARGV[b + 1])], KEYS[tonumber(ARGV[b + 2])], KEYS[tonumber(ARGV[b + 3])]
  local src, offset = ARGV[b + 6], tonumber(ARGV[b + 7])
  local wm = tonumber(redis.call('HGET', wkey, src) or '-1')
  if offset > wm then
    local ident, rank, value, ts, f = ARGV[b + 8], ARGV[b + 9], ARGV[b + 10], ARGV[b + 11], ARGV[b + 12]
    if kind == '+' then
      contribute(1, f, hkey, dkey, value, tonumber(ts))
    elseif kind == '-' then
      contribute(-1, f, hkey, dkey, value, tonumber(ts))
    else
      local ckey, bkey = KEYS[tonumber(ARGV[b + 4])], KEYS[tonumber(ARGV[b + 5])]
      if kind == 'c+' then
        cand_add(f, hkey, dkey, ckey, bkey, ident, rank, value, ts)
      else
        cand_remove(f, hkey, dkey, ckey, bkey, ident)
      end
    end
    redis.call('HSET', wkey, src, offset)
    redis.call('PEXPIRE', wkey, WM_TTL)
    applied = applied + 1
  end
end
return applied
