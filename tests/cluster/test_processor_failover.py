"""The real processor (``meterstream processor``, a subprocess reading Kafka) keeps running while an operator
moves hot slots between primaries and fails a primary over to its replica; at the end Redis holds exactly
the aggregates of a clean run over the same topics (tests/pipeline.py reference_state), and every accepted
record reached the accepted topic once."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis
from redis.crc import key_slot

from processor.config import Settings
from processor.embedded import EmbeddedRedisCluster
from processor.state.connect import SyncRedis
from processor.state.keys import Keys
from tests.helpers import child_env
from tests.pipeline import (
    Workload,
    make_workload,
    put_meters,
    put_records,
    read_all,
    reference_state,
    snapshot_diff,
    stored_progress,
    usage_snapshot,
)
from topics import Topic

pytestmark = [pytest.mark.integration]

PARTITIONS = 3
CHUNKS = 4


@pytest.fixture
def processor_proc(cluster_settings: Settings) -> Iterator[subprocess.Popen[bytes]]:
    env = child_env(cluster_settings)
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "processor"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    yield proc
    if proc.poll() is None:
        proc.kill()
    proc.wait(10)
    if proc.stderr:
        proc.stderr.close()


def _wait_progress(client: SyncRedis, settings: Settings, proc: subprocess.Popen[bytes], above: int, total: int) -> int:
    deadline = time.monotonic() + 180
    while True:
        n = stored_progress(client, settings)
        if n > above or n >= total:
            return n
        if proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            pytest.fail(f"the processor exited ({proc.returncode}):\n{err[-3000:]}")
        assert time.monotonic() < deadline, f"no progress beyond {n} of {total}"
        time.sleep(0.05)


def _put_chunk(settings: Settings, w: Workload, k: int) -> int:
    """Chunk ``k`` of ``CHUNKS`` of the events and cancellations (each list keeps its received-time order)."""

    def chunk(items: list[tuple[str, bytes, int]]) -> list[tuple[str, bytes, int]]:
        size = -(-len(items) // CHUNKS)
        return items[k * size : (k + 1) * size]

    events, cancels = chunk(w.events), chunk(w.cancels)
    put_records(settings, events, cancels)
    return len(events) + len(cancels)


def _pair_slots(w: Workload) -> list[int]:
    """The slots of every (meter, customer) pair's keys."""
    return sorted({key_slot(Keys("x").usage_hour(m.id, key).encode()) for key, _, _ in w.events for m in w.meters})


def _busiest(cluster: EmbeddedRedisCluster, slots: list[int], exclude: set[int]) -> int:
    """The slot among ``slots`` that holds the most keys right now (the one the processor writes most)."""
    counts = {}
    for slot in slots:
        if slot in exclude:
            continue
        c = redis.Redis(port=cluster.owner(slot))
        try:
            counts[slot] = int(c.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
        finally:
            c.close()
    return max(counts, key=lambda s: counts[s])


def test_processor_follows_slot_moves_and_a_failover_without_losing_updates(
    cluster: EmbeddedRedisCluster,
    cluster_settings: Settings,
    cluster_client: SyncRedis,
    processor_proc: subprocess.Popen[bytes],
) -> None:
    settings = cluster_settings
    w = make_workload(24_000, seed=5, customers=30)
    put_meters(settings, w.meters, effective_ms=w.events[0][2] - 60_000)
    total = 0
    pairs = _pair_slots(w)
    progress_slot = key_slot(Keys("x").progress(settings.processor_group).encode())
    changed: set[int] = set()
    for k in range(CHUNKS):
        total += _put_chunk(settings, w, k)
        seen = _wait_progress(
            cluster_client, settings, processor_proc, stored_progress(cluster_client, settings), total
        )
        assert seen < total, "the processor finished the chunk before the topology changed"
        # the topology changes while the rest of the chunk is being processed
        slot = progress_slot if k == 2 else _busiest(cluster, pairs, changed)
        changed.add(slot)
        if k < 3:  # move a busy customer slot twice, then the slot of the stored progress
            owner = cluster.owner(slot)
            target = next(p for p, n in sorted(cluster.topology().items()) if n["primary"] and p != owner)
            moved = cluster.migrate_slot(slot, target, batch=5, between=lambda: time.sleep(0.01))
            assert moved > 0 and cluster.owner(slot) == target
        else:  # the primary of a busy slot hands over to its replica
            topo = cluster.topology()
            owner = cluster.owner(slot)
            replica = next(p for p, n in topo.items() if n["primary_id"] == topo[owner]["id"])
            cluster.failover(replica)
            assert cluster.owner(slot) == replica
    _wait_progress(cluster_client, settings, processor_proc, total - 1, total)
    assert processor_proc.poll() is None, "the processor died"
    processor_proc.send_signal(signal.SIGTERM)
    assert processor_proc.wait(30) == 0

    ref_prefix = settings.redis_prefix + "ref"
    expected_accepted = reference_state(settings, ref_prefix, PARTITIONS)
    got = usage_snapshot(cluster_client, settings.redis_prefix)
    diff = snapshot_diff(got, usage_snapshot(cluster_client, ref_prefix))
    assert len(got) > 100
    assert not diff, "\n".join(diff)
    accepted = [json.loads(m.value()) for m in read_all(settings, [Topic.ACCEPTED], PARTITIONS)]
    assert {(b["kind"], b["identifier"]) for b in accepted} == expected_accepted
