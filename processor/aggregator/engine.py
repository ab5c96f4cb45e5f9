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
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from processor.aggregator.meterbook import MeterBook
from processor.aggregator.validate import Cancel, Event, Rejected, Source, validate_adjustment, validate_event
from processor.meters.model import Meter
from processor.state.keys import Keys
from processor.state.store import ApplyOp, ClaimOp, StateStore
from processor.windows import bucket, day_start, hour_start, received_rank, timestamp_rank

__all__ = ["ADJUSTMENTS", "EVENTS", "Engine", "Output", "RawRecord"]

log = logging.getLogger(__name__)

EVENTS = "meter-events"
ADJUSTMENTS = "meter-event-adjustments"


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


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Engine:
    """Applies batches of records to the state store. Holds no Kafka clients; safe to reuse."""

    def __init__(self, store: StateStore, meters: MeterBook) -> None:
        self.store = store
        self.meters = meters
        self.keys: Keys = store.keys

    # ---- validation --------------------------------------------------------------------------------
    def validate(self, records: list[RawRecord]) -> list[Event | Cancel | Rejected]:
        out: list[Event | Cancel | Rejected] = []
        for rec in records:
            src = Source(rec.topic, rec.partition, rec.offset, rec.received_ms)
            if rec.topic == EVENTS:
                out.append(validate_event(rec.value, src, self.meters))
            else:
                out.append(validate_adjustment(rec.value, src, self.meters))
        return out

    # ---- the batch ---------------------------------------------------------------------------------
    def process(self, records: list[RawRecord], now_ms: int | None = None) -> Output:
        out = Output()
        for rec in records:
            key = f"{rec.topic}/{rec.partition}"
            out.next_offsets[key] = max(out.next_offsets.get(key, 0), rec.offset + 1)
        judged = self.validate(records)
        events = [j for j in judged if isinstance(j, Event)]
        cancels = [j for j in judged if isinstance(j, Cancel)]
        for j in judged:
            if isinstance(j, Rejected):
                out.errors.append((j.customer, self._error_value(j)))
                out.errors_from.append(j.source)
                out.stats[f"rejected:{j.code}"] += 1

        ordered: list[Event | Cancel] = [*events, *cancels]
        claims = [self._claim_op(item) for item in ordered]
        results = self.store.claim(claims, now_ms)

        apply_ops: list[ApplyOp] = []
        latest: dict[tuple[str, str], int] = {}
        for item, res in zip(ordered, results, strict=True):
            status = res[0]
            if isinstance(item, Event):
                self._on_event(item, res, out, apply_ops, latest)
            else:
                self._on_cancel(item, res, out, apply_ops)
            out.stats[f"{'event' if isinstance(item, Event) else 'cancel'}:{status}"] += 1
        self.store.apply(apply_ops)
        self.store.touch_customers(latest)
        return out

    def _claim_op(self, item: Event | Cancel) -> ClaimOp:
        key = self.keys.claim(item.meter.id, item.identifier)
        src = item.source
        if isinstance(item, Event):
            value = "" if item.value is None else str(item.value)
            return ClaimOp("E", key, src.received_ms, src.ref, item.customer, item.timestamp, value)
        return ClaimOp("C", key, src.received_ms, src.ref)

    def _on_event(
        self, ev: Event, res: list[str], out: Output, ops: list[ApplyOp], latest: dict[tuple[str, str], int]
    ) -> None:
        status = res[0]
        if status == "dup":
            return
        arrived_cancelled = (status == "new" and res[1] != "") or (status == "mine" and res[2] == "1")
        if not arrived_cancelled:
            ops.append(
                self._change(
                    ev.meter,
                    ev.customer,
                    ev.source,
                    ev.timestamp,
                    "" if ev.value is None else str(ev.value),
                    ev.source,
                    add=True,
                )
            )
        mc = (ev.meter.id, ev.customer)
        latest[mc] = max(latest.get(mc, ev.timestamp), ev.timestamp)
        out.accepted.append(
            (
                ev.customer,
                _dumps(
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
                ),
            )
        )
        out.accepted_from.append(ev.source)
        if arrived_cancelled:
            # A cancellation that came first takes this event out on arrival; forward it after the event.
            out.accepted.append(
                (ev.customer, self._cancel_value(ev.meter, ev.identifier, ev.customer, res[1], ev.source.received_ms))
            )
            out.accepted_from.append(ev.source)

    def _on_cancel(self, c: Cancel, res: list[str], out: Output, ops: list[ApplyOp]) -> None:
        status = res[0]
        if status not in ("cancel", "mine"):
            return  # noop / pending / consumed: nothing to change now
        event_ref, customer, ts_s, value, r_event = res[1], res[2], int(res[3]), res[4], int(res[5])
        topic, part, off = event_ref.rsplit("/", 2)
        ev_src = Source(topic, int(part), int(off), r_event)
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
        return ApplyOp(
            kind,
            k.watermark(meter.id, customer),
            k.usage_hour(meter.id, customer),
            k.usage_day(meter.id, customer),
            cand,
            best,
            f"{by.topic}/{by.partition}",
            by.offset,
            ev_src.ref,
            rank,
            value or "0",
            ts,
            meter.formula,
            k.minutes(meter.id, customer, day_start(ts)),
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
