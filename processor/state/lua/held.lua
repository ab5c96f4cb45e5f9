-- held.lua: does an accepted event hold this identifier (received within the last WIN ms)?
-- Reads a claim key written by claim.lua (same entry encoding: 8 length-prefixed fields per entry,
-- field 1 the kind 'E'/'C', field 2 the received time R in ms). Read-only; the gateway's synchronous
-- duplicate check (processor/gateway/rules.py). Keep in step with claim.lua's enc/dec.
-- KEYS[1]: the claim key. ARGV[1]: now (ms). ARGV[2]: the dedup window (ms). Returns 1 or 0.
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local now, win = tonumber(ARGV[1]), tonumber(ARGV[2])
local pos, n = 1, #raw
while pos <= n do
  local kind, r
  for f = 1, 8 do
    local colon = string.find(raw, ':', pos, true)
    if not colon then return 0 end
    local len = tonumber(string.sub(raw, pos, colon - 1))
    local v = string.sub(raw, colon + 1, colon + len)
    if f == 1 then kind = v elseif f == 2 then r = tonumber(v) end
    pos = colon + len + 1
  end
  if kind == 'E' and r and now - r <= win then return 1 end
end
return 0
