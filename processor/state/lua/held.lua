-- held.lua: does an accepted event hold this identifier (received within WIN ms of now)? The gateway's
-- synchronous duplicate check (processor/gateway/rules.py), with claim.lua's own rule: an event entry (kind
-- 'E' active, 'X' cancelled, 'A' arrived cancelled) received within 24 h makes a new event with the
-- identifier a duplicate. Reads claim.lua's buckets (keys.py `claims`): field = 8-byte identifier digest,
-- value = 13-byte entries (kind, received ms within the day u32, position), 21 with a link. Keep in step
-- with claim.lua's layout.
--
-- Optionally also the request's Idempotency-Key claim (processor/gateway/idempotency.py), so a meter event
-- sent with a key and an identifier costs one round trip, not two: KEYS[2] is the key's Redis name. When it
-- already holds a value (an answer, or another request's claim), that value is returned and nothing else is
-- done; when the identifier is held, 1 is returned and the key is left unclaimed (a 400 is not saved);
-- otherwise the key is claimed (SET ARGV[4] PX ARGV[5]) and 0 returned. Only on a single Redis server: on a
-- cluster the two keys live in different slots and the gateway makes two calls.
--
-- KEYS[1]: the identifier's bucket of now's UTC day (the day before and after share its hash tag).
-- ARGV[1]: now (ms). ARGV[2]: the dedup window (ms). ARGV[3]: the 8-byte field.
-- Returns 1 (held) or 0 (not held), or the idempotency key's value.
local DAYMS = 86400000
if KEYS[2] then
  local taken = redis.call('GET', KEYS[2])
  if taken then return taken end
end
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
if KEYS[2] then redis.call('SET', KEYS[2], ARGV[4], 'PX', ARGV[5]) end
return 0
