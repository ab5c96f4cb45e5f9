"""Usage retention (METERSTREAM_USAGE_RETENTION_DAYS): hour, day and minute buckets older than the retention
are dropped by the apply step, newer ones get an expiry that follows their newest bucket, and summaries
refuse ranges that start before it. The engine runs on records built in memory against the test Redis
(records received long ago, as a rebuild or a catch-up would process them)."""

from __future__ import annotations

import json
import time

import pytest

from processor.aggregator.engine import Engine, RawRecord
from processor.errors import InvalidRequestError
from processor.meters.book import MeterBook
from processor.meters.model import Meter
from processor.state.connect import SyncRedis, sync_redis_url
from processor.state.keys import DAY_S, Keys
from processor.state.store import StateStore
from processor.state.summaries import summarize

pytestmark = pytest.mark.integration

RETENTION_DAYS = 40
METERS = [Meter("mtr_rs", "Sum", "ret_sum", "sum", created=1), Meter("mtr_rl", "Last", "ret_last", "last", created=1)]


def _event(name: str, ident: str, ts: int, value: int) -> bytes:
    body = {"event_name": name, "payload": {"stripe_customer_id": "cus_r", "value": value}, "identifier": ident}
    return json.dumps({**body, "timestamp": ts}).encode()


def test_buckets_beyond_retention_are_dropped_and_the_rest_expire_with_their_newest_bucket(
    redis_client: SyncRedis, redis_url: str, unique: str
) -> None:
    now = int(time.time())
    today = now - now % DAY_S
    old_day, new_day = today - 60 * DAY_S, today - 2 * DAY_S
    book = MeterBook()
    for m in METERS:
        book.add(0, m)
    store = StateStore(sync_redis_url(redis_url), f"ret{unique}", RETENTION_DAYS)  # bytes: claims are binary
    engine = Engine(store, book)
    records = []
    for i, (name, day) in enumerate([(n, d) for n in ("ret_sum", "ret_last") for d in (old_day, new_day)]):
        ts = day + 3600 + 60 * i
        # received 10 minutes after its timestamp: valid for Stripe's 35-day window at that time
        records.append(RawRecord("meter-events", 0, i, (ts + 600) * 1000, _event(name, f"id-{i}", ts, 5 + i)))
    out = engine.process(records)
    assert out.stats["event:new"] == 4
    keys = Keys(f"ret{unique}")
    for meter in METERS:
        hour = redis_client.hgetall(keys.usage_hour(meter.id, "cus_r"))
        day = redis_client.hgetall(keys.usage_day(meter.id, "cus_r"))
        assert [int(h) - int(h) % DAY_S for h in hour] == [new_day], hour  # the 60-day-old hour is gone
        assert list(map(int, day)) == [new_day], day
        want_ms = (new_day + DAY_S + RETENTION_DAYS * DAY_S) * 1000
        for key in (keys.usage_hour(meter.id, "cus_r"), keys.usage_day(meter.id, "cus_r")):
            assert int(redis_client.pexpiretime(key)) == want_ms
        assert redis_client.exists(keys.minutes(meter.id, "cus_r", old_day)) == 0
        assert int(redis_client.pexpiretime(keys.minutes(meter.id, "cus_r", new_day))) == want_ms
    # summaries: a range inside the retention is answered, one starting before it is refused
    rows = summarize(
        redis_client, keys, "mtr_rs", "sum", "cus_r", new_day, new_day + DAY_S, retention_days=RETENTION_DAYS
    )
    assert [r.value for r in rows] == [6]
    with pytest.raises(InvalidRequestError) as err:
        summarize(redis_client, keys, "mtr_rs", "sum", "cus_r", old_day, today, retention_days=RETENTION_DAYS)
    assert err.value.param == "start_time"
