"""Redis memory per identifier and per bucket, from the real processor on the embedded broker and Valkey.

    python -m bench memory [--customers 50] [--days 30] [--busy 5] [--busy-days 2]

Why: sizing Redis (docs/scaling.md) needs bytes per remembered identifier (the claim keys, which live
25 h) and bytes per aggregate bucket (hour, day and minute fields, which accumulate). Both depend on the
encoding Valkey picks: a hash stays a compact *listpack* up to ``hash-max-listpack-entries`` fields (512 by default)
and becomes a *hashtable* beyond, at several times the cost per field. So the workload has both shapes:

- *spread*: ``customers`` x 4 meters (raw sum, raw count, raw last, sum pre-aggregated by hour), one event
  per hour for ``days`` days (720 hour fields per pair at 30 days: hashtable hour hashes, listpack day
  and minute hashes);
- *busy*: ``busy`` customers of the sum meter with one event per minute for ``busy_days`` days
  (1,440-field minute hashes: hashtable).

Every event has its own identifier and a received time of now (timestamps go back up to ``days`` days,
within Stripe's 35). The processor runs in this process until idle; then every key under the prefix is
classified by its format (taken from :class:`processor.state.keys.Keys`, never spelled out here) and
measured with ``MEMORY USAGE key SAMPLES 0`` (exact), grouped by kind and encoding. ``used_memory``
growth over the run is printed beside it as a cross-check (it also holds allocator slack and Lua caches).
Prints a table, then one JSON object with the same numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from bench.processor_bench import produce_records
from processor.aggregator.runner import Processor
from processor.config import Settings, load_settings
from processor.embedded import EmbeddedKafka, EmbeddedRedis
from processor.kafka.admin import ensure_topics
from processor.meters.model import Meter
from processor.state.keys import Keys
from topics import Topic

HOUR_MS = 3_600_000
METERS = [
    Meter("mtr_msum", "Memory sum", "mem_sum", "sum", created=1),
    Meter("mtr_mcnt", "Memory count", "mem_cnt", "count", created=1),
    Meter("mtr_mlast", "Memory last", "mem_last", "last", created=1),
    Meter("mtr_mpre", "Memory pre-aggregated hour", "mem_pre", "sum", "hour", created=1),
]
_ANY = "\x00"  # stands for one variable part of a key while deriving the patterns below


def key_kinds(keys: Keys) -> list[tuple[str, re.Pattern[str]]]:
    """(kind, regex) for every key the processor writes, derived from the key builders themselves."""

    def pattern(template: str) -> re.Pattern[str]:
        return re.compile("^" + ".+".join(re.escape(part) for part in template.split(_ANY)) + "$")

    def with_unit(template: str) -> str:  # minutes/candidates/best take an int as last part
        return template.rsplit(":", 1)[0] + ":" + _ANY

    return [
        ("claim (identifier)", pattern(keys.claim_pattern().replace("*", _ANY))),
        ("usage hour", pattern(keys.usage_hour(_ANY, _ANY))),
        ("usage day", pattern(keys.usage_day(_ANY, _ANY))),
        ("minutes", pattern(with_unit(keys.minutes(_ANY, _ANY, 0)))),
        ("watermark", pattern(keys.watermark(_ANY, _ANY))),
        ("candidates", pattern(with_unit(keys.candidates(_ANY, _ANY, 0)))),
        ("best", pattern(with_unit(keys.best(_ANY, _ANY, 0)))),
        ("customers index", pattern(keys.customers(_ANY))),
        ("progress", pattern(keys.progress(_ANY))),
        ("stats", pattern(keys.stats(_ANY))),
        ("meters", pattern(keys.meters)),
    ]


@dataclass
class Row:
    """One (kind, encoding) group of keys."""

    keys: int = 0
    fields: int = 0
    bytes: int = 0


def _events(customers: int, days: int, busy: int, busy_days: int, now_s: int) -> Iterator[tuple[str, bytes]]:
    hour0 = now_s - now_s % 3600
    for c in range(customers):
        cust = f"cus_spread_{c}"
        for h in range(days * 24):
            for m in METERS:
                ts = hour0 - h * 3600 + (c * 61 + h * 7) % 3600
                yield cust, _value(m.event_name, cust, h % 97, ts)
    for c in range(busy):
        cust = f"cus_busy_{c}"
        for minute in range(busy_days * 1440):
            ts = now_s - minute * 60
            yield cust, _value("mem_sum", cust, minute % 13, ts)


def _value(name: str, customer: str, value: int, ts: int) -> bytes:
    body = {
        "event_name": name,
        "payload": {"stripe_customer_id": customer, "value": value},
        "identifier": str(uuid.uuid4()),
        "timestamp": ts,
    }
    return json.dumps(body, separators=(",", ":")).encode()


def _produce(settings: Settings, records: Iterator[tuple[str, bytes]], now_ms: int) -> int:
    events = ((Topic.EVENTS, key, value) for key, value in records)
    return produce_records(settings, METERS, now_ms - HOUR_MS, events, now_ms)


def measure(client: redis.Redis, keys: Keys) -> dict[tuple[str, str], Row]:
    """Every key under the prefix: kind, encoding, fields and exact ``MEMORY USAGE``, grouped."""
    kinds = key_kinds(keys)
    rows: dict[tuple[str, str], Row] = defaultdict(Row)
    batch: list[str] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for k in batch:
            pipe.type(k)
            pipe.object("encoding", k)
            pipe.memory_usage(k, samples=0)
        answers = pipe.execute()
        pipe = client.pipeline(transaction=False)
        types = [_text(answers[i * 3]) for i in range(len(batch))]
        for k, t in zip(batch, types, strict=True):
            if t == "hash":
                pipe.hlen(k)
            elif t == "zset":
                pipe.zcard(k)
            else:
                pipe.exists(k)  # one "field": the string itself
        lengths = pipe.execute()
        for i, k in enumerate(batch):
            kind = next((name for name, rx in kinds if rx.match(k)), "other")
            row = rows[(kind, _text(answers[i * 3 + 1]))]
            row.keys += 1
            row.fields += int(lengths[i])
            row.bytes += int(answers[i * 3 + 2] or 0)
        batch.clear()

    for key in client.scan_iter(match=keys.all_pattern(), count=1000):
        batch.append(_text(key))
        if len(batch) >= 1000:
            flush()
    if batch:
        flush()
    return dict(rows)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _per(total: int, n: int) -> float:
    return round(total / n, 1) if n else 0.0


def report(rows: dict[tuple[str, str], Row], events: int, used_growth: int, config: dict[str, Any]) -> dict[str, Any]:
    print(f"{'key kind':<20} {'encoding':<10} {'keys':>9} {'fields':>9} {'bytes':>12} {'B/key':>9} {'B/field':>8}")
    for (kind, enc), r in sorted(rows.items(), key=lambda kv: -kv[1].bytes):
        print(
            f"{kind:<20} {enc:<10} {r.keys:>9,} {r.fields:>9,} {r.bytes:>12,} "
            f"{_per(r.bytes, r.keys):>9,} {_per(r.bytes, r.fields):>8,}"
        )
    total = sum(r.bytes for r in rows.values())

    def by(kind: str, enc: str | None = None) -> Row:
        out = Row()
        for (k, e), r in rows.items():
            if k == kind and (enc is None or e == enc):
                out.keys, out.fields, out.bytes = out.keys + r.keys, out.fields + r.fields, out.bytes + r.bytes
        return out

    claims = by("claim (identifier)")
    summary = {
        "bench": "memory",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
        **config,
        "events": events,
        # a claim bucket holds one field per identifier (of one meter, shard and received day)
        "bytes_per_identifier": _per(claims.bytes, claims.fields),
        "bytes_per_hour_bucket_listpack": _per(by("usage hour", "listpack").bytes, by("usage hour", "listpack").fields),
        "bytes_per_hour_bucket_hashtable": _per(
            by("usage hour", "hashtable").bytes, by("usage hour", "hashtable").fields
        ),
        "bytes_per_day_bucket": _per(by("usage day").bytes, by("usage day").fields),
        "bytes_per_minute_bucket_listpack": _per(by("minutes", "listpack").bytes, by("minutes", "listpack").fields),
        "bytes_per_minute_bucket_hashtable": _per(by("minutes", "hashtable").bytes, by("minutes", "hashtable").fields),
        "bytes_per_watermark_key": _per(by("watermark").bytes, by("watermark").keys),
        "bytes_per_customers_index_member": _per(by("customers index").bytes, by("customers index").fields),
        "bytes_per_window_candidates_key": _per(by("candidates").bytes, by("candidates").keys),
        "bytes_per_window_best_key": _per(by("best").bytes, by("best").keys),
        "memory_usage_total_bytes": total,
        "used_memory_growth_bytes": used_growth,
        "used_memory_growth_bytes_per_event": _per(used_growth, events),
    }
    print(
        f"\n{events:,} events; MEMORY USAGE total {total:,} B; used_memory growth {used_growth:,} B "
        f"({summary['used_memory_growth_bytes_per_event']} B/event)"
    )
    for name in (
        "bytes_per_identifier",
        "bytes_per_hour_bucket_listpack",
        "bytes_per_hour_bucket_hashtable",
        "bytes_per_day_bucket",
        "bytes_per_minute_bucket_listpack",
        "bytes_per_minute_bucket_hashtable",
        "bytes_per_watermark_key",
        "bytes_per_customers_index_member",
        "bytes_per_window_candidates_key",
        "bytes_per_window_best_key",
    ):
        print(f"  {name:<36} {summary[name]:>8}")
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(prog="bench memory")
    ap.add_argument("--customers", type=int, default=50, help="spread customers (one event per meter and hour)")
    ap.add_argument("--days", type=int, default=30, help="days of hourly events per spread customer (<= 34)")
    ap.add_argument("--busy", type=int, default=5, help="busy customers (one event per minute)")
    ap.add_argument("--busy-days", type=int, default=2, help="days of per-minute events per busy customer")
    args, _ = ap.parse_known_args()
    if not 1 <= args.days <= 34:
        ap.error("--days must be 1..34 (Stripe accepts timestamps up to 35 days old)")
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    with EmbeddedKafka(workdir=work) as kafka, EmbeddedRedis(workdir=work) as redis_srv:
        settings = load_settings(
            {"METERSTREAM_KAFKA_BOOTSTRAP": kafka.bootstrap, "METERSTREAM_REDIS_URL": redis_srv.url}
        )
        ensure_topics(settings)
        now_ms = int(time.time() * 1000)
        n = _produce(settings, _events(args.customers, args.days, args.busy, args.busy_days, now_ms // 1000), now_ms)
        client = redis.Redis.from_url(redis_srv.url)
        before = int(client.info("memory")["used_memory"])
        proc = Processor(settings)
        try:
            done = proc.drain(idle=3.0, timeout=1800)
        finally:
            proc.close()
        if done < n:
            raise RuntimeError(f"the processor went idle after {done} of {n} events")
        after = int(client.info("memory")["used_memory"])
        config = {
            "spread_customers": args.customers,
            "days": args.days,
            "busy_customers": args.busy,
            "busy_days": args.busy_days,
            "meters": len(METERS),
        }
        summary = report(measure(client, Keys(settings.redis_prefix)), n, after - before, config)
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
