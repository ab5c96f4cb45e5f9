"""One batch, start to finish, independent of Kafka: validate → claim → apply → what to emit.

The runner (runner.py) feeds records it consumed and produces what :meth:`Engine.process` returns, then
stores progress. Keeping Kafka out of here lets the fault tests and the benchmark drive exactly the same
code, and keeps the ordering rules in one place:

1. events before cancellations within a batch, so a cancellation resolved in the same batch as its event
   is emitted after it (both keyed by the customer, so they share a partition downstream);
2. the claim step for every record, then the apply step for every change, then the customers index;
3. output records in processing order.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import orjson

from processor.aggregator.validate import (
    Cancel,
    Event,
    Rejected,
    Source,
    judge_adjustment_record,
    judge_event,
    judge_event_record,
    loads_fast,
)
from processor.errors import StateError
from processor.meters.book import MeterBook
from processor.meters.model import Meter
from processor.state.keys import Keys
from processor.state.steps import ApplyOp, CancelClaim, ClaimOp, EventAt, EventClaim
from processor.state.store import StateStore
from processor.windows import bucket, day_start, hour_start, received_rank, timestamp_rank
from topics import Topic

__all__ = ["ADJUSTMENTS", "EVENTS", "Engine", "Output", "RawRecord"]

log = logging.getLogger(__name__)

EVENTS = Topic.EVENTS
ADJUSTMENTS = Topic.ADJUSTMENTS


class RawRecord(NamedTuple):
    """A consumed record, reduced to what the engine needs (topic is the catalog base name)."""

    topic: str
    partition: int
    offset: int
    received_ms: int
    value: bytes | None


@dataclass
class Output:
    """What a batch produced: records for the accepted and error topics, counters, next offsets."""

    accepted: list[tuple[str, bytes]] = field(default_factory=list)
    #: the input record each accepted / error output came from (same order), so the runner can hold back
    #: outputs it already produced before (a re-derivation after Redis lost its state)
    accepted_from: list[Source] = field(default_factory=list)
    errors_from: list[Source] = field(default_factory=list)
    errors: list[tuple[str | None, bytes]] = field(default_factory=list)
    stats: Counter[str] = field(default_factory=Counter)
    next_offsets: dict[str, int] = field(default_factory=dict)
    #: (cancellation, event it cancelled) for every cancellation emitted by this batch, so the runner can
    #: check that the event's own accepted record is already on the topic (another processor may have
    #: claimed it and not produced it yet)
    cancel_targets: list[tuple[Source, Source]] = field(default_factory=list)
    #: (cancellation, event) of cancellations whose event record could not be read yet (another processor
    #: claimed the event and has not produced it): not applied, not emitted; the runner reads them again
    unresolved: list[tuple[Source, Source]] = field(default_factory=list)
    #: seconds this batch spent per stage (decode, validate, claim, apply), for the benchmark's breakdown
    stages: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))


def _dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON. orjson writes exactly what ``json.dumps(separators=(",", ":"),
    ensure_ascii=False)`` writes, except that it refuses lone surrogates (a record decoded by the full path
    may hold one): those take the json module."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


#: How many judged events the engine keeps for cancellations (~150 B each); older ones are read from Kafka.
RECENT_EVENTS = 200_000

#: Reads meter-events records by (partition, offset): (received ms, value) of each found
Fetch = Callable[[list[tuple[int, int]]], dict[tuple[int, int], tuple[int, bytes | None]]]

#: Bound of the per-(meter, customer) key cache: cleared when it grows beyond (cheap to rebuild).
_KEY_CACHE_MAX = 200_000


def _claim_ops(items: list[Event] | list[Cancel]) -> list[ClaimOp]:
    """The claim step's op for each validated record."""
    return [
        ClaimOp(
            meter_id=item.meter.id,
            identifier=item.identifier,
            received_ms=item.source.received_ms,
            partition=item.source.partition,
            offset=item.source.offset,
        )
        for item in items
    ]


class Engine:
    """Applies batches of records to the state store. Holds no Kafka clients; safe to reuse."""

    def __init__(self, store: StateStore, meters: MeterBook, fetch: Fetch | None = None) -> None:
        self.store = store
        self.meters = meters
        #: reads events back by position (processor/aggregator/fetch.py) for cancellations the cache misses
        self.fetch = fetch
        self.keys: Keys = store.keys
        self._pair_keys: dict[tuple[str, str], tuple[str, str, str]] = {}
        #: (partition, offset) → (customer, timestamp, value) of events judged lately, oldest first
        self._recent: OrderedDict[tuple[int, int], tuple[str, int, str]] = OrderedDict()
        self.recent_limit = RECENT_EVENTS
        #: how many events were read back from Kafka (for tests and the benchmark)
        self.fetched = 0
        self._pool: ThreadPoolExecutor | None = None
        #: True in the processor (its runner re-reads a cancellation whose event record is not out yet);
        #: False elsewhere (rebuild, tests), where such a cancellation is a StateError, never a silent skip
        self.defer_unresolved = False

    def _io(self) -> ThreadPoolExecutor:
        """One worker thread that waits for Redis while this thread goes on (its socket wait releases the GIL)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine-redis")
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    # ---- validation --------------------------------------------------------------------------------
    def validate(
        self, records: list[RawRecord], stages: defaultdict[str, float] | None = None
    ) -> list[Event | Cancel | Rejected]:
        t0 = time.perf_counter()
        decoded = [loads_fast(rec.value) for rec in records]
        t1 = time.perf_counter()
        out: list[Event | Cancel | Rejected] = []
        meters = self.meters
        for rec, data in zip(records, decoded, strict=True):
            src = Source(rec.topic, rec.partition, rec.offset, rec.received_ms)
            if rec.topic == EVENTS:
                out.append(judge_event_record(rec.value, data, src, meters))
            else:
                out.append(judge_adjustment_record(rec.value, data, src, meters))
        if stages is not None:
            stages["decode"] += t1 - t0
            stages["validate"] += time.perf_counter() - t1
        return out

    # ---- the batch ---------------------------------------------------------------------------------
    def process(self, records: list[RawRecord], now_ms: int | None = None) -> Output:
        out = Output()
        for rec in records:
            key = f"{rec.topic}/{rec.partition}"
            out.next_offsets[key] = max(out.next_offsets.get(key, 0), rec.offset + 1)
        judged = self.validate(records, out.stages)
        t0 = time.perf_counter()
        events = [j for j in judged if isinstance(j, Event)]
        cancels = [j for j in judged if isinstance(j, Cancel)]
        for j in judged:
            if isinstance(j, Rejected):
                out.errors.append((j.customer, self._error_value(j)))
                out.errors_from.append(j.source)
                out.stats[f"rejected:{j.code}"] += 1

        # The claim step's round trip overlaps the Python work that does not depend on its answer: each
        # event's add-op and accepted record, built as if it were new (most are); a duplicate's are dropped.
        pending = self._io().submit(self.store.claim, _claim_ops(events), _claim_ops(cancels), now_ms)
        spec = [(self._add_op(ev), self._accepted_value(ev)) for ev in events]
        event_claims, cancel_claims = pending.result()
        t1 = time.perf_counter()
        out.stages["claim"] += t1 - t0

        apply_ops: list[ApplyOp] = []
        latest: dict[tuple[str, str], int] = {}
        stats = out.stats
        for ev, claim, (op, value) in zip(events, event_claims, spec, strict=True):
            self._on_event(ev, claim, out, apply_ops, latest, op, value)
            stats["event:" + claim.status] += 1
        found = self._events_at([c.event for c in cancel_claims if c.event is not None])
        for c, cancel_claim in zip(cancels, cancel_claims, strict=True):
            self._on_cancel(c, cancel_claim, out, apply_ops, found)
            stats["cancel:" + cancel_claim.status] += 1
        self.store.apply(apply_ops)
        self.store.touch_customers(latest)
        out.stages["apply"] += time.perf_counter() - t1
        return out

    # ---- the events cancellations need -----------------------------------------------------------------
    def _remember(self, ev: Event) -> tuple[str, int, str]:
        found = (ev.customer, ev.timestamp, "" if ev.value is None else str(ev.value))
        recent = self._recent
        if len(recent) >= self.recent_limit:
            if not recent:
                return found  # the cache is off (tests force reading events back)
            # OrderedDict: dropping the oldest is O(1) (a plain dict's next(iter()) scans deleted slots)
            recent.popitem(last=False)
        recent[(ev.source.partition, ev.source.offset)] = found
        return found

    def _events_at(self, wanted: list[EventAt]) -> dict[tuple[int, int], tuple[str, int, str]]:
        """(customer, timestamp, value) of the events at these (partition, offset, received ms): from the
        recent-events cache, else read from Kafka and validated again (the meter version of its received
        time gives the values judged the first time). A record that no longer validates is a StateError:
        never a silent skip."""
        found: dict[tuple[int, int], tuple[str, int, str]] = {}
        missing: list[tuple[int, int, int]] = []
        for part, off, r_ms in wanted:
            hit = self._recent.get((part, off))
            if hit is None:
                missing.append((part, off, r_ms))
            else:
                found[(part, off)] = hit
        if not missing:
            return found
        if self.fetch is None:
            raise StateError(f"{len(missing)} cancelled events are not in this engine's cache and it has no fetcher")
        records = self.fetch([(p, o) for p, o, _ in missing])
        for part, off, r_ms in missing:
            got = records.get((part, off))
            if got is None:
                continue  # not on the topic (yet): the caller defers the cancellation
            judged = judge_event(got[1], Source(EVENTS, part, off, got[0]), self.meters)
            if not isinstance(judged, Event) or got[0] != r_ms:
                raise StateError(f"the event at {EVENTS}/{part}/{off} a cancellation resolved to does not validate")
            found[(part, off)] = self._remember(judged)
            self.fetched += 1
        return found

    def _add_op(self, ev: Event) -> ApplyOp:
        value = "" if ev.value is None else str(ev.value)
        return self._change(ev.meter, ev.customer, ev.source, ev.timestamp, value, ev.source, add=True)

    def _accepted_value(self, ev: Event) -> bytes:
        return _dumps(
            {
                "kind": "event",
                "meter_id": ev.meter.id,
                "event_name": ev.meter.event_name,
                "identifier": ev.identifier,
                "customer": ev.customer,
                "timestamp": ev.timestamp,
                "payload": ev.payload,
                "received_at": ev.source.received_ms,
                "source": ev.source.ref,
            }
        )

    def _on_event(
        self,
        ev: Event,
        claim: EventClaim,
        out: Output,
        ops: list[ApplyOp],
        latest: dict[tuple[str, str], int],
        add_op: ApplyOp,
        accepted: bytes,
    ) -> None:
        if claim.status == "dup":
            return
        self._remember(ev)
        cancelled_by = claim.cancelled_by if claim.arrived_cancelled else None
        if cancelled_by is None:
            ops.append(add_op)
        mc = (ev.meter.id, ev.customer)
        latest[mc] = max(latest.get(mc, ev.timestamp), ev.timestamp)
        out.accepted.append((ev.customer, accepted))
        out.accepted_from.append(ev.source)
        if cancelled_by is not None:
            # A cancellation that came first takes this event out on arrival; forward it after the event.
            ref = f"{ADJUSTMENTS}/{cancelled_by[0]}/{cancelled_by[1]}"
            out.accepted.append(
                (ev.customer, self._cancel_value(ev.meter, ev.identifier, ev.customer, ref, ev.source.received_ms))
            )
            out.accepted_from.append(ev.source)

    def _on_cancel(
        self,
        c: Cancel,
        claim: CancelClaim,
        out: Output,
        ops: list[ApplyOp],
        found: dict[tuple[int, int], tuple[str, int, str]],
    ) -> None:
        target = claim.event
        if target is None:
            return  # noop / pending / consumed: nothing to change now
        part, off = target.partition, target.offset
        ev_src = Source(EVENTS, part, off, target.received_ms)
        hit = found.get((part, off))
        if hit is None:
            if not self.defer_unresolved:
                raise StateError(f"the event at {EVENTS}/{part}/{off} a cancellation resolved to is not readable")
            out.unresolved.append((c.source, ev_src))
            return
        customer, ts_s, value = hit
        ops.append(self._change(c.meter, customer, c.source, ts_s, value, ev_src, add=False))
        out.accepted.append(
            (customer, self._cancel_value(c.meter, c.identifier, customer, c.source.ref, c.source.received_ms))
        )
        out.accepted_from.append(c.source)
        out.cancel_targets.append((c.source, ev_src))

    def _change(
        self, meter: Meter, customer: str, by: Source, ts: int, value: str, ev_src: Source, *, add: bool
    ) -> ApplyOp:
        """The ApplyOp for adding (or withdrawing) one event, guarded by the record ``by`` that causes it.

        Candidates are keyed by the event's record position, not its identifier: an identifier may be used
        again after 24 h, and a late cancellation of the first use must not take out the second.
        """
        k = self.keys
        window = meter.event_time_window
        cand = best = rank = ""
        if window is not None:
            unit = bucket(ts, window)
            rank = received_rank(ev_src.received_ms, ev_src.partition, ev_src.offset)
            kind = "c+" if add else "c-"
        elif meter.formula == "last":
            unit = hour_start(ts)
            rank = timestamp_rank(ts, ev_src.received_ms, ev_src.partition, ev_src.offset)
            kind = "l+" if add else "l-"
        else:
            kind = "+" if add else "-"
        if rank:
            cand, best = k.candidates(meter.id, customer, unit), k.best(meter.id, customer, unit)
        pair = self._pair_keys.get((meter.id, customer))
        if pair is None:
            if len(self._pair_keys) >= _KEY_CACHE_MAX:
                self._pair_keys.clear()
            pair = self._pair_keys[(meter.id, customer)] = (
                k.watermark(meter.id, customer),
                k.usage_hour(meter.id, customer),
                k.usage_day(meter.id, customer),
            )
        return ApplyOp(
            kind=kind,
            wm_key=pair[0],
            hour_key=pair[1],
            day_key=pair[2],
            cand_key=cand,
            best_key=best,
            minutes_key=k.minutes(meter.id, customer, day_start(ts)),
            src=f"{by.topic}/{by.partition}",
            offset=by.offset,
            ident=ev_src.ref,
            rank=rank,
            value=value or "0",
            ts=ts,
            formula=meter.formula,
        )

    def _cancel_value(self, meter: Meter, ident: str, customer: str, ref: str, received_ms: int) -> bytes:
        return _dumps(
            {
                "kind": "cancel",
                "meter_id": meter.id,
                "event_name": meter.event_name,
                "identifier": ident,
                "customer": customer,
                "received_at": received_ms,
                "source": ref,
            }
        )

    def _error_value(self, rej: Rejected) -> bytes:
        return _dumps(
            {
                "code": rej.code,
                "message": rej.message,
                "event": rej.original,
                "topic": rej.source.topic,
                "partition": rej.source.partition,
                "offset": rej.source.offset,
                "received_at": rej.source.received_ms,
            }
        )
