"""The atomic per-pair step of ``meterstream rebuild``: compare or replace live aggregates with the shadow's.

One Lua script per (meter, customer) pair. Every key it touches — live and shadow usage hashes, minute
hashes, window keys (best / candidates) and watermarks — carries the pair's hash tag ``{meter:customer}``
(the shadow prefix keeps it), so the step is atomic and stays inside one Redis Cluster slot.

The script first checks the live watermark hash: if the live processor has applied any record to this
pair at or beyond the offsets the shadow has read (the *cut-off*), the shadow is behind for this pair and
the script answers ``-1`` without touching anything; the rebuild then reads the new records into the
shadow and tries again. Otherwise nothing the live state holds is missing from the shadow, so replacing
the range is exact, and the live watermarks are raised to the shadow's (every record at or below them is
in the swapped state, so a crash-replay of the live processor skips them).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgpack

from processor.meters.model import Meter
from processor.state.keys import BEST_TTL_S, DAY_S, HOUR_S, MINUTES_TTL_S, WATERMARK_TTL_S, Keys
from processor.state.scripts import run_scripts

__all__ = ["BucketChange", "PairResult", "SwapScript", "window_units"]

_LUA = r"""
-- swap.lua: compare (ARGV[1] = 'diff') or replace (ARGV[1] = 'swap') one (meter, customer) pair's live
-- aggregates in a time range with the shadow's, in one atomic step. Every key shares the pair's hash tag
-- `{<meter>:<customer>}`, so this is one slot on Redis Cluster too.
--
-- KEYS: 1 live wm, 2 shadow wm, 3 live hour, 4 shadow hour, 5 live day, 6 shadow day,
--       then ARGV[5] (live, shadow) pairs of minute hashes, then ARGV[6] (live, shadow) pairs of
--       window keys (best STRING / candidates HASH), copied as they are.
-- ARGV: 1 mode, 2 range start (unix s, inclusive), 3 range end (exclusive), 4 msgpack cut-off
--       {"<topic>/<partition>" -> next offset the shadow has read}, 5 n minute pairs, 6 n window pairs,
--       7 minutes TTL ms, 8 watermark TTL ms.
-- Returns {-1} when the live processor has applied a record to this pair at or beyond the cut-off (the
-- shadow must catch up first), else {0, minute fields changed, kind, bucket, live, shadow, ...} for every
-- hour ('h') / day ('d') bucket that differs ('' = absent).
local mode, lo, hi = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local cutoff = cmsgpack.unpack(ARGV[4])
local n_min, n_win = tonumber(ARGV[5]), tonumber(ARGV[6])
local MIN_TTL, WM_TTL = tonumber(ARGV[7]), tonumber(ARGV[8])
local swap = (mode == 'swap')

local live_wm = redis.call('HGETALL', KEYS[1])
for i = 1, #live_wm, 2 do
  local c = cutoff[live_wm[i]]
  if c == nil or tonumber(live_wm[i + 1]) >= c then return {-1} end
end

-- the fields of a bucket hash whose bucket start lies in [lo, hi)
local function in_range(key)
  local out, raw = {}, redis.call('HGETALL', key)
  for i = 1, #raw, 2 do
    local b = tonumber(raw[i])
    if b ~= nil and b >= lo and b < hi then out[raw[i]] = raw[i + 1] end
  end
  return out
end

-- differences live -> shadow; applied when swapping. Returns the number of fields that differ.
local function replace(live, shadow, kind, report)
  local want, have = in_range(shadow), in_range(live)
  local n = 0
  for f, v in pairs(have) do
    if want[f] == nil then
      n = n + 1
      if report then report[#report + 1] = kind; report[#report + 1] = f; report[#report + 1] = v; report[#report + 1] = '' end
      if swap then redis.call('HDEL', live, f) end
    end
  end
  for f, v in pairs(want) do
    if have[f] ~= v then
      n = n + 1
      if report then report[#report + 1] = kind; report[#report + 1] = f; report[#report + 1] = have[f] or ''; report[#report + 1] = v end
      if swap then redis.call('HSET', live, f, v) end
    end
  end
  return n
end

local report = {}
replace(KEYS[3], KEYS[4], 'h', report)
replace(KEYS[5], KEYS[6], 'd', report)
local minutes = 0
for i = 0, n_min - 1 do
  local live, shadow = KEYS[7 + 2 * i], KEYS[8 + 2 * i]
  local n = replace(live, shadow, 'm', nil)
  minutes = minutes + n
  if swap and n > 0 and redis.call('EXISTS', live) == 1 then redis.call('PEXPIRE', live, MIN_TTL) end
end

if swap then
  local base = 7 + 2 * n_min
  for i = 0, n_win - 1 do
    local live, shadow = KEYS[base + 2 * i], KEYS[base + 2 * i + 1]
    local dump = redis.call('DUMP', shadow)
    if dump then
      local ttl = redis.call('PTTL', shadow)
      if ttl < 0 then ttl = 0 end
      redis.call('RESTORE', live, ttl, dump, 'REPLACE')
    else
      redis.call('DEL', live)
    end
  end
  -- the live watermarks move up to the shadow's: every record at or below them is in the swapped state
  local shadow_wm = redis.call('HGETALL', KEYS[2])
  local cur = {}
  for i = 1, #live_wm, 2 do cur[live_wm[i]] = tonumber(live_wm[i + 1]) end
  local flat = {}
  for i = 1, #shadow_wm, 2 do
    local off = tonumber(shadow_wm[i + 1])
    if cur[shadow_wm[i]] == nil or off > cur[shadow_wm[i]] then
      flat[#flat + 1] = shadow_wm[i]; flat[#flat + 1] = shadow_wm[i + 1]
    end
  end
  if #flat > 0 then
    redis.call('HSET', KEYS[1], unpack(flat))
    redis.call('PEXPIRE', KEYS[1], WM_TTL)
  end
end

local out = {0, minutes}
for _, x in ipairs(report) do out[#out + 1] = x end
return out
"""


@dataclass(frozen=True)
class BucketChange:
    """One hour/day bucket that differs: values as stored (``None`` = absent)."""

    kind: str  # "hour" | "day"
    bucket: int
    live: str | None
    rebuilt: str | None


@dataclass
class PairResult:
    meter_id: str
    customer: str
    behind: bool = False  # the live processor applied records the shadow has not read yet
    minutes_changed: int = 0
    changes: list[BucketChange] = field(default_factory=list)

    @property
    def differs(self) -> bool:
        return bool(self.changes) or self.minutes_changed > 0


def window_units(meter: Meter, start: int, end: int, now: int) -> list[int]:
    """Starts of the meter's window keys (best / candidates) that lie in ``[start, end)`` and can still exist:
    pre-aggregated windows (hour / day) and the hours of a raw ``last`` meter, no older than their TTL."""
    if meter.event_time_window == "day":
        step = DAY_S
    elif meter.event_time_window == "hour" or meter.formula == "last":
        step = HOUR_S
    else:
        return []
    lo = max(start, now - BEST_TTL_S - DAY_S)
    lo += (-lo) % step
    return list(range(lo, min(end, now + DAY_S), step))


class SwapScript:
    """The script, registered on one client; :meth:`run` queues calls on a pipeline, :meth:`parse` reads them."""

    def __init__(self, client: Any, live: Keys, shadow: Keys) -> None:
        self._client = client
        self._script = client.register_script(_LUA)
        self.live = live
        self.shadow = shadow

    def run(self, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run the calls made by :meth:`call`, pipelined (per node on Redis Cluster); raw results in order."""
        return run_scripts(self._client, self._script, calls)

    def queue(self, pipe: Any, *call_args: Any) -> None:
        """Queue one :meth:`call` on a (single-server) pipeline."""
        keys, args = self.call(*call_args)
        self._script(keys=keys, args=args, client=pipe)

    def call(
        self,
        mode: str,
        meter: Meter,
        customer: str,
        start: int,
        end: int,
        cutoff: dict[str, int],
        now: int,
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of one pair's step (all keys in the pair's hash slot)."""
        lv, sh, m = self.live, self.shadow, meter.id
        keys = [
            lv.watermark(m, customer),
            sh.watermark(m, customer),
            lv.usage_hour(m, customer),
            sh.usage_hour(m, customer),
            lv.usage_day(m, customer),
            sh.usage_day(m, customer),
        ]
        days = range(max(start, now - MINUTES_TTL_S - DAY_S) // DAY_S * DAY_S, min(end, now + DAY_S), DAY_S)
        for day in days:
            keys += [lv.minutes(m, customer, day), sh.minutes(m, customer, day)]
        units = window_units(meter, start, end, now) if mode == "swap" else []
        for unit in units:
            keys += [lv.best(m, customer, unit), sh.best(m, customer, unit)]
            keys += [lv.candidates(m, customer, unit), sh.candidates(m, customer, unit)]
        args = [
            mode,
            start,
            end,
            msgpack.packb(cutoff),
            len(days),
            2 * len(units),
            MINUTES_TTL_S * 1000,
            WATERMARK_TTL_S * 1000,
        ]
        return keys, args

    @staticmethod
    def parse(meter_id: str, customer: str, raw: Sequence[Any]) -> PairResult:
        def text(x: Any) -> str:
            return x.decode() if isinstance(x, bytes) else str(x)

        result = PairResult(meter_id, customer)
        if int(raw[0]) < 0:
            result.behind = True
            return result
        result.minutes_changed = int(raw[1])
        rest = list(raw[2:])
        for i in range(0, len(rest), 4):
            kind, bucket, live, rebuilt = (text(x) for x in rest[i : i + 4])
            result.changes.append(
                BucketChange("hour" if kind == "h" else "day", int(bucket), live or None, rebuilt or None)
            )
        result.changes.sort(key=lambda c: (c.kind != "day", c.bucket))
        return result
