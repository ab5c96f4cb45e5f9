"""Processor throughput, beside the raw confluent-kafka ceiling, on the embedded broker and Valkey.

    python -m bench processor [--events N] [--processors K] [--workload adversarial|unique] [--durable]

``--durable`` runs it on the stack of ``meterstream up --data`` (Tansu on the local object store, Valkey
with AOF) instead of the memory-only one.

1. produce N records (1,000 customers). ``adversarial`` (the default, what docs/scaling.md quotes): about 90 %
   events with fresh identifiers over a raw sum meter, a pre-aggregated (hour) sum meter and a raw ``last``
   meter, 3 % duplicates of an earlier identifier, 2 % invalid values (error topic), 5 % cancellations on the
   adjustments topic (of an earlier event, of an unknown identifier, or twice); ``unique``: every event a new
   identifier, raw sum and pre-aggregated sum only;
2. ceiling: a plain confluent-kafka consumer that reads and json-decodes all N (nothing else);
3. Quix Streams (its own virtualenv, created on first use): a 1 h tumbling sum per key over the
   ``meter-events`` records (bench/quix_runner.py; ``--no-quix`` skips it);
4. the processor, in a child process: from start until every record is applied to Redis and its accepted
   record acknowledged by the broker; its peak RSS;
   With ``--processors K`` (K > 1) K child processes join one consumer group at once; the rate is N over
   the time from the first record any of them processed to the moment all N were processed (group joins
   and the rebalances while members join are inside that time: what a scale-out really gets); the time the
   single process spent in each stage (decode, validate, claim, apply, produce, commit), in µs per record;
5. Redis memory per remembered identifier: ``used_memory`` growth during step 3 divided by N (this
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
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis
from confluent_kafka import OFFSET_BEGINNING, TopicPartition

from processor.config import Settings, load_settings
from processor.durable import DurableKafka, DurableState, durable_redis
from processor.embedded import EmbeddedKafka, EmbeddedRedis
from processor.kafka import AckedProducer, new_consumer
from processor.kafka.admin import ensure_topics
from processor.meters.model import Meter
from topics import Topic, topic_name

PARTITIONS = 6


def bench_setup(bootstrap: str, redis_url: str) -> tuple[dict[str, str], Settings]:
    """The environment and settings of a benchmark's processors (PARTITIONS partitions, 10,000-record
    batches) on the given broker and Redis, with the topics created."""
    env = {
        "METERSTREAM_KAFKA_BOOTSTRAP": bootstrap,
        "METERSTREAM_REDIS_URL": redis_url,
        "METERSTREAM_TOPIC_PARTITIONS": str(PARTITIONS),
        "METERSTREAM_PROCESSOR_BATCH": "10000",
    }
    settings = load_settings(env)
    ensure_topics(settings)
    return env, settings


#: The benchmarks' producer: large batches, so the produce phase measures the broker; not idempotent, as the
#: bench's raw producer was before it moved onto AckedProducer: idempotence cost ~15 % of the produce rate
#: on the embedded broker (`python -m bench processor --events 50000`, 2-core box: ~130,000/s idempotent,
#: ~150,000/s without), and each bench record is produced once, so it has nothing to deduplicate.
BENCH_PRODUCER = {
    "enable.idempotence": False,
    "linger.ms": 20,
    "queue.buffering.max.messages": 2_000_000,
    "batch.num.messages": 10_000,
}


def produce_records(
    settings: Settings,
    meters: Iterable[Meter],
    meters_ms: int,
    records: Iterable[tuple[Topic, str, bytes]],
    now_ms: int,
) -> int:
    """Write ``meters`` (effective at ``meters_ms``), then every ``(topic, key, value)`` record stamped
    ``now_ms``, through the Kafka layer's producer; returns how many records, once all are acknowledged."""
    p = AckedProducer(settings, config=BENCH_PRODUCER)
    names = {t: topic_name(t, settings.topic_prefix) for t in Topic}
    for m in meters:
        p.produce(names[Topic.METERS], m.to_json(), m.id, timestamp=meters_ms)
    n = p.produce_many((names[base], value, key, now_ms) for base, key, value in records)
    if p.flush(120):
        raise RuntimeError("the broker did not acknowledge every benchmark record")
    return n


def _record(i: int, now_ms: int, workload: str) -> tuple[Topic, str, bytes]:
    """(topic base, key, value) of the i-th bench record: deterministic, so every run sees the same stream."""
    cust = f"cus_{i % 1000}"
    ts = now_ms // 1000 - (i % 7200)
    r = i % 100
    if workload == "unique" or r < 90:
        name = "bench_pre" if i % 10 == 0 else ("bench_last" if i % 10 == 1 else "bench_sum")
        body = {"event_name": name, "payload": {"stripe_customer_id": cust, "value": i % 97}}
        return Topic.EVENTS, cust, json.dumps({**body, "identifier": str(uuid.UUID(int=i)), "timestamp": ts}).encode()
    if r < 93:  # a duplicate of an identifier a sum event used ~1,000 records earlier
        dup = i - 1003
        body = {"event_name": "bench_sum", "payload": {"stripe_customer_id": cust, "value": 5}}
        ident = str(uuid.UUID(int=dup)) if dup >= 0 else f"first-{i}"
        return Topic.EVENTS, cust, json.dumps({**body, "identifier": ident, "timestamp": ts}).encode()
    if r < 95:  # invalid value: rejected to the error topic
        body = {"event_name": "bench_sum", "payload": {"stripe_customer_id": cust, "value": "1.5"}}
        return Topic.EVENTS, cust, json.dumps({**body, "identifier": f"bad-{i}", "timestamp": ts}).encode()
    # cancellations of an event ~2,000 records earlier (pre-aggregated, last and sum meters in turn); record
    # 97 of each hundred cancels an identifier never sent, record 99 the same event as record 98 (a no-op)
    j = i - 1 if r == 99 else i
    k = j % 3
    t = j - 2000 - (j % 100 - 80 - k)  # a fresh event of the meter k
    target = str(uuid.UUID(int=t)) if t >= 0 and r != 97 else f"never-{i}"
    name = ("bench_pre", "bench_last", "bench_sum")[k]
    body = {"event_name": name, "type": "cancel", "cancel": {"identifier": target}}
    return Topic.ADJUSTMENTS, cust, json.dumps(body).encode()


def _produce(settings: Settings, n: int, workload: str) -> None:
    now_ms = int(time.time() * 1000)
    meters = [
        Meter("mtr_bsum", "Bench sum", "bench_sum", "sum", created=1),
        Meter("mtr_bpre", "Bench pre", "bench_pre", "sum", "hour", created=1),
        Meter("mtr_blast", "Bench last", "bench_last", "last", created=1),
    ]
    produce_records(settings, meters, now_ms - 3_600_000, (_record(i, now_ms, workload) for i in range(n)), now_ms)


def _ceiling(settings: Settings, n: int) -> float:
    c = new_consumer(settings, f"ceiling-{uuid.uuid4()}")
    c.assign(
        [
            TopicPartition(topic_name(base, settings.topic_prefix), p, OFFSET_BEGINNING)
            for base in (Topic.EVENTS, Topic.ADJUSTMENTS)
            for p in range(PARTITIONS)
        ]
    )
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


QUIX_VERSION = "3.28.*"


def _quix_python() -> str:
    """The Python of the Quix Streams virtualenv (created on first use; ``BENCH_QUIX_VENV`` to choose where)."""
    venv = Path(os.environ.get("BENCH_QUIX_VENV", Path.home() / ".cache" / "meterstream" / "bench-quix"))
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"quixstreams=={QUIX_VERSION}"], check=True)
    return str(python)


def _quix(settings: Settings, events: int) -> dict[str, Any]:
    """Quix Streams' rate over the same ``meter-events`` records (a 1 h tumbling sum; bench/quix_runner.py)."""
    try:
        python = _quix_python()
        with tempfile.TemporaryDirectory(prefix="bench-quix-") as state:
            done = subprocess.run(
                [
                    python,
                    str(Path(__file__).with_name("quix_runner.py")),
                    str(settings.kafka_config()["bootstrap.servers"]),
                    topic_name(Topic.EVENTS, settings.topic_prefix),
                    str(events),
                    state,
                ],
                capture_output=True,
                text=True,
                timeout=1800,
                check=True,
            )
        result = json.loads(done.stdout.strip().splitlines()[-1])
        return {"quix_events_per_s": round(result["records"] / result["elapsed"]), "quix_version": QUIX_VERSION}
    except (OSError, subprocess.SubprocessError, ValueError, IndexError, KeyError) as exc:
        return {"quix_events_per_s": None, "quix_error": str(exc)[-500:]}


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
    stages = {k: round(v / max(1, done) * 1e6, 2) for k, v in getattr(proc, "stage_s", {}).items()}
    q.put(
        {
            "elapsed": elapsed,
            "records": done,
            "peak_rss_mb": round(rss_kb / 1024, 1),
            "stats": dict(proc.stats),
            "stages_us_per_record": stages,
        }
    )


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
    ap.add_argument("--workload", choices=("adversarial", "unique"), default="adversarial")
    ap.add_argument("--no-quix", action="store_true", help="skip the Quix Streams reference run")
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
        env, settings = bench_setup(kafka.bootstrap, redis_srv.url)
        t0 = time.perf_counter()
        _produce(settings, n, args.workload)
        produce_s = time.perf_counter() - t0
        ceiling = _ceiling(settings, n)
        events = sum(1 for i in range(n) if _record(i, 0, args.workload)[0] == Topic.EVENTS)
        quix = _quix(settings, events) if not args.no_quix else {"quix_events_per_s": None}
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
        out = {
            "bench": "processor (durable: up --data)" if args.durable else "processor",
            "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} "
            f"{platform.python_version()}",
            "events": n,
            "partitions": PARTITIONS,
            "produce_events_per_s": round(n / produce_s),
            "ceiling_consume_decode_events_per_s": round(ceiling),
            "workload": args.workload,
            "load_average": os.getloadavg()[0],
            "processors": args.processors,
            "records_per_member": result.get("records_per_member", [result["records"]]),
            "processor_events_per_s": round(n / result["elapsed"]),
            "ratio_to_ceiling": round(n / result["elapsed"] / ceiling, 3),
            **quix,
            "ratio_to_quix": round(n / result["elapsed"] / quix["quix_events_per_s"], 2)
            if quix.get("quix_events_per_s")
            else None,
            "stages_us_per_record": result.get("stages_us_per_record", {}),
            "processor_peak_rss_mb": result["peak_rss_mb"],
            "redis_used_memory_growth_bytes_per_event": round((mem1 - mem0) / n, 1),
            "stats": result["stats"],
        }
        print(json.dumps(out))


if __name__ == "__main__":
    main()
