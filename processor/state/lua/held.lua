-- held.lua: does an accepted event hold this identifier (received within WIN ms of now)? Read-only; the
-- gateway's synchronous duplicate check (processor/gateway/rules.py), with claim.lua's own rule: an event
-- entry (kind 'E' active, 'X' cancelled, 'A' arrived cancelled) received within 24 h makes a new event with
-- the identifier a duplicate. Reads claim.lua's buckets (keys.py `claims`): field = 8-byte identifier
-- digest, value = 13-byte entries (kind, received ms within the day u32, position), 21 with a link.
-- Keep in step with claim.lua's layout.
-- KEYS[1]: the identifier's bucket of now's UTC day (the day before and after share its hash tag).
-- ARGV[1]: now (ms). ARGV[2]: the dedup window (ms). ARGV[3]: the 8-byte field. Returns 1 or 0.
local DAYMS = 86400000
local now, win, field = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local day = math.floor(now / DAYMS)
local base = string.sub(KEYS[1], 1, #KEYS[1] - #tostring(day))
for d = day - 1, day + 1 do
  local raw = redis.call('HGET', base .. d, field)
  if raw then
    local p, n = 1, #raw
    while p <= n do
      local k = string.sub(raw, p, p)
      local r = d * DAYMS + struct.unpack('>I4', raw, p + 1)
      if (k == 'E' or k == 'X' or k == 'A') and math.abs(r - now) <= win then return 1 end
      if k == 'X' or k == 'A' or k == 'U' then p = p + 21 else p = p + 13 end
    end
  end
end
return 0
