"""The sink end to end: real broker, real Redis, the Stripe emulator over HTTP, ``python -m processor sink``.

Each test produces accepted records (the processor's output contract) directly to its own topics, runs
the sink as a subprocess and checks, through the emulator's event log, that Stripe received every event
exactly once, each customer's records in Kafka order, and every cancellation after its event.
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
import redis
import stripe
from click.testing import CliRunner

from processor.cli import main
from processor.config import Secret, Settings
from processor.embedded import free_port
from processor.meters.model import Meter
from processor.state.keys import Keys
from tests.helpers import EmulatorControl
from tests.sink.conftest import (
    API_KEY,
    Produced,
    SinkProcess,
    cancel,
    committed_offsets,
    event,
    produce_accepted,
    put_meter,
    read_all,
    wait_until,
)
from topics import Topic

pytestmark = pytest.mark.integration

RAW_SUM = Meter(id="mtr_local_sum", display_name="API calls", event_name="api_calls", formula="sum")
WINDOWED = Meter(
    id="mtr_local_hourly", display_name="Seats", event_name="seats", formula="sum", event_time_window="hour"
)


def _settings(settings_factory: Callable[..., Settings], emulator: EmulatorControl, mode: str, rate: int) -> Settings:
    return settings_factory(
        METERSTREAM_STRIPE_API_BASE=emulator.url,
        METERSTREAM_STRIPE_API_KEY=API_KEY,
        METERSTREAM_STRIPE_MODE=mode,
        METERSTREAM_STRIPE_RATE=str(rate),
    )


def _workload(customers: int, per_customer: int, *, cancel_every: int = 7) -> tuple[list[tuple[str, bytes]], int, int]:
    """Interleaved records of many customers on two meters (one order-sensitive); every ``cancel_every``-th
    event of a customer is cancelled right after it. Returns (records, events, cancellations)."""
    records: list[tuple[str, bytes]] = []
    n_events = n_cancels = 0
    for i in range(per_customer):
        for c in range(customers):
            customer = f"cus_{c:03d}"
            meter = WINDOWED if i % 3 == 0 else RAW_SUM
            identifier = f"{customer}-{i}"
            records.append((customer, event(meter, customer, identifier, value=i + 1)))
            n_events += 1
            if i % cancel_every == cancel_every - 1:
                records.append((customer, cancel(meter, customer, identifier)))
                n_cancels += 1
    return records, n_events, n_cancels


def _ledgers(emulator: EmulatorControl) -> list[dict[str, Any]]:
    """The emulator's logs of the test meters that exist in it (the sink creates them on first use)."""
    ledgers = []
    for meter in (RAW_SUM, WINDOWED):
        try:
            ledgers.append(emulator.ledger(meter.event_name))
        except urllib.error.HTTPError as exc:
            if exc.code != 400:  # 400: no meter with that event_name (yet)
                raise
    return ledgers


def _delivered(emulator: EmulatorControl) -> tuple[int, int]:
    ledgers = _ledgers(emulator)
    events = sum(len(ledger["events"]) for ledger in ledgers)
    cancels = sum(len(ledger["cancellations"]) for ledger in ledgers)
    return events, cancels


def _check_delivery(emulator: EmulatorControl, produced: Produced, *, skipped: set[str] = frozenset()) -> None:  # type: ignore[assignment]
    """Exactly once, per-customer Kafka order, cancellations after their events."""
    ledgers = _ledgers(emulator)
    received = sorted((ev for ledger in ledgers for ev in ledger["events"]), key=lambda ev: ev["seq"])
    identifiers = [ev["identifier"] for ev in received]
    assert len(identifiers) == len(set(identifiers)), "an identifier was billed twice"
    seq_of = {ev["identifier"]: ev["seq"] for ev in received}
    cancellations = [c for ledger in ledgers for c in ledger["cancellations"]]
    cancel_seq: dict[str, int] = {}
    for c in cancellations:
        assert c["result"] in ("cancelled", "already_cancelled"), c
        cancel_seq.setdefault(c["identifier"], c["seq"])
    for customer, values in produced.by_customer.items():
        expected: list[tuple[str, str]] = [
            (v["kind"], v["identifier"]) for v in values if v is not None and v["identifier"] not in skipped
        ]
        # Stripe's receipt order of this customer's records (events and cancellations) is the Kafka order.
        got = sorted(
            [("event", i) for k, i in expected if k == "event"] + [("cancel", i) for k, i in expected if k == "cancel"],
            key=lambda r: seq_of[r[1]] if r[0] == "event" else cancel_seq[r[1]],
        )
        assert got == expected, f"order of {customer} differs from Kafka order"
    expected_events = {
        v["identifier"] for vs in produced.by_customer.values() for v in vs if v and v["kind"] == "event"
    }
    assert set(identifiers) == expected_events - skipped


def _stats(redis_client: redis.Redis, settings: Settings) -> dict[str, int]:
    raw = redis_client.hgetall(Keys(settings.redis_prefix).stats("sink"))
    return {k: int(v) for k, v in raw.items()}


def _produce_workload(
    settings: Settings, redis_client: redis.Redis, customers: int, per_customer: int
) -> tuple[Produced, int, int]:
    """Both test meters in the mirror and a ``_workload`` on the accepted topic: (produced, events,
    cancellations)."""
    for meter in (RAW_SUM, WINDOWED):
        put_meter(settings, redis_client, meter)
    records, n_events, n_cancels = _workload(customers=customers, per_customer=per_customer)
    return produce_accepted(settings, records), n_events, n_cancels


def _wait_all_delivered(emulator: EmulatorControl, n_events: int, n_cancels: int, sink: SinkProcess) -> None:
    wait_until(lambda: _delivered(emulator)[0] == n_events, 240, "every event reached Stripe", sink)
    wait_until(lambda: _delivered(emulator)[1] >= n_cancels, 60, "every cancellation reached Stripe", sink)


def _assert_all_committed(settings: Settings, produced: Produced) -> None:
    """The sink group's committed offset of every partition is past its last record."""
    assert committed_offsets(settings, sorted(produced.end_offsets)) == {
        p: last + 1 for p, last in produced.end_offsets.items()
    }


@pytest.mark.parametrize("mode", ["v2_stream", "v1"])
def test_everything_arrives_once_in_order_despite_429s_and_500s(
    mode: str,
    settings_factory: Callable[..., Settings],
    emulator: EmulatorControl,
    redis_client: redis.Redis,
    sink_factory: Callable[..., SinkProcess],
) -> None:
    settings = _settings(settings_factory, emulator, mode, rate=500)
    # One meter exists in Stripe already (found by event_name), the other is created by the sink.
    existing = stripe.StripeClient(API_KEY, base_addresses={"api": emulator.url}).v1.billing.meters.create(
        {"display_name": "API calls", "event_name": "api_calls", "default_aggregation": {"formula": "sum"}}
    )
    emulator.faults(fail_429=0.2, fail_500=0.05)
    per_customer = 12 if mode == "v1" else 30
    produced, n_events, n_cancels = _produce_workload(settings, redis_client, 15, per_customer)

    sink = sink_factory(settings)
    wait_until(lambda: _delivered(emulator) == (n_events, n_cancels), 240, "every record reached Stripe", sink)
    assert sink.terminate() == 0, sink.output()[-3000:]

    _check_delivery(emulator, produced)
    stats = emulator.stats()
    assert stats.get("fault_429", 0) > 0 and stats.get("fault_500", 0) > 0  # the faults did happen
    # Offsets: everything committed, after a graceful drain.
    _assert_all_committed(settings, produced)
    counters = _stats(redis_client, settings)
    assert counters[f"delivered:{mode}"] == n_events + n_cancels
    assert counters[f"retried:{mode}"] > 0
    assert counters.get(f"dead_lettered:{mode}", 0) == 0
    # The meter mapping: the existing Stripe meter was found, the other created with the same settings.
    emulator.faults(fail_429=0, fail_500=0)  # (for the test's own SDK call below)
    mapping = redis_client.hgetall(Keys(settings.redis_prefix).sink_stripe_meters)
    assert json.loads(mapping[RAW_SUM.id])["stripe_id"] == existing.id
    created = stripe.StripeClient(API_KEY, base_addresses={"api": emulator.url}).v1.billing.meters.retrieve(
        json.loads(mapping[WINDOWED.id])["stripe_id"]
    )
    assert created.event_name == "seats" and created.event_time_window == "hour"


@pytest.mark.parametrize("mode", ["v2_stream", "v1"])
def test_killed_mid_stream_and_restarted_loses_nothing_and_bills_nothing_twice(
    mode: str,
    settings_factory: Callable[..., Settings],
    emulator: EmulatorControl,
    redis_client: redis.Redis,
    sink_factory: Callable[..., SinkProcess],
) -> None:
    # Slow enough to be killed mid-stream, with requests in flight (latency) when it happens.
    settings = _settings(settings_factory, emulator, mode, rate=40 if mode == "v2_stream" else 150)
    emulator.faults(latency_ms=20)
    produced, n_events, n_cancels = _produce_workload(settings, redis_client, 20, 40 if mode == "v2_stream" else 10)

    first = sink_factory(settings)
    wait_until(lambda: _delivered(emulator)[0] >= n_events // 4, 180, "a quarter of the events arrived", first)
    first.kill()  # SIGKILL: no drain, no commit of what was in flight
    assert _delivered(emulator)[0] < n_events

    second = sink_factory(settings.replace(stripe_rate=400.0))
    _wait_all_delivered(emulator, n_events, n_cancels, second)
    assert second.terminate() == 0

    _check_delivery(emulator, produced)
    _assert_all_committed(settings, produced)


def test_sigterm_drains_commits_only_what_stripe_accepted_and_exits_0(
    settings_factory: Callable[..., Settings],
    emulator: EmulatorControl,
    redis_client: redis.Redis,
    sink_factory: Callable[..., SinkProcess],
) -> None:
    settings = _settings(settings_factory, emulator, "v2_stream", rate=20)
    emulator.faults(latency_ms=150)  # requests are in flight when the signal comes
    produced, n_events, n_cancels = _produce_workload(settings, redis_client, 20, 40)

    metrics_port = free_port()
    first = sink_factory(settings, "--metrics-port", str(metrics_port))
    wait_until(lambda: _delivered(emulator)[0] >= 100, 120, "some events arrived", first)
    # The per-process Prometheus endpoint (what compose and Kubernetes probe) counts what Stripe accepted.
    scraped = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
    delivered = re.search(r'^meterstream_sink_delivered_total\{mode="v2_stream"\} (\S+)$', scraped, re.M)
    assert delivered is not None, scraped[:2000]
    assert float(delivered.group(1)) >= 100
    assert first.terminate() == 0, first.output()[-3000:]
    assert "sink drained (complete)" in first.output()
    assert "\x1b" not in first.output() and "\x08" not in first.output()  # a log, not a terminal: no escapes
    events_now = _delivered(emulator)[0]
    assert events_now < n_events  # it really stopped mid-stream

    # Everything below each committed offset is in Stripe; something was committed.
    committed = committed_offsets(settings, sorted(produced.end_offsets))
    assert any(offset > 0 for offset in committed.values())
    in_stripe = {ev["identifier"] for ledger in _ledgers(emulator) for ev in ledger["events"]}
    cancelled = {c["identifier"] for ledger in _ledgers(emulator) for c in ledger["cancellations"]}
    for (partition, offset), value in produced.at.items():
        if offset < committed[partition]:
            assert value["identifier"] in (in_stripe if value["kind"] == "event" else cancelled)

    second = sink_factory(settings.replace(stripe_rate=400.0))
    emulator.faults(latency_ms=0)
    # (a cancellation done but not yet committed at the drain is sent again: "already_cancelled", harmless)
    _wait_all_delivered(emulator, n_events, n_cancels, second)
    assert second.terminate() == 0
    _check_delivery(emulator, produced)


def test_a_refused_api_key_stops_the_sink_with_exit_code_2_and_commits_nothing(
    settings_factory: Callable[..., Settings],
    emulator: EmulatorControl,
    redis_client: redis.Redis,
    sink_factory: Callable[..., SinkProcess],
) -> None:
    settings = _settings(settings_factory, emulator, "v2_stream", rate=50).replace(
        stripe_api_key=Secret("sk_test_not_the_right_one")
    )
    put_meter(settings, redis_client, RAW_SUM)
    produced = produce_accepted(settings, [("cus_a", event(RAW_SUM, "cus_a", "a-0", 1))])
    sink = sink_factory(settings)
    assert sink.wait(120) == 2
    output = sink.output()
    assert "METERSTREAM_STRIPE_API_KEY" in output and "not_the_right_one" not in output
    assert committed_offsets(settings, sorted(produced.end_offsets)) == {p: -1001 for p in produced.end_offsets}


def test_permanent_rejections_go_to_the_dlq_with_stripes_error(
    settings_factory: Callable[..., Settings],
    emulator: EmulatorControl,
    redis_client: redis.Redis,
    sink_factory: Callable[..., SinkProcess],
) -> None:
    settings = _settings(settings_factory, emulator, "v2_stream", rate=200)
    put_meter(settings, redis_client, RAW_SUM)
    bad_identifier = "x" * 101  # Stripe's limit is 100: the whole stream request is refused with a 400
    records = [("cus_a", event(RAW_SUM, "cus_a", f"a-{i}", 1)) for i in range(5)]
    records.insert(2, ("cus_a", event(RAW_SUM, "cus_a", bad_identifier, 1)))
    records.append(("cus_b", b"{not json"))
    records += [("cus_b", event(RAW_SUM, "cus_b", f"b-{i}", 1)) for i in range(3)]
    produced = produce_accepted(settings, records)

    sink = sink_factory(settings)
    wait_until(lambda: _delivered(emulator)[0] == 8, 120, "the good events arrived", sink)
    dlq = read_all(settings, Topic.STRIPE_DLQ, expect=2)
    assert sink.terminate() == 0

    _check_delivery(emulator, produced, skipped={bad_identifier})
    by_key = {m.key().decode(): json.loads(m.value()) for m in dlq}
    assert set(by_key) == {"cus_a", "cus_b"}
    rejected = by_key["cus_a"]
    assert rejected["record"] == json.loads(records[2][1])
    assert rejected["http_status"] == 400
    assert rejected["error"]["type"] == "invalid_request_error"
    assert rejected["error"]["param"] == "events[0][identifier]"
    assert rejected["request_id"].startswith("req_")
    assert abs(rejected["failed_at"] - time.time()) < 600  # Unix seconds
    assert by_key["cus_b"]["record"] == "{not json"
    assert by_key["cus_b"]["error"]["code"] == "invalid_accepted_record"
    counters = _stats(redis_client, settings)
    assert counters["dead_lettered:v2_stream"] == 2
    assert counters["delivered:v2_stream"] == 8
    _assert_all_committed(settings, produced)


def test_a_second_sink_joining_the_group_takes_over_partitions_without_loss_or_reordering(
    settings_factory: Callable[..., Settings],
    emulator: EmulatorControl,
    redis_client: redis.Redis,
    sink_factory: Callable[..., SinkProcess],
) -> None:
    settings = _settings(settings_factory, emulator, "v2_stream", rate=30)
    emulator.faults(latency_ms=30)  # requests in flight while the group rebalances
    produced, n_events, n_cancels = _produce_workload(settings, redis_client, 24, 40)

    first = sink_factory(settings)
    wait_until(lambda: _delivered(emulator)[0] >= n_events // 5, 120, "a fifth of the events arrived", first)
    second = sink_factory(settings)  # same group: the partitions are shared out again
    _wait_all_delivered(emulator, n_events, n_cancels, second)
    assert first.terminate() == 0 and second.terminate() == 0
    assert "is Stripe meter" in second.output()  # the newcomer did take partitions and send records

    _check_delivery(emulator, produced)
    _assert_all_committed(settings, produced)


def test_sink_without_an_api_key_refuses_to_start(settings: Settings) -> None:
    env = {k: v for k, v in settings.to_env().items() if k != "METERSTREAM_STRIPE_API_KEY"}
    result = CliRunner().invoke(main, ["sink"], env=env)
    assert result.exit_code == 2
    assert "METERSTREAM_STRIPE_API_KEY is not set" in result.output
