"""What the emulator counts: accepted events per meter and customer, aggregated for summaries.

Per meter (:class:`MeterLedger`): the identifier holders (24 h), the log of accepted events and of
cancellations, and one :class:`Series` per customer. A series keeps running aggregates per UTC minute,
hour and day of the event timestamp, so

- accepting or cancelling an event touches three buckets (O(1), plus O(log n) when a bucket is new);
- a grouped summary reads one bucket per window, and an arbitrary minute-aligned range is covered by at
  most 59 + 23 minute/hour buckets at each end plus whole days (O(buckets), never O(events)).

``last`` needs the event with the greatest ``(timestamp, received order)``; when that event is removed
the bucket's last is recomputed from the level below (a minute from its own events, an hour from its
60 minutes, a day from its 24 hours).

Pre-aggregated meters (``event_time_window`` hour/day) keep every surviving event of each customer's
window in received order; only the most recently received one is in the aggregates, and cancelling it
promotes the next most recent.
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

__all__ = [
    "CANCEL_WINDOW",
    "DAY",
    "DEDUP_WINDOW",
    "HOUR",
    "MINUTE",
    "Agg",
    "Cancellation",
    "LedgerEvent",
    "MeterLedger",
    "Series",
]

MINUTE, HOUR, DAY = 60, 3600, 86400
#: A new event with an identifier held by an event received less than this long ago is a duplicate.
DEDUP_WINDOW = 86400
#: A cancellation applies to an event received at most this long before it.
CANCEL_WINDOW = 86400


class LedgerEvent:
    """An accepted meter event. ``seq`` is the emulator-wide arrival order (ties in ``last`` and the
    "most recently received" rule use it)."""

    __slots__ = ("cancelled", "customer", "identifier", "received", "seq", "source", "timestamp", "value")

    def __init__(
        self, seq: int, identifier: str, customer: str, value: int, timestamp: int, received: float, source: str
    ) -> None:
        self.seq = seq
        self.identifier = identifier
        self.customer = customer
        self.value = value
        self.timestamp = timestamp
        self.received = received
        self.source = source
        self.cancelled = False

    def to_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "identifier": self.identifier,
            "customer": self.customer,
            "value": self.value,
            "timestamp": self.timestamp,
            "received": self.received,
            "source": self.source,
            "cancelled": self.cancelled,
        }


@dataclass(frozen=True)
class Cancellation:
    """One cancellation request and what it did: ``cancelled``, ``already_cancelled``, ``too_late``
    (the event was received more than 24 h earlier) or ``not_found``."""

    seq: int
    identifier: str
    received: float
    result: str
    source: str
    event_seq: int | None = None
    event_received: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "seq": self.seq,
            "identifier": self.identifier,
            "received": self.received,
            "result": self.result,
            "source": self.source,
            "event_seq": self.event_seq,
            "event_received": self.event_received,
        }


class Agg:
    """Running sum, count and last of one bucket. ``last_seq == -1`` means no last yet."""

    __slots__ = ("count", "last_seq", "last_ts", "last_value", "total")

    def __init__(self) -> None:
        self.total = 0
        self.count = 0
        self.last_ts = 0
        self.last_seq = -1
        self.last_value = 0

    def add(self, ev: LedgerEvent) -> None:
        self.total += ev.value
        self.count += 1
        if self.last_seq < 0 or (ev.timestamp, ev.seq) > (self.last_ts, self.last_seq):
            self.last_ts, self.last_seq, self.last_value = ev.timestamp, ev.seq, ev.value

    def take_last(self, other: Agg) -> None:
        if other.last_seq >= 0 and (
            self.last_seq < 0 or (other.last_ts, other.last_seq) > (self.last_ts, self.last_seq)
        ):
            self.last_ts, self.last_seq, self.last_value = other.last_ts, other.last_seq, other.last_value

    def merge(self, other: Agg) -> None:
        self.total += other.total
        self.count += other.count
        self.take_last(other)

    def clear_last(self) -> None:
        self.last_ts, self.last_seq, self.last_value = 0, -1, 0

    def value(self, formula: str) -> int:
        if formula == "count":
            return self.count
        if formula == "last":
            return self.last_value if self.count else 0
        return self.total


class Level:
    """Buckets of one width (60, 3600 or 86400 s), with their starts kept sorted for range reads."""

    __slots__ = ("buckets", "keys", "width")

    def __init__(self, width: int) -> None:
        self.width = width
        self.buckets: dict[int, Agg] = {}
        self.keys: list[int] = []

    def add(self, ev: LedgerEvent) -> None:
        start = ev.timestamp - ev.timestamp % self.width
        agg = self.buckets.get(start)
        if agg is None:
            agg = self.buckets[start] = Agg()
            if not self.keys or start > self.keys[-1]:
                self.keys.append(start)
            else:
                bisect.insort(self.keys, start)
        agg.add(ev)

    def subtract(self, ev: LedgerEvent) -> tuple[int, Agg | None]:
        """Take ``ev`` out of its bucket; returns the bucket start and the bucket (``None`` once empty)."""
        start = ev.timestamp - ev.timestamp % self.width
        agg = self.buckets[start]
        agg.total -= ev.value
        agg.count -= 1
        if agg.count == 0:
            del self.buckets[start]
            del self.keys[bisect.bisect_left(self.keys, start)]
            return start, None
        return start, agg

    def starts(self, lo: int, hi: int) -> list[int]:
        """Sorted starts of the non-empty buckets in ``[lo, hi)``."""
        return self.keys[bisect.bisect_left(self.keys, lo) : bisect.bisect_left(self.keys, hi)]

    def fold(self, lo: int, hi: int, acc: Agg) -> None:
        for start in self.starts(lo, hi):
            acc.merge(self.buckets[start])


class Series:
    """One customer's surviving events of one meter, as minute/hour/day aggregates."""

    __slots__ = ("levels", "members", "pre")

    def __init__(self, track_last: bool) -> None:
        self.levels = (Level(MINUTE), Level(HOUR), Level(DAY))
        # minute start -> its events by seq; only kept where ``last`` may need recomputing
        self.members: dict[int, dict[int, LedgerEvent]] | None = {} if track_last else None
        # pre-aggregated meters: window start -> surviving events by seq (received order)
        self.pre: dict[int, dict[int, LedgerEvent]] = {}

    def add(self, ev: LedgerEvent) -> None:
        for level in self.levels:
            level.add(ev)
        if self.members is not None:
            self.members.setdefault(ev.timestamp - ev.timestamp % MINUTE, {})[ev.seq] = ev

    def remove(self, ev: LedgerEvent) -> None:
        if self.members is not None:
            minute = ev.timestamp - ev.timestamp % MINUTE
            bucket = self.members[minute]
            del bucket[ev.seq]
            if not bucket:
                del self.members[minute]
        below: Level | None = None
        for level in self.levels:
            start, agg = level.subtract(ev)
            if agg is not None and self.members is not None and agg.last_seq == ev.seq:
                agg.clear_last()
                if below is None:
                    for other in self.members[start].values():
                        if agg.last_seq < 0 or (other.timestamp, other.seq) > (agg.last_ts, agg.last_seq):
                            agg.last_ts, agg.last_seq, agg.last_value = other.timestamp, other.seq, other.value
                else:
                    for sub in below.starts(start, start + level.width):
                        agg.take_last(below.buckets[sub])
            below = level

    def range_agg(self, lo: int, hi: int) -> Agg:
        """Aggregate over ``[lo, hi)``; both minute-aligned."""
        acc = Agg()
        self._fold(acc, lo, hi, len(self.levels) - 1)
        return acc

    def _fold(self, acc: Agg, lo: int, hi: int, index: int) -> None:
        if lo >= hi:
            return
        level = self.levels[index]
        if index == 0:
            level.fold(lo, hi, acc)
            return
        width = level.width
        a = -(-lo // width) * width
        b = hi // width * width
        if a >= b:
            self._fold(acc, lo, hi, index - 1)
            return
        self._fold(acc, lo, a, index - 1)
        level.fold(a, b, acc)
        self._fold(acc, b, hi, index - 1)

    def level(self, width: int) -> Level:
        return next(level for level in self.levels if level.width == width)


class MeterLedger:
    """Everything counted for one meter."""

    def __init__(self, meter_id: str, formula: str, window: str | None) -> None:
        self.meter_id = meter_id
        self.formula = formula
        self.window_width = {"hour": HOUR, "day": DAY}.get(window or "")
        self.series: dict[str, Series] = {}
        self.holders: dict[str, LedgerEvent] = {}
        self._claims: deque[LedgerEvent] = deque()
        self.events: list[LedgerEvent] = []
        self.cancellations: list[Cancellation] = []

    # -- identifiers -------------------------------------------------------------------------------
    def holder(self, identifier: str, now: float) -> LedgerEvent | None:
        """The accepted event holding ``identifier`` if it was received less than 24 h ago."""
        ev = self.holders.get(identifier)
        if ev is not None and now - ev.received < DEDUP_WINDOW:
            return ev
        return None

    def _prune(self, now: float) -> None:
        claims = self._claims
        while claims and now - claims[0].received > CANCEL_WINDOW:
            ev = claims.popleft()
            if self.holders.get(ev.identifier) is ev:
                del self.holders[ev.identifier]

    # -- events ------------------------------------------------------------------------------------
    def accept(self, ev: LedgerEvent) -> None:
        """Count ``ev`` (the caller has checked it is valid and not a duplicate)."""
        self._prune(ev.received)
        self.holders[ev.identifier] = ev
        self._claims.append(ev)
        self.events.append(ev)
        series = self.series.get(ev.customer)
        if series is None:
            series = self.series[ev.customer] = Series(track_last=self.formula == "last")
        if self.window_width is None:
            series.add(ev)
            return
        window = series.pre.setdefault(ev.timestamp - ev.timestamp % self.window_width, {})
        if window:
            series.remove(window[next(reversed(window))])
        window[ev.seq] = ev
        series.add(ev)

    def cancel(self, identifier: str, now: float, seq: int, source: str) -> Cancellation:
        """Cancel the event holding ``identifier`` if it was received at most 24 h before ``now``."""
        ev = self.holders.get(identifier)
        if ev is None:
            result = "not_found"
        elif now - ev.received > CANCEL_WINDOW:
            result = "too_late"
        elif ev.cancelled:
            result = "already_cancelled"
        else:
            result = "cancelled"
            ev.cancelled = True
            self._uncount(ev)
        record = Cancellation(
            seq=seq,
            identifier=identifier,
            received=now,
            result=result,
            source=source,
            event_seq=None if ev is None else ev.seq,
            event_received=None if ev is None else ev.received,
        )
        self.cancellations.append(record)
        self._prune(now)
        return record

    def _uncount(self, ev: LedgerEvent) -> None:
        series = self.series[ev.customer]
        if self.window_width is None:
            series.remove(ev)
            return
        start = ev.timestamp - ev.timestamp % self.window_width
        window = series.pre[start]
        survivor = next(reversed(window))
        del window[ev.seq]
        if survivor == ev.seq:
            series.remove(ev)
            if window:
                series.add(window[next(reversed(window))])
        if not window:
            del series.pre[start]

    # -- summaries ---------------------------------------------------------------------------------
    def total(self, customer: str, lo: int, hi: int) -> int:
        """The formula's value over ``[lo, hi)`` (minute-aligned); 0 without events."""
        series = self.series.get(customer)
        return 0 if series is None else series.range_agg(lo, hi).value(self.formula)

    def window_starts(self, customer: str, width: int, lo: int, hi: int) -> list[int]:
        """Sorted starts of the ``width`` windows in ``[lo, hi)`` that hold at least one surviving event."""
        series = self.series.get(customer)
        return [] if series is None else series.level(width).starts(lo, hi)

    def window_value(self, customer: str, width: int, start: int) -> int:
        series = self.series.get(customer)
        agg = None if series is None else series.level(width).buckets.get(start)
        return 0 if agg is None else agg.value(self.formula)
