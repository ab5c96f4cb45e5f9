"""The dashboard's pipeline history: the series arithmetic (rates, lags, seconds behind read off the
samples), real samples taken from a real pipeline, and the page's charts with time axes in Chromium."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
import redis
import stripe
from hypothesis import given
from hypothesis import strategies as st

from processor.config import Settings
from processor.gateway import GatewayServer
from processor.gateway.history import SAMPLE_S, sample_once, series
from processor.state.keys import Keys
from tests.gateway.conftest import CHROMIUM, get_json, make_meter, run_processor


def s(t: int, processed: int, proc: tuple[int, int], sink: tuple[int, int], errors: int = 0) -> dict[str, Any]:
    return {
        "t": t, "processed": processed, "delivered": sink[0], "stripe_errors": errors,
        "proc_next": proc[0], "proc_high": proc[1], "sink_next": sink[0], "sink_high": sink[1], "lag_known": True,
    }  # fmt: skip


def test_series_rates_lags_and_seconds_behind() -> None:
    t0 = 1_800_000_000
    samples = [
        s(t0, 0, (0, 100), (0, 0)),  # 100 records waiting, nothing processed yet
        s(t0 + 15, 150, (150, 300), (100, 150), errors=3),
        s(t0 + 30, 300, (300, 300), (150, 300), errors=3),  # processor caught up; sink at 150
        s(t0 + 45, 300, (300, 300), (300, 300), errors=9),
    ]
    out = series(samples, t0 + 50)
    rows = {p["t"]: p for p in out["data"]}
    assert rows[t0 + 15]["events_per_s"] == 10.0 and rows[t0 + 15]["stripe_errors_per_s"] == 0.2
    assert rows[t0 + 45]["stripe_errors_per_s"] == 0.4
    assert "events_per_s" not in rows[t0]  # no previous sample: no rate
    assert [rows[t]["processor_lag_records"] for t in sorted(rows)] == [100, 150, 0, 0]
    assert [rows[t]["sink_lag_records"] for t in sorted(rows)] == [0, 50, 150, 0]
    # seconds behind: the time since the high watermark was where the consumer is now
    assert rows[t0]["processor_behind_s"] is None  # at 0 with 100 waiting: since before the first sample
    assert rows[t0 + 15]["processor_behind_s"] == 15.0  # at 150: where the watermark was (100 <= 150) at t0
    assert rows[t0 + 30]["processor_behind_s"] == 0.0
    assert rows[t0 + 30]["sink_behind_s"] == 15.0  # the sink is where the accepted topic ended at t0+15
    assert rows[t0 + 45]["sink_behind_s"] == 0.0
    assert out["end"] - out["start"] == 3600


@given(st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 10_000)), min_size=1, max_size=30))
def test_behind_is_zero_exactly_when_caught_up_and_never_negative(offsets: list[tuple[int, int]]) -> None:
    t0 = 1_800_000_000
    highs: list[int] = []
    for nxt, extra in offsets:  # high watermarks only grow
        highs.append(max([nxt + extra, *highs]))
    samples = [
        s(t0 + i * SAMPLE_S, 0, (min(n, h), h), (0, 0))
        for i, ((n, _), h) in enumerate(zip(offsets, highs, strict=True))
    ]
    for p, sample in zip(series(samples, samples[-1]["t"])["data"], samples, strict=True):
        behind = p["processor_behind_s"]
        assert (behind == 0.0) == (sample["proc_next"] >= sample["proc_high"]) or behind is None
        assert behind is None or 0 <= behind <= p["t"] - t0


def test_samples_come_from_the_real_pipeline(
    gateway: GatewayServer, client: stripe.StripeClient, gw_settings: Settings, redis_client: redis.Redis
) -> None:
    make_meter(client, "hist_calls")
    loop = gateway._loop

    def sample(now: float) -> Any:
        return asyncio.run_coroutine_threadsafe(sample_once(gateway.gateway, now), loop).result(30)

    # half an hour ago: intervals the gateway's own sampler (running in real time) never writes
    t0 = (int(time.time()) - 1800) // SAMPLE_S * SAMPLE_S
    for i in range(30):
        client.v1.billing.meter_events.create(
            {"event_name": "hist_calls", "payload": {"stripe_customer_id": f"c{i % 3}", "value": "1"}}
        )
    first = sample(t0)
    assert first is not None and first["proc_high"] - first["proc_next"] == 30  # waiting for the processor
    run_processor(gw_settings)
    second = sample(t0 + SAMPLE_S)
    assert second is not None
    assert second["processed"] - first["processed"] == 30 and second["proc_next"] == second["proc_high"]
    assert second["sink_high"] - second["sink_next"] == 30  # no sink ran: accepted records wait
    assert sample(t0 + SAMPLE_S + 1) is not None  # same interval: kept as it was (HSETNX)
    stored = redis_client.hgetall(Keys(gw_settings.redis_prefix).dashboard_history())
    assert sorted(k for k in stored if int(k) < t0 + 10 * SAMPLE_S) == [str(t0), str(t0 + SAMPLE_S)]
    assert json.loads(stored[str(t0 + SAMPLE_S)]) == second
    # old samples are trimmed
    redis_client.hset(Keys(gw_settings.redis_prefix).dashboard_history(), str(t0 - 3 * 3600), json.dumps(first))
    sample(t0 + 2 * SAMPLE_S)
    assert str(t0 - 3 * 3600) not in redis_client.hkeys(Keys(gw_settings.redis_prefix).dashboard_history())
    answer = get_json(gateway.url + "/dashboard/api/history")
    points = {p["t"]: p for p in answer["data"]}
    if t0 + SAMPLE_S in points:  # (the test's clock ran past the window only if it took an hour)
        assert points[t0 + SAMPLE_S]["events_per_s"] == 2.0  # 30 records in 15 s
        assert points[t0 + SAMPLE_S]["processor_behind_s"] == 0.0


@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_history_charts_have_time_axes(
    browser_page: tuple[Any, list[str]], url: str, gw_settings: Settings, redis_client: redis.Redis
) -> None:
    page, problems = browser_page
    expect = pytest.importorskip("playwright.sync_api").expect
    now = int(time.time()) // SAMPLE_S * SAMPLE_S
    key = Keys(gw_settings.redis_prefix).dashboard_history()
    # five minutes: 100 events/s, the sink 30 s behind; the newest two intervals ahead of the clock, so the
    # gateway's own sampler (which never overwrites an interval) cannot add a newer sample during the test
    for i in range(20):
        t = now + 2 * SAMPLE_S - (19 - i) * SAMPLE_S
        redis_client.hset(
            key, str(t), json.dumps(s(t, i * 1500, (i * 1500, i * 1500), (max(0, (i - 2) * 1500), i * 1500)))
        )
    page.goto(f"{url}/?refresh=60")
    expect(page.locator("#history")).to_have_attribute("data-state", "drawn")
    assert page.get_attribute("#history", "data-samples") in ("20", "21")  # (+ the gateway's own sample)
    labels = page.eval_on_selector_all("#hist-events text.xlabel", "ts => ts.map(t => t.textContent)")
    assert len(labels) >= 6 and all(len(x) == 5 and x[2] == ":" and x.endswith("0") for x in labels)  # HH:M0
    values = page.eval_on_selector_all("#hist-events circle.point", "cs => cs.map(c => Number(c.dataset.value))")
    assert values.count(100.0) >= 18
    behind = page.eval_on_selector_all("#hist-sink-behind circle.point", "cs => cs.map(c => Number(c.dataset.value))")
    assert behind.count(30.0) >= 17
    # and on the cards, in words: the sink (Stripe) is 30 s behind, the processor caught up
    expect(page.locator("#sink-behind")).to_have_text("30 s")
    expect(page.locator("#proc-behind")).to_have_text("caught up")
    assert problems == []
