"""Hypothesis strategies: whole scenarios (meters over time + the records of both input topics).

A scenario is what a broker would hold: each record has a partition, offsets count up per (topic, partition),
and received times never go down within a partition (append order). Events are keyed by customer and
adjustments by identifier (partition = stable hash % partitions), so one identifier's events and one
identifier's cancellations each stay in one partition — the condition under which docs/semantics.md promises
a result that does not depend on how partitions interleave. Times cluster around the edges that matter:
24 h to the millisecond, 35 days / 5 minutes to the second, hour and day boundaries.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st

from tests.model.builders import MISSING, meter_version
from tests.model.reference import ADJUSTMENTS, DAY_MS, EVENTS, MeterVersion, Rec

__all__ = [
    "BIG_BYTES",
    "DEFAULT_BASE_MS",
    "SPAN_MS",
    "Scenario",
    "interleavings",
    "partition_of",
    "phase_splits",
    "scenarios",
]

HOUR_MS = 3_600_000
SPAN_MS = 3 * DAY_MS  # received times span about three days, so every 24 h rule can trigger
DEFAULT_BASE_MS = 1_700_006_400_000  # 2023-11-15 00:00 UTC (day-aligned: scenarios shift by whole days)
BIG_BYTES = 999_000  # just under librdkafka's default message.max.bytes: any producer can send it

CUSTOMERS: tuple[Any, ...] = ("cus_a", "cus_b", "cus_c", 42)
BAD_CUSTOMERS: tuple[Any, ...] = (MISSING, "", True, None)
VALUES: tuple[Any, ...] = (
    1,
    5,
    0,
    -3,
    100,
    "25",
    "-3",
    "1.0",
    "+7",
    " 12 ",
    "1e3",
    25.0,
    10**20,
    "\t5\n",
    "0012",
    "-0",
)
VALUES_EDGE: tuple[Any, ...] = (123456789012345, 1234567890123456, "1234567890123456", 123456789012345 * 10**9)
BAD_VALUES: tuple[Any, ...] = ("1.5", "abc", "", True, None, [1], 1.5, MISSING)
DUP_DELTAS = (0, 1, HOUR_MS, DAY_MS - 1, DAY_MS, DAY_MS + 1, 2 * DAY_MS)
CANCEL_DELTAS = (-DAY_MS - 1, -DAY_MS, -HOUR_MS, -1, 0, 1, HOUR_MS, DAY_MS, DAY_MS + 1)
TS_DELTAS = (0, -35 * 86_400, -35 * 86_400 - 1, 299, 300, 301, -3600, -86_400, -2 * 86_400, 10**12, -(10**10))
GARBAGE_EVENTS: tuple[bytes, ...] = (
    b"",
    b"not json",
    b"\xff\xfe\xfa",
    b"{",
    b"[1, 2]",
    b'"text"',
    b"null",
    b"123",
    b'{"event_name": 5, "payload": {}}',
    b'{"event_name": "", "payload": {"stripe_customer_id": "cus_a"}}',
    b'{"event_name": "ev0", "payload": "x"}',
    b'{"event_name": "ev0", "payload": [], "identifier": "g"}',
    b'{"event_name": "ev0", "payload": {"stripe_customer_id": "cus_a", "value": 1}, "identifier": 7}',
    b'{"event_name": "ev0", "payload": {"stripe_customer_id": "cus_a", "value": 1}, "timestamp": "1"}',
    b'{"event_name": "ev0", "payload": {"stripe_customer_id": "cus_a", "value": 1}, "timestamp": true}',
    b'{"event_name": "ev0", "payload": {"stripe_customer_id": "cus_a", "value": 1}, "timestamp": 1.5}',
)
GARBAGE_ADJUSTMENTS: tuple[bytes, ...] = (
    b"nope",
    b"[]",
    b'{"event_name": "ev0", "type": "cancel"}',
    b'{"event_name": "ev0", "type": "cancel", "cancel": {"identifier": ""}}',
    b'{"event_name": "ev0", "type": "delete", "cancel": {"identifier": "cus_a-0"}}',
    b'{"event_name": 3, "type": "cancel", "cancel": {"identifier": "cus_a-0"}}',
)


@dataclass(frozen=True)
class Scenario:
    meters: list[MeterVersion]
    records: list[Rec]
    partitions: int
    base_ms: int

    def __repr__(self) -> str:  # hypothesis prints this for a failing example: keep it readable
        lines = [f"Scenario(base_ms={self.base_ms}, partitions={self.partitions})"]
        for v in self.meters:
            m = v.meter
            lines.append(
                f"  meter @{v.effective_ms - self.base_ms:+} {m['id']} {m['event_name']} "
                f"{m['default_aggregation']['formula']}/{m['event_time_window']} {m['status']} "
                f"customer={m['customer_mapping']['event_payload_key']} value={m['value_settings']['event_payload_key']}"
            )
        for r in sorted(self.records, key=lambda r: (r.topic, r.partition, r.offset)):
            text = r.value[:200].decode("utf-8", "replace") + ("..." if len(r.value) > 200 else "")
            lines.append(f"  {r.topic}/{r.partition}/{r.offset} @{r.received_ms - self.base_ms:+} {text}")
        return "\n".join(lines)

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        """Hypothesis prints failing examples with this (its pretty printer would spell out every field,
        including a 1 MB record value)."""
        printer.text(repr(self))


def partition_of(key: str, partitions: int) -> int:
    """A stable key -> partition map (the test produces with explicit partitions)."""
    return zlib.crc32(key.encode()) % partitions


@st.composite
def _meters(draw: st.DrawFn, base_ms: int) -> list[MeterVersion]:
    versions: list[MeterVersion] = []
    for i in range(draw(st.integers(1, 4))):
        shape = {
            "meter_id": f"mtr_{i}",
            "event_name": f"ev{i}",
            "formula": draw(st.sampled_from(["sum", "count", "last"])),
            "window": draw(st.sampled_from([None, "hour", "day"])),
            "customer_key": draw(st.sampled_from(["stripe_customer_id", "stripe_customer_id", "tenant"])),
            "value_key": draw(st.sampled_from(["value", "value", "units"])),
        }
        created = base_ms - HOUR_MS  # usually before every record; sometimes mid-stream (earlier events: no_meter)
        if draw(st.integers(0, 4)) == 0:
            created = draw(st.integers(base_ms, base_ms + SPAN_MS))
        lifecycle = draw(st.sampled_from(["active"] * 5 + ["inactive", "deactivated", "reactivated"]))
        versions.append(meter_version(created, status="inactive" if lifecycle == "inactive" else "active", **shape))
        if lifecycle in ("deactivated", "reactivated"):
            off = draw(st.integers(created, base_ms + SPAN_MS))
            versions.append(meter_version(off, status="inactive", **shape))
            if lifecycle == "reactivated":
                versions.append(meter_version(draw(st.integers(off, base_ms + SPAN_MS)), **shape))
    return sorted(versions, key=lambda v: v.effective_ms)  # the meters topic's order (stable per meter)


def _dump(obj: dict[str, Any]) -> bytes:
    # Raw UTF-8 (not \u escapes), as most producers write it: identifier lengths count characters, not bytes.
    return json.dumps({k: v for k, v in obj.items() if v is not MISSING}, ensure_ascii=False).encode()


@st.composite
def scenarios(
    draw: st.DrawFn,
    *,
    base_ms: int = DEFAULT_BASE_MS,
    partitions: int = 3,
    max_events: int = 30,
    max_cancels: int = 8,
    allow_big: bool = True,
) -> Scenario:
    """A random scenario; see the module docstring for the shape of what it produces."""
    meters = _meters(base_ms)
    versions = draw(meters)
    shapes = {v.meter["event_name"]: v.meter for v in versions}
    names = [*shapes, "ev_unknown"]
    specs: list[tuple[str, int, int, bytes]] = []  # (topic, partition, received_ms, value)
    # (event_name, customer, identifier, received_ms, timestamp) of good-looking events
    made: list[tuple[str, Any, Any, int, Any]] = []

    def received() -> int:
        how = draw(st.integers(0, 5))
        if len(made) > 0 and how <= 2:  # near an earlier event: 24 h edges
            return made[draw(st.integers(0, len(made) - 1))][3] + draw(st.sampled_from(DUP_DELTAS))
        if how == 3:  # exactly at (or 1 ms before) a meter's creation / deactivation / reactivation
            return versions[draw(st.integers(0, len(versions) - 1))].effective_ms - draw(st.integers(0, 1))
        return draw(st.integers(base_ms, base_ms + SPAN_MS))

    for _ in range(draw(st.integers(0, max_events))):
        roll = draw(st.integers(0, 7)) if made else 7
        sibling_ts: Any = None
        if roll <= 1:  # the same (event_name, customer, identifier) again: a duplicate, or a reuse after 24 h
            event_name, customer, identifier, before, _ts = made[draw(st.integers(0, len(made) - 1))]
            r = before + draw(st.sampled_from(DUP_DELTAS))
        elif roll <= 3:  # same customer and meter, new identifier, close in time: overwrites a window's survivor
            event_name, customer, _ident, before, sibling_ts = made[draw(st.integers(0, len(made) - 1))]
            identifier = f"{customer}-{draw(st.integers(0, 5))}"
            r = before + draw(st.sampled_from((0, 1, 1000, 60_000, HOUR_MS)))
        else:
            event_name = draw(st.sampled_from(names if draw(st.integers(0, 7)) == 0 else names[:-1]))
            customer = draw(st.sampled_from(CUSTOMERS if draw(st.integers(0, 5)) else BAD_CUSTOMERS))
            kind = draw(st.integers(0, 9))
            if kind < 7:
                identifier = f"{customer}-{draw(st.integers(0, 3))}"  # a small pool per customer: duplicates
            elif kind < 9:
                identifier = draw(st.sampled_from([MISSING, MISSING, None]))  # JSON null counts as absent
            else:  # length is counted in characters: 100 two-byte characters are fine, 101 are not
                prefix = f"{customer}-"
                sized = [prefix + c * (n - len(prefix)) for c in ("x", "é") for n in (100, 101)]
                identifier = draw(st.sampled_from(["", 7, *sized]))
            r = received()
        shape = shapes.get(event_name, {})
        ckey = (shape.get("customer_mapping") or {}).get("event_payload_key", "stripe_customer_id")
        vkey = (shape.get("value_settings") or {}).get("event_payload_key", "value")
        pool = VALUES + VALUES_EDGE + BAD_VALUES if draw(st.integers(0, 3)) == 0 else VALUES
        value = draw(st.sampled_from(pool))
        r_s = r // 1000
        timestamp: Any = MISSING
        near = draw(st.integers(0, 4))  # missing, an edge of the 35 d / 5 min window, an hour or day boundary
        if near == 0:
            timestamp = draw(st.sampled_from([MISSING, MISSING, None]))  # JSON null counts as absent
        elif near == 4 and sibling_ts is not None:  # the sibling's own time, or just after it
            timestamp = (r_s if sibling_ts is MISSING else sibling_ts) + draw(st.sampled_from((0, 1, 60)))
        elif near == 1:
            timestamp = r_s + draw(st.sampled_from(TS_DELTAS))
        elif near == 2:
            timestamp = r_s - r_s % 3600 + draw(st.sampled_from((-3600, -1, 0, 1, 3599)))
        elif near == 3:
            timestamp = r_s - r_s % 86_400 + draw(st.sampled_from((-86_400, -1, 0)))
        body = {"event_name": event_name, "payload": {ckey: customer, vkey: value}, "identifier": identifier}
        body["payload"] = {k: v for k, v in body["payload"].items() if v is not MISSING}
        body["timestamp"] = timestamp
        valid_customer = isinstance(customer, str | int) and not isinstance(customer, bool) and customer != ""
        partition = partition_of(str(customer), partitions) if valid_customer else draw(st.integers(0, partitions - 1))
        specs.append((EVENTS, partition, r, _dump(body)))
        if valid_customer and isinstance(identifier, str) and identifier:
            made.append((event_name, customer, identifier, r, MISSING if timestamp is None else timestamp))

    for _ in range(draw(st.integers(0, 3))):
        garbage = draw(st.sampled_from(GARBAGE_EVENTS))
        specs.append((EVENTS, draw(st.integers(0, partitions - 1)), received(), garbage))
    if allow_big and draw(st.integers(0, 15)) == 15:
        name = names[0]
        payload = {"stripe_customer_id": "cus_a", "tenant": "cus_a", "value": 1, "units": 1, "blob": ""}
        body = {"event_name": name, "payload": payload, "identifier": "big"}
        payload["blob"] = "x" * (BIG_BYTES - len(_dump(body)))
        specs.append((EVENTS, partition_of("cus_a", partitions), received(), _dump(body)))

    for _ in range(draw(st.integers(0, max_cancels))):
        if made and draw(st.integers(0, 3)) > 0:
            event_name, _customer, identifier, r, _ts = made[draw(st.integers(0, len(made) - 1))]
            r += draw(st.sampled_from(CANCEL_DELTAS))
        else:
            event_name = draw(st.sampled_from(names))
            identifier = draw(st.sampled_from(["nope-1", "cus_a-0", "cus_b-1", "42-2"]))
            r = received()
        body = {"event_name": event_name, "type": "cancel", "cancel": {"identifier": identifier}}
        specs.append((ADJUSTMENTS, partition_of(identifier, partitions), r, _dump(body)))
    for _ in range(draw(st.integers(0, 1))):
        garbage = draw(st.sampled_from(GARBAGE_ADJUSTMENTS))
        specs.append((ADJUSTMENTS, draw(st.integers(0, partitions - 1)), received(), garbage))

    return Scenario(versions, _number(specs, base_ms), partitions, base_ms)


def _number(specs: list[tuple[str, int, int, bytes]], base_ms: int) -> list[Rec]:
    """Append order per partition = received order (stable), offsets 0, 1, 2, ... per (topic, partition)."""
    low, high = base_ms, base_ms + SPAN_MS + 2 * DAY_MS
    clamped = [(t, p, min(max(r, low), high), v) for t, p, r, v in specs]
    records: list[Rec] = []
    offsets: dict[tuple[str, int], int] = {}
    for topic, partition, r, value in sorted(clamped, key=lambda s: (s[0], s[1], s[2])):
        offset = offsets.get((topic, partition), 0)
        offsets[(topic, partition)] = offset + 1
        records.append(Rec(topic, partition, offset, r, value))
    return records


@st.composite
def interleavings(draw: st.DrawFn, records: Sequence[Rec]) -> list[Rec]:
    """Any processing order that keeps each partition's offset order (partitions and topics interleave freely)."""
    queues: dict[tuple[str, int], list[Rec]] = {}
    for rec in sorted(records, key=lambda r: r.offset):
        queues.setdefault((rec.topic, rec.partition), []).append(rec)
    keys = sorted(queues)
    order: list[Rec] = []
    while keys:
        key = keys[draw(st.integers(0, len(keys) - 1))]
        order.append(queues[key].pop(0))
        if not queues[key]:
            keys.remove(key)
    return order


@st.composite
def phase_splits(draw: st.DrawFn, records: Sequence[Rec]) -> list[list[Rec]]:
    """Split records into one or two phases, each partition's first phase a prefix of it: a processor that
    drains phase 1 before it sees phase 2 is forced into one particular interleaving (all events before all
    cancellations, the reverse, or an arbitrary cut per partition)."""
    plan = draw(st.sampled_from(["one", "events_first", "adjustments_first", "cut"]))
    if plan == "one" or not records:
        return [list(records)]
    if plan == "events_first":
        first = [r for r in records if r.topic == EVENTS]
    elif plan == "adjustments_first":
        first = [r for r in records if r.topic == ADJUSTMENTS]
    else:
        sizes: dict[tuple[str, int], int] = {}
        for r in records:
            sizes[(r.topic, r.partition)] = max(sizes.get((r.topic, r.partition), 0), r.offset + 1)
        cuts = {key: draw(st.integers(0, size)) for key, size in sorted(sizes.items())}
        first = [r for r in records if r.offset < cuts[(r.topic, r.partition)]]
    chosen = {r.key for r in first}
    return [first, [r for r in records if r.key not in chosen]]
