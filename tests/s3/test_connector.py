"""The S3 connector end to end: moto's S3 server over HTTP, the real broker, the real processor, Redis.

Aggregates are checked against what the objects say; "nothing imported twice" shows as exact totals after
re-uploads, a kill -9 mid-object and repeated passes."""

from __future__ import annotations

import hashlib
import json
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest
import redis

from processor.config import Settings
from processor.meters.model import Meter
from processor.ops.importer import ImportState
from processor.ops.s3 import REIMPORT_WINDOW_S, S3Connector
from processor.state.keys import Keys
from processor.windows import hour_start
from tests.fixtures import values
from tests.helpers import wait_until
from tests.ops.helpers import cli, run_processor
from tests.s3.conftest import Connector
from tests.s3.helpers import csv_body, event, hours, jsonl_body, record, totals
from topics import Topic

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration


def status_of(client: redis.Redis, settings: Settings, bucket: str, key: str, etag: str | None = None) -> str | None:
    found = record(client, settings, bucket, key)
    if found is None or (etag is not None and found.etag != etag):
        return None
    return found.status


def test_live_connector_new_changed_and_malformed_objects(
    s3_settings: Settings,
    redis_client: redis.Redis,
    meter: Meter,
    bucket: str,
    s3: S3Client,
    connector: Callable[..., Connector],
    read_topic: Callable[..., list[Any]],
    now: int,
) -> None:
    last_hour = hour_start(now) - 3600
    rows_a = [(last_hour + i, "cus_a", i % 7 + 1) for i in range(100)]
    s3.put_object(Bucket=bucket, Key="in/a.csv", Body=csv_body(rows_a))
    running = connector("--bucket", bucket, "--prefix", "in/", "--interval", "0.3")
    wait_until(lambda: status_of(redis_client, s3_settings, bucket, "in/a.csv") == "imported", "a.csv imported")

    # Added while it runs: Stripe's S3 JSON Lines example (an "extra_key", no timestamps: pinned per key),
    # with two identical rows (distinct events); a file that is no usage file; a key outside the prefix.
    rows_b = [event("cus_b", 10 + i, extra_key="x") for i in range(30)] + [event("cus_b", 5), event("cus_b", 5)]
    s3.put_object(Bucket=bucket, Key="in/b.jsonl", Body=jsonl_body(rows_b))
    s3.put_object(Bucket=bucket, Key="in/notes.txt", Body=b"not usage")
    s3.put_object(Bucket=bucket, Key="other/c.csv", Body=csv_body([(last_hour, "cus_c", 1)]))
    bad = '[\n {"event_name": "s3_api", "payload": {"stripe_customer_id": "cus_x", "value": 1}},\n'
    bad += ' {"event_name": "s3_api", "payload": {"value": 2}},\n {"event_name": "s3_api", "payload": {"stripe'
    s3.put_object(Bucket=bucket, Key="in/bad.json", Body=bad.encode())
    wait_until(lambda: status_of(redis_client, s3_settings, bucket, "in/b.jsonl") == "imported", "b.jsonl imported")
    wait_until(lambda: status_of(redis_client, s3_settings, bucket, "in/bad.json") == "rejected", "bad.json rejected")
    rejected = record(redis_client, s3_settings, bucket, "in/bad.json")
    assert rejected is not None and rejected.rows == 1 and rejected.rejected == 2 and rejected.sent == 0
    assert rejected.errors[0] == "line 3: Customer mapping key stripe_customer_id not found in payload."
    assert rejected.errors[1].startswith("line 4: not valid JSON")
    first_b = record(redis_client, s3_settings, bucket, "in/b.jsonl")
    assert first_b is not None and first_b.ignored == {"extra_key": 30}

    # Re-uploads: a.csv gains rows (inserted at the top); b.jsonl gains rows, a second later than its first
    # sighting (a default timestamp taken per version would give every old row a new identifier).
    wait_until(lambda: int(time.time()) > first_b.first_seen + 1, "the clock to move on")
    extra_a = [(last_hour + 200 + i, "cus_a", 100) for i in range(40)]
    a2 = s3.put_object(Bucket=bucket, Key="in/a.csv", Body=csv_body(extra_a + rows_a))["ETag"]
    rows_b2 = [*rows_b, event("cus_b", 1000), event("cus_b", 5)]
    b2 = s3.put_object(Bucket=bucket, Key="in/b.jsonl", Body=jsonl_body(rows_b2))["ETag"]
    wait_until(lambda: status_of(redis_client, s3_settings, bucket, "in/a.csv", a2) == "imported", "a.csv v2")
    wait_until(lambda: status_of(redis_client, s3_settings, bucket, "in/b.jsonl", b2) == "imported", "b.jsonl v2")
    again = record(redis_client, s3_settings, bucket, "in/bad.json")
    assert again is not None and again.at == rejected.at  # listed on every pass, never retried unchanged

    running.proc.send_signal(signal.SIGTERM)
    assert running.proc.wait(30) == 0  # a clean stop
    out = running.output()
    assert f"s3://{bucket}/in/bad.json [json" in out and "rejected: 1 valid row(s), 2 rejected; nothing sent" in out
    assert record(redis_client, s3_settings, bucket, "in/notes.txt") is None
    assert record(redis_client, s3_settings, bucket, "other/c.csv") is None

    run_processor(s3_settings)
    assert totals(redis_client, s3_settings) == {
        "cus_a": sum(v for _, _, v in rows_a) + 40 * 100,
        "cus_b": sum(int(r["payload"]["value"]) for r in rows_b2),
    }
    assert len(hours(redis_client, s3_settings, "cus_b")) == 1
    # Rows without a timestamp get the time the key was first seen, in every version: the re-sent rows keep
    # their identifiers (dropped as duplicates) and the new rows land beside them.
    sent_b = [v for v in values(read_topic(s3_settings, Topic.EVENTS)) if v["payload"]["stripe_customer_id"] == "cus_b"]
    assert len(sent_b) == len(rows_b) + len(rows_b2)
    assert {v["timestamp"] for v in sent_b} == {first_b.first_seen}
    ids_v1 = {v["identifier"] for v in sent_b[: len(rows_b)]}
    assert len(ids_v1) == len(rows_b) and ids_v1 < {v["identifier"] for v in sent_b[len(rows_b) :]}


def test_killed_mid_object_resumes_without_double_counting(
    s3_settings: Settings,
    redis_client: redis.Redis,
    meter: Meter,
    bucket: str,
    s3: S3Client,
    connector: Callable[..., Connector],
    now: int,
) -> None:
    last_hour = hour_start(now) - 3600
    n = 300_000
    body = jsonl_body([event(f"cus_{i % 4}", i % 5 + 1, last_hour + i % 3600) for i in range(n)])
    s3.put_object(Bucket=bucket, Key="big/usage.jsonl", Body=body)
    state_key = Keys(s3_settings.redis_prefix).import_state(hashlib.sha256(body).hexdigest())

    def midway() -> ImportState | None:
        raw = redis_client.get(state_key)
        state = ImportState.from_json(raw) if raw is not None else None
        return state if state is not None and 0 < state.acked < n and state.finished_at is None else None

    first = connector("--bucket", bucket, "--prefix", "big/", "--interval", "60")
    at_kill = wait_until(midway, "some but not all rows acknowledged", timeout=120)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    interrupted = record(redis_client, s3_settings, bucket, "big/usage.jsonl")
    assert interrupted is not None and interrupted.status == "importing"

    second = connector("--bucket", bucket, "--prefix", "big/", "--once")
    out = second.output()
    assert second.proc.returncode == 0, out
    done = record(redis_client, s3_settings, bucket, "big/usage.jsonl")
    assert done is not None and done.status == "imported" and done.rows == n
    assert done.resumed >= at_kill.acked and done.resumed + done.sent == n, out
    assert "1 object(s) acted on" in out

    third = connector("--bucket", bucket, "--prefix", "big/", "--once")  # nothing left to do
    assert "0 object(s) acted on" in third.output() and third.proc.returncode == 0

    run_processor(s3_settings)
    want = {f"cus_{c}": sum(i % 5 + 1 for i in range(c, n, 4)) for c in range(4)}
    assert totals(redis_client, s3_settings) == want


def test_import_s3_url_and_a_late_change_is_held(
    s3_settings: Settings, redis_client: redis.Redis, meter: Meter, bucket: str, s3: S3Client, now: int
) -> None:
    last_hour = hour_start(now) - 3600
    rows = [event("cus_u", 3, last_hour + i) for i in range(20)] + [event("cus_u", 9, last_hour, identifier="given-1")]
    s3.put_object(Bucket=bucket, Key="u/day.ndjson", Body=jsonl_body(rows))
    url = f"s3://{bucket}/u/day.ndjson"
    first = cli(s3_settings, "import", url)
    assert first.exit_code == 0, first.output
    assert f"{url} [jsonl" in first.output and "imported: 21 valid row(s), 0 rejected, 21 sent" in first.output
    again = cli(s3_settings, "import", url)
    assert again.exit_code == 0 and "already dealt with this version" in again.output

    # The connector knows the object now: a pass over the prefix leaves it alone.
    connector = S3Connector(s3_settings, redis_client)
    assert connector.poll(bucket, "u/") == []

    # A change a day after the first import would count the shared rows twice: held, not imported.
    s3.put_object(Bucket=bucket, Key="u/day.ndjson", Body=jsonl_body([*rows, event("cus_u", 500, last_hour)]))
    later = S3Connector(s3_settings, redis_client, now=lambda: time.time() + REIMPORT_WINDOW_S + 60)
    [(_, held)] = later.poll(bucket, "u/")
    assert held.status == "held" and held.sent == 0 and "count twice" in held.message
    assert later.poll(bucket, "u/") == []  # reported once, not on every pass
    # By the real clock the change is inside the window: `import s3://` re-imports it, shared rows deduplicated.
    reimported = cli(s3_settings, "import", url)
    assert reimported.exit_code == 0 and "imported: 22 valid row(s), 0 rejected, 22 sent" in reimported.output

    bad = json.dumps(event("cus_u", 1, last_hour)) + "\n" + json.dumps(event("", 1, last_hour)) + "\n"
    s3.put_object(Bucket=bucket, Key="u/bad.jsonl", Body=bad.encode())
    refused_bad = cli(s3_settings, "import", f"s3://{bucket}/u/bad.jsonl")
    assert refused_bad.exit_code == 1 and "nothing sent" in refused_bad.output
    skipped = cli(s3_settings, "import", f"s3://{bucket}/u/bad.jsonl", "--skip-invalid")
    assert skipped.exit_code == 0 and "imported: 1 valid row(s), 1 rejected, 1 sent" in skipped.output

    run_processor(s3_settings)
    assert totals(redis_client, s3_settings) == {"cus_u": 20 * 3 + 9 + 500 + 1}
