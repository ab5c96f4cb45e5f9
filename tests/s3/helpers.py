"""Objects in Stripe's bulk formats, and the aggregates they must produce."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

import redis

from processor.config import Settings
from processor.ops.s3 import ObjectRecord
from processor.state.keys import Keys
from tests.pipeline import usage_snapshot


def csv_body(rows: list[tuple[int, str, int]]) -> bytes:
    """Stripe's Dashboard/S3 CSV template: (timestamp, customer, value) rows of event ``s3_api``."""
    lines = ["timestamp,event_name,payload_stripe_customer_id,payload_value"]
    lines += [f"{ts},s3_api,{customer},{value}" for ts, customer, value in rows]
    return ("\n".join(lines) + "\n").encode()


def jsonl_body(rows: list[dict[str, Any]]) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


def event(customer: str, value: int, ts: int | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"event_name": "s3_api", "payload": {"stripe_customer_id": customer, "value": value}}
    if ts is not None:
        body["timestamp"] = ts
    body.update(extra)
    return body


def totals(client: redis.Redis, settings: Settings, meter_id: str = "mtr_s3") -> dict[str, int]:
    """customer → sum of its hour buckets (the public aggregates)."""
    out: Counter[str] = Counter()
    for key, buckets in usage_snapshot(client, settings.redis_prefix).items():
        if key.startswith(f":usage:{{{meter_id}:") and key.endswith(":hour"):
            customer = key[len(f":usage:{{{meter_id}:") : -len("}:hour")]
            out[customer] += sum(int(v) for v in buckets.values())
    return dict(out)


def hours(client: redis.Redis, settings: Settings, customer: str, meter_id: str = "mtr_s3") -> dict[str, str]:
    raw: dict[Any, Any] = client.hgetall(Keys(settings.redis_prefix).usage_hour(meter_id, customer))
    return {str(k): str(v) for k, v in raw.items()}


def record(client: redis.Redis, settings: Settings, bucket: str, key: str) -> ObjectRecord | None:
    raw = client.get(Keys(settings.redis_prefix).s3_object(bucket, key))
    return ObjectRecord.from_json(raw) if raw is not None else None
