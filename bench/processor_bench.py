"""Processor throughput, beside the raw confluent-kafka ceiling, on the embedded broker and Valkey.

    python -m bench processor [--events N] [--processors K] [--durable]

``--durable`` runs it on the stack of ``meterstream up --data`` (Tansu on the local object store, Valkey
with AOF) instead of the memory-only one.

1. produce N meter events (1,000 customers, unique identifiers, a raw sum meter and a pre-aggregated one);
2. ceiling: a plain confluent-kafka consumer that reads and json-decodes all N (nothing else);
3. the processor, in a child process: from start until every record is applied to Redis and its accepted
   record acknowledged by the broker; its peak RSS;
   With ``--processors K`` (K > 1) K child processes join one consumer group at once; the rate is N over
   the time from the first record any of them processed to the moment all N were processed (group joins
   and the rebalances while members join are inside that time: what a scale-out really gets);
4. Redis memory per remembered identifier: ``used_memory`` growth during step 3 divided by N (this
   includes the aggregates and indexes, so it is an upper bound), and ``MEMORY USAGE`` of claim keys.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import os
import platform
import resource
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from processor.config import Settings, load_settings
from processor.durable import DurableKafka, DurableState, durable_redis
from processor.embedded import EmbeddedKafka, EmbeddedRedis
from processor.kafka.admin import ensure_topics
from processor.meters.model import Meter

PARTITIONS = 6


def _produce(settings: Settings, n: int) -> None:
    p = Producer(
        settings.kafka_config(
            **{"linger.ms": 20, "queue.buffering.max.messages": 2_000_000, "batch.num.messages": 10_000}
        )
    )
    now_ms = int(time.time() * 1000)
    meters = [
        Meter("mtr_bsum", "Bench sum", "bench_sum", "sum", created=1),
        Meter("mtr_bpre", "Bench pre", "bench_pre", "sum", "hour", created=1),
    ]
    for m in meters:
        p.produce(settings.topic_prefix + "meters", key=m.id, value=m.to_json(), timestamp=now_ms - 3_600_000)
    topic = settings.topic_prefix + "meter-events"
    for i in range(n):
        cust = f"cus_{i % 1000}"
        name = "bench_pre" if i % 10 == 0 else "bench_sum"
        value = json.dumps(
            {
                "event_name": name,
                "payload": {"stripe_customer_id": cust, "value": i % 97},
                "identifier": f"{uuid.UUID(int=i)}",
                "timestamp": now_ms // 1000 - (i % 7200),
            }
        )
        while True:
            try:
                p.produce(topic, key=cust, value=value, timestamp=now_ms)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    p.flush(120)


def _ceiling(settings: Settings, n: int) -> float:
    c = Consumer(settings.kafka_config(**{"group.id": f"ceiling-{uuid.uuid4()}", "enable.auto.commit": False}))
    c.assign([TopicPartition(settings.topic_prefix + "meter-events", p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got = 0
    t0 = None
    while got < n:
        msgs = c.consume(10_000, 1.0)
        if msgs and t0 is None:
            t0 = time.perf_counter()
        for m in msgs:
            if m.error() is None:
                json.loads(m.value())
                got += 1
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    c.close()
    return n / elapsed


def _run_processor(env: dict[str, str], n: int, q: Any) -> None:
    from processor.aggregator.runner import Processor

    settings = load_settings(env)
    proc = Processor(settings)
    proc._setup()
    # wait for the assignment before starting the clock: group joins are not throughput
    while not proc._assigned:
        proc.poll_batch(0.1)
    t0 = time.perf_counter()
    done = proc.stats["records"]
    while done < n:
        proc.poll_batch(0.5)
        done = proc.stats["records"]
    elapsed = time.perf_counter() - t0
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    proc.close()
    q.put({"elapsed": elapsed, "records": done, "peak_rss_mb": round(rss_kb / 1024, 1), "stats": dict(proc.stats)})


def _run_member(env: dict[str, str], n: int, done: Any, q: Any) -> None:
    """One of K group members: process until the group as a whole has processed all ``n``."""
    from processor.aggregator.runner import Processor

    proc = Processor(load_settings(env))
    first: float | None = None
    last = 0.0
    while done.value < n:
        before = proc.stats["records"]
        proc.poll_batch(0.2)
        got = proc.stats["records"] - before
        if got:
            now = time.time()
            first = first if first is not None else now
            last = now
            with done.get_lock():
                done.value += got
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    proc.close()
    q.put({"first": first, "last": last, "records": proc.stats["records"], "peak_rss_mb": round(rss_kb / 1024, 1)})


def _run_group(env: dict[str, str], n: int, k: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    done = ctx.Value("q", 0)
    q: Any = ctx.Queue()
    children = [ctx.Process(target=_run_member, args=(env, n, done, q)) for _ in range(k)]
    for child in children:
        child.start()
    results = [q.get(timeout=1800) for _ in children]
    for child in children:
        child.join()
    active = [r for r in results if r["first"] is not None]
    start = min(r["first"] for r in active)
    end = max(r["last"] for r in active)
    return {
        "elapsed": end - start,
        "records": sum(r["records"] for r in results),
        "records_per_member": sorted(r["records"] for r in results),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in results),
        "stats": {},
    }


def main() -> None:
    ap = argparse.ArgumentParser(prog="bench processor")
    ap.add_argument("--events", type=int, default=int(os.environ.get("BENCH_EVENTS", "200000")))
    ap.add_argument("--processors", type=int, default=1, help="group members (child processes)")
    ap.add_argument(
        "--durable", action="store_true", help="the stack of `up --data`: Tansu on the local object store, Valkey AOF"
    )
    args, _ = ap.parse_known_args()
    n = args.events
    work = tempfile.mkdtemp(prefix="bench-")
    with contextlib.ExitStack() as stack:
        if args.durable:
            state = DurableState.load(Path(work) / "data")
            kafka: Any = stack.enter_context(DurableKafka(Path(work) / "data", state, Path(work)))
            redis_srv = stack.enter_context(durable_redis(Path(work) / "data", state))
        else:
            kafka = stack.enter_context(EmbeddedKafka(workdir=work))
            redis_srv = stack.enter_context(EmbeddedRedis(workdir=work))
        env = {
            "METERSTREAM_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "METERSTREAM_REDIS_URL": redis_srv.url,
            "METERSTREAM_TOPIC_PARTITIONS": str(PARTITIONS),
            "METERSTREAM_PROCESSOR_BATCH": "10000",
        }
        settings = load_settings(env)
        ensure_topics(settings)
        t0 = time.perf_counter()
        _produce(settings, n)
        produce_s = time.perf_counter() - t0
        ceiling = _ceiling(settings, n)
        client = redis.Redis.from_url(redis_srv.url)
        mem0 = int(client.info("memory")["used_memory"])
        if args.processors > 1:
            result = _run_group(env, n, args.processors)
        else:
            q: Any = mp.get_context("spawn").Queue()
            child = mp.get_context("spawn").Process(target=_run_processor, args=(env, n, q))
            child.start()
            result = q.get(timeout=1800)
            child.join()
        mem1 = int(client.info("memory")["used_memory"])
        claim_keys = [k for _, k in zip(range(2000), client.scan_iter(match="ms:id:*", count=1000), strict=False)]
        usage = [int(client.memory_usage(k) or 0) for k in claim_keys]
        out = {
            "bench": "processor (durable: up --data)" if args.durable else "processor",
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} "
            f"{platform.python_version()}",
            "events": n,
            "partitions": PARTITIONS,
            "produce_events_per_s": round(n / produce_s),
            "ceiling_consume_decode_events_per_s": round(ceiling),
            "processors": args.processors,
            "records_per_member": result.get("records_per_member", [result["records"]]),
            "processor_events_per_s": round(n / result["elapsed"]),
            "processor_peak_rss_mb": result["peak_rss_mb"],
            "redis_used_memory_growth_bytes_per_event": round((mem1 - mem0) / n, 1),
            "redis_memory_usage_per_claim_key_bytes": round(sum(usage) / max(1, len(usage)), 1),
            "stats": result["stats"],
        }
        print(json.dumps(out))


if __name__ == "__main__":
    main()
