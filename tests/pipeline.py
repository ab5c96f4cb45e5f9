"""Helpers that put records on the real topics and read the real Redis state back (no mocks)."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING, Message, TopicPartition

from processor.aggregator.runner import Processor
from processor.config import Settings
from processor.kafka import AckedProducer, new_consumer
from processor.meters.model import Meter
from processor.state.keys import Keys
from topics import Topic, topic_name


def producer(settings: Settings) -> AckedProducer:
    """The test producer: the layer's own, so tests write records the way the components do (a full local
    queue is waited out, never a ``BufferError``)."""
    return AckedProducer(settings)


def run_processor(settings: Settings, idle: float = 1.0, timeout: float = 120.0) -> Processor:
    """One real processor, until its input has been quiet for ``idle`` seconds; then it leaves the group
    (so the next one is assigned at once). Returns it, for its stats."""
    proc = Processor(settings)
    try:
        proc.drain(idle=idle, timeout=timeout)
    finally:
        proc.close()
    return proc


def put_meters(settings: Settings, meters: Iterable[Meter], effective_ms: int) -> None:
    p = producer(settings)
    for m in meters:
        p.produce(topic_name(Topic.METERS, settings.topic_prefix), key=m.id, value=m.to_json(), timestamp=effective_ms)
    assert p.flush(30) == 0


def event_value(
    name: str,
    customer: str,
    value: Any,
    identifier: str | None = None,
    ts: int | None = None,
    customer_key: str = "stripe_customer_id",
) -> bytes:
    body: dict[str, Any] = {"event_name": name, "payload": {customer_key: customer, "value": value}}
    if identifier is not None:
        body["identifier"] = identifier
    if ts is not None:
        body["timestamp"] = ts
    return json.dumps(body).encode()


def cancel_value(name: str, identifier: str) -> bytes:
    return json.dumps({"event_name": name, "type": "cancel", "cancel": {"identifier": identifier}}).encode()


def stored_progress(client: Any, settings: Settings) -> int:
    """Records the processor group has stored progress past (sum of next offsets over partitions): how far
    the group got, as it survives a crash. ``client``: any Redis client, single-node or cluster."""
    raw = client.hgetall(Keys(settings.redis_prefix).progress(settings.processor_group))
    return sum(int(v) for v in raw.values())


def usage_snapshot(client: redis.Redis, prefix: str) -> dict[str, dict[str, str]]:
    """Every public aggregate under ``prefix``: usage hashes and customers indexes (SCAN, never KEYS)."""
    snap: dict[str, dict[str, str]] = {}
    for key in client.scan_iter(match=f"{prefix}:usage:*", count=1000):
        k = key.decode() if isinstance(key, bytes) else key
        raw = client.hgetall(k)
        snap[k[len(prefix) :]] = {
            (f.decode() if isinstance(f, bytes) else f): (v.decode() if isinstance(v, bytes) else v)
            for f, v in raw.items()
        }
    for key in client.scan_iter(match=f"{prefix}:customers:*", count=1000):
        k = key.decode() if isinstance(key, bytes) else key
        snap[k[len(prefix) :]] = {
            (m.decode() if isinstance(m, bytes) else m): str(int(s))
            for m, s in client.zrange(k, 0, -1, withscores=True)
        }
    return snap


@dataclass
class Workload:
    """A large mixed stream: several meters (raw sum/count/last, pre-aggregated), duplicates, cancellations
    before and after their events, invalid values, unknown meters, garbage. Deterministic for a seed."""

    meters: list[Meter]
    events: list[tuple[str, bytes, int]]  # (key, value, received_ms)
    cancels: list[tuple[str, bytes, int]]


def make_workload(n: int, seed: int = 7, customers: int = 50, now_ms: int | None = None) -> Workload:
    rnd = random.Random(seed)
    now_ms = now_ms or int(time.time() * 1000)
    meters = [
        Meter("mtr_wsum", "Sum", "w_sum", "sum", created=1),
        Meter("mtr_wcnt", "Count", "w_cnt", "count", created=1),
        Meter("mtr_wlast", "Last", "w_last", "last", created=1),
        Meter("mtr_wpreh", "Pre hour", "w_preh", "sum", "hour", created=1),
        Meter("mtr_wpred", "Pre day last", "w_pred", "last", "day", created=1),
    ]
    names = [m.event_name for m in meters]
    events: list[tuple[str, bytes, int]] = []
    cancels: list[tuple[str, bytes, int]] = []
    start = now_ms - 2 * 86_400_000
    step = max(1, (2 * 86_400_000) // n)
    idents: list[tuple[str, str]] = []
    for i in range(n):
        r_ms = start + i * step
        cust = f"cus_{rnd.randrange(customers)}"
        name = rnd.choice(names)
        roll = rnd.random()
        ident = f"e{i}"
        ts = r_ms // 1000 - rnd.randrange(0, 6 * 3600)
        if roll < 0.03 and idents:
            # a duplicate of a recent event of some customer: reuse its key so it lands on its partition
            dn, di = rnd.choice(idents[-200:])
            dcust = di.split("|")[1]
            events.append((dcust, event_value(dn, dcust, rnd.randrange(1, 100), di.split("|")[0], ts), r_ms))
            continue
        if roll < 0.04:
            value: Any = rnd.choice(["1.5", "abc", True, None])
        elif roll < 0.05:
            value = rnd.choice(["-17", "25.0", str(10**18), 0])
        else:
            value = rnd.randrange(-5, 1000)
        if roll > 0.995:
            events.append((cust, b"\x00garbage", r_ms))
            continue
        if 0.99 < roll <= 0.995:
            name = "w_unknown"
        events.append((cust, event_value(name, cust, value, ident, ts), r_ms))
        idents.append((name, f"{ident}|{cust}"))
        if rnd.random() < 0.03:
            offset_ms = rnd.randrange(-3_600_000, 30 * 3_600_000)  # some before the event, some too late
            cancels.append((ident, cancel_value(name, ident), max(start, r_ms + offset_ms)))
    cancels.sort(key=lambda c: c[2])
    return Workload(meters, events, cancels)


def put_workload(settings: Settings, w: Workload, partitions: int) -> None:
    put_meters(settings, w.meters, effective_ms=w.events[0][2] - 60_000 if w.events else 0)
    put_records(settings, w.events, w.cancels)


def put_records(
    settings: Settings,
    events: Iterable[tuple[str, bytes, int | None]],
    cancels: Iterable[tuple[str, bytes, int | None]] = (),
) -> None:
    """``(key, value, received_ms)`` records onto ``meter-events`` and ``meter-event-adjustments`` (in that
    order; ``received_ms`` None: the broker's clock), returning once the broker acknowledged every one."""
    p = producer(settings)
    for base, records in ((Topic.EVENTS, events), (Topic.ADJUSTMENTS, cancels)):
        topic = topic_name(base, settings.topic_prefix)
        p.produce_many((topic, value, key, r_ms) for key, value, r_ms in records)
    assert p.flush(120) == 0


def read_all(settings: Settings, bases: Iterable[str], partitions: int, idle: float = 3.0) -> list[Message]:
    """Every record of the given topics (assigned directly, from the beginning) until ``idle`` s of quiet."""
    c = new_consumer(settings, f"read-all-{random.random()}")
    c.assign(
        [
            TopicPartition(topic_name(b, settings.topic_prefix), p, OFFSET_BEGINNING)
            for b in bases
            for p in range(partitions)
        ]
    )
    out: list[Message] = []
    last = time.monotonic()
    while time.monotonic() - last < idle:
        for msg in c.consume(5000, 0.3):
            if msg.error() is None:
                out.append(msg)
                last = time.monotonic()
    c.close()
    return out


def reference_state(settings: Settings, redis_prefix: str, partitions: int) -> set[tuple[str, str]]:
    """Run the engine over every input record once, without Kafka output and without crashes, into
    ``redis_prefix``: the state a perfect run must reach. Returns the (kind, identifier) pairs it accepted."""
    from processor.aggregator.engine import Engine, RawRecord
    from processor.aggregator.fetch import EventFetcher
    from processor.meters.log import load_meters
    from processor.state.store import StateStore, connect_redis

    book, _ = load_meters(settings)
    inputs = [Topic.EVENTS, Topic.ADJUSTMENTS]
    base = {topic_name(b, settings.topic_prefix): b.value for b in inputs}
    msgs = read_all(settings, inputs, partitions)
    engine = Engine(StateStore(connect_redis(settings.require_redis_url()), redis_prefix), book, EventFetcher(settings))
    records = [RawRecord(base[m.topic()], m.partition(), m.offset(), m.timestamp()[1], m.value()) for m in msgs]
    accepted: set[tuple[str, str]] = set()
    for i in range(0, len(records), 5000):
        out = engine.process(records[i : i + 5000])
        for _, value in out.accepted:
            body = json.loads(value)
            accepted.add((body["kind"], body["identifier"]))
    return accepted


def snapshot_diff(a: dict[str, dict[str, str]], b: dict[str, dict[str, str]], limit: int = 20) -> list[str]:
    """Human-readable differences between two usage snapshots (empty when equal)."""
    out = []
    for key in sorted(set(a) | set(b)):
        fa, fb = a.get(key, {}), b.get(key, {})
        for field in sorted(set(fa) | set(fb)):
            if fa.get(field) != fb.get(field):
                out.append(f"{key} {field}: {fa.get(field)} != {fb.get(field)}")
    return out[:limit]
