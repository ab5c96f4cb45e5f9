"""The processor's state steps on Redis Cluster follow MOVED and ASK redirects (slots moved by an operator,
including a batch that runs while a slot is half moved), reload their scripts where a node has none
(NOSCRIPT after ``SCRIPT FLUSH`` or on a promoted replica), and follow a failover — without losing or
doubling an update: the end state equals a run of the same records with no topology change.

The engine runs in-process on records built in memory (no Kafka): this is the Redis edge alone, with the
topology changed at exact points between and inside batches. test_processor_failover.py does the same with
the real processor reading Kafka.
"""

from __future__ import annotations

import threading
import time
import zlib
from collections.abc import Callable

import pytest
from redis.crc import key_slot

from processor.aggregator.engine import Engine, RawRecord
from processor.embedded import EmbeddedRedisCluster
from processor.meters.book import MeterBook
from processor.state.connect import SyncRedis, sync_redis_url
from processor.state.keys import Keys
from processor.state.store import StateStore
from tests.pipeline import Workload, make_workload, snapshot_diff, usage_snapshot

pytestmark = [pytest.mark.integration]

BATCH = 250


def _records(w: Workload) -> list[RawRecord]:
    """The workload as consumed records: partition by key (as Kafka's partitioner would keep a key together),
    offsets per partition, events and cancellations interleaved by received time."""
    merged = sorted(
        [("meter-events", k, v, ms) for k, v, ms in w.events]
        + [("meter-event-adjustments", k, v, ms) for k, v, ms in w.cancels],
        key=lambda r: r[3],
    )
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for topic, key, value, ms in merged:
        part = zlib.crc32(key.encode()) % 3
        off = offsets.get((topic, part), 0)
        offsets[(topic, part)] = off + 1
        out.append(RawRecord(topic, part, off, ms, value))
    return out


def _engine(url: str, prefix: str, w: Workload) -> Engine:
    book = MeterBook()
    for m in w.meters:
        book.add_record(0, m.to_json().encode())
    return Engine(StateStore(sync_redis_url(url), prefix), book)


def _hot_slots(w: Workload, n: int) -> list[int]:
    """Slots of the busiest (meter, customer) pairs: the ones every batch writes."""
    counts: dict[int, int] = {}
    for key, _, _ in w.events:
        for m in w.meters:
            slot = key_slot(Keys("x").usage_hour(m.id, key).encode())
            counts[slot] = counts.get(slot, 0) + 1
    return sorted(counts, key=lambda s: -counts[s])[:n]


def _other_primary(cluster: EmbeddedRedisCluster, slot: int) -> int:
    owner = cluster.owner(slot)
    return next(p for p, n in sorted(cluster.topology().items()) if n["primary"] and p != owner)


def _flush_scripts(cluster: EmbeddedRedisCluster) -> None:
    for port in cluster.ports:
        c = sync_redis_url(f"redis://127.0.0.1:{port}/0", cluster=False)
        try:
            c.script_flush()
        finally:
            c.close()


def test_state_steps_follow_moves_half_moved_slots_script_flushes_and_a_failover(
    cluster: EmbeddedRedisCluster, cluster_client: SyncRedis, unique: str
) -> None:
    w = make_workload(6000, seed=21, customers=20)
    records = _records(w)
    batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    prefix, ref_prefix = f"rd{unique}", f"rdref{unique}"
    engine = _engine(cluster.url, prefix, w)
    hot = _hot_slots(w, 4)
    it = iter(batches)

    def step() -> None:
        batch = next(it, None)
        if batch is not None:
            engine.process(batch, now_ms=batch[-1].received_ms)

    changes: list[Callable[[], None]] = [
        # a plain move between batches: the client's slot map is stale, the next batch meets MOVED
        lambda: _moved(cluster, hot[0]),
        # a batch runs while the slot is half moved (some keys on each side): ASK and TRYAGAIN
        lambda: _moved(cluster, hot[1], during=step),
        # no node knows the scripts any more: NOSCRIPT in the per-node pipelines and on single calls
        lambda: _flush_scripts(cluster),
        # the primary of the hottest slot hands over to its replica, which never loaded the scripts
        lambda: _failover_owner(cluster, hot[2]),
        lambda: _moved(cluster, hot[3], during=step),
    ]
    for change in changes:
        step()
        step()
        change()
    for batch in it:
        engine.process(batch, now_ms=batch[-1].received_ms)

    ref = _engine(cluster.url, ref_prefix, w)
    for batch in batches:
        ref.process(batch, now_ms=batch[-1].received_ms)
    got, want = usage_snapshot(cluster_client, prefix), usage_snapshot(cluster_client, ref_prefix)
    assert len(want) > 50, "the workload must touch many keys"
    diff = snapshot_diff(got, want)
    assert not diff, "\n".join(diff)


def _moved(cluster: EmbeddedRedisCluster, slot: int, during: Callable[[], None] | None = None) -> None:
    """Move ``slot`` to another primary; ``during`` runs in a thread once the first keys moved, while the
    rest of the slot keeps moving (so its multi-key calls meet ASK and TRYAGAIN until the move ends)."""
    target = _other_primary(cluster, slot)
    threads: list[threading.Thread] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            assert during is not None
            during()
        except BaseException as exc:  # surfaced in the test thread
            errors.append(exc)

    def between() -> None:
        if during is not None and not threads:
            threads.append(threading.Thread(target=run))
            threads[0].start()
        time.sleep(0.02)  # an operator's migration takes time: let the batch meet the half-moved slot

    moved = cluster.migrate_slot(slot, target, batch=2, between=between)
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert moved > 2, f"slot {slot} held only {moved} key(s): not a live slot"
    assert cluster.owner(slot) == target
    assert during is None or threads, "the batch did not run mid-move"


def _failover_owner(cluster: EmbeddedRedisCluster, slot: int) -> None:
    topo = cluster.topology()
    owner = cluster.owner(slot)
    replica = next(p for p, n in topo.items() if n["primary_id"] == topo[owner]["id"])
    cluster.failover(replica)
    assert cluster.owner(slot) == replica
