"""The meter registry against the real (embedded) broker and Redis: topic first, Redis mirror second."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from processor.config import Settings
from processor.embedded import free_port
from processor.errors import KafkaDeliveryError, MeterConflictError, MeterNotFoundError, MeterValidationError
from processor.kafka import AckedProducer
from processor.meters import Meter, MeterRegistry, read_meters_topic
from processor.meters.registry import RESERVATION_PREFIX
from processor.meters.topic import MeterTopicWriter
from processor.state.keys import Keys
from topics import Topic, topic_name

pytestmark = pytest.mark.integration


def params(event_name: str = "api_call", **extra: Any) -> dict[str, Any]:
    return {
        "display_name": f"{event_name} meter",
        "event_name": event_name,
        "default_aggregation": {"formula": "sum"},
    } | extra


@pytest.fixture
def registry(settings: Settings) -> Iterator[MeterRegistry]:
    with MeterRegistry(settings) as reg:
        yield reg


def drop_prefix(client: redis.Redis, settings: Settings) -> None:
    """Delete this test's keys only: other tests share the server."""
    for key in client.scan_iter(match=f"{settings.redis_prefix}:*"):
        client.delete(key)


def test_create_writes_the_topic_then_the_mirror(
    settings: Settings, registry: MeterRegistry, read_topic: Callable[..., list[Any]], redis_client: redis.Redis
) -> None:
    meter = registry.create(
        params(
            "tokens",
            event_time_window="hour",
            customer_mapping={"event_payload_key": "account", "type": "by_id"},
            value_settings={"event_payload_key": "n"},
        )
    )
    assert meter.id.startswith("mtr_") and len(meter.id) == 28
    assert (meter.event_time_window, meter.customer_key, meter.value_key) == ("hour", "account", "n")
    assert meter.created == meter.updated > 0 and meter.status == "active"

    records = read_topic(settings, Topic.METERS, expect=1)
    # The stored record: Stripe's object plus the status history, effective from the record's timestamp.
    assert [(m.key().decode(), json.loads(m.value())) for m in records] == [(meter.id, meter.to_record())]
    assert meter.status_history == ((records[0].timestamp()[1], "active"),)
    assert meter.created == records[0].timestamp()[1] // 1000
    keys = Keys(settings.redis_prefix)
    assert json.loads(redis_client.hget(keys.meters, meter.id)) == meter.to_record()  # type: ignore[arg-type]
    assert redis_client.hget(keys.meter_names, "tokens") == meter.id
    assert registry.get(meter.id) == meter
    assert registry.find_by_event_name("tokens") == meter
    assert registry.find_by_event_name("other") is None


def test_invalid_params_write_nothing(settings: Settings, registry: MeterRegistry, redis_client: redis.Redis) -> None:
    with pytest.raises(MeterValidationError) as err:
        registry.create(params(event_name="x" * 101))
    assert err.value.param == "event_name"
    assert redis_client.exists(Keys(settings.redis_prefix).meter_names) == 0


def test_get_unknown_id(registry: MeterRegistry) -> None:
    with pytest.raises(MeterNotFoundError) as err:
        registry.get("mtr_missing")
    assert (err.value.http_status, err.value.code, err.value.param) == (404, "resource_missing", "id")


def test_list_pages_newest_first(registry: MeterRegistry) -> None:
    made = [registry.create(params(f"e{i}")) for i in range(5)]
    registry.deactivate(made[1].id)
    everything, more = registry.list(limit=100)
    assert more is False and {m.id for m in everything} == {m.id for m in made}
    assert everything == sorted(everything, key=lambda m: (m.created, m.id), reverse=True)

    first, more = registry.list(limit=2)
    assert (first, more) == (everything[:2], True)
    second, more = registry.list(limit=2, starting_after=first[-1].id)
    assert (second, more) == (everything[2:4], True)
    third, more = registry.list(limit=2, starting_after=second[-1].id)
    assert (third, more) == (everything[4:], False)
    back, more = registry.list(limit=2, ending_before=third[0].id)
    assert (back, more) == (everything[2:4], True)

    inactive, _ = registry.list(status="inactive")
    assert [m.id for m in inactive] == [made[1].id]
    assert len(registry.list(status="active")[0]) == 4


def test_rename_changes_only_the_display_name(
    settings: Settings, registry: MeterRegistry, read_topic: Callable[..., list[Any]]
) -> None:
    meter = registry.create(params("calls", event_time_window="day"))
    renamed = registry.rename(meter.id, "Calls (v2)")
    assert renamed.display_name == "Calls (v2)" and renamed.updated >= meter.updated
    before, after = meter.to_dict(), renamed.to_dict()
    assert {k for k in before if before[k] != after[k]} <= {"display_name", "updated"}
    assert registry.get(meter.id) == renamed
    assert registry.update(meter.id, {}) == renamed
    with pytest.raises(MeterValidationError) as err:
        registry.update(meter.id, {"event_time_window": "hour"})
    assert err.value.param == "event_time_window"

    values = [json.loads(m.value()) for m in read_topic(settings, Topic.METERS, expect=2)]
    assert [v["display_name"] for v in values] == ["calls meter", "Calls (v2)"]
    assert read_meters_topic(settings)[meter.id] == renamed


def test_renaming_to_the_same_name_writes_no_record(settings: Settings, registry: MeterRegistry) -> None:
    meter = registry.create(params("same"))
    assert registry.rename(meter.id, meter.display_name) == meter
    with pytest.raises(MeterNotFoundError):
        registry.rename("mtr_nope", "x")


def test_deactivate_and_reactivate(
    settings: Settings, registry: MeterRegistry, read_topic: Callable[..., list[Any]]
) -> None:
    meter = registry.create(params("storage", default_aggregation={"formula": "last"}))
    off = registry.deactivate(meter.id)
    assert off.status == "inactive" and off.deactivated_at is not None and off.deactivated_at >= meter.created
    assert off.to_dict()["status_transitions"] == {"deactivated_at": off.deactivated_at}
    assert registry.deactivate(meter.id) == off  # already inactive: unchanged, no new record
    on = registry.reactivate(meter.id)
    assert on.status == "active" and on.deactivated_at is None
    assert registry.get(meter.id) == on

    values = [json.loads(m.value()) for m in read_topic(settings, Topic.METERS, expect=3)]
    assert [v["status"] for v in values] == ["active", "inactive", "active"]
    assert [v["status_transitions"]["deactivated_at"] for v in values] == [None, off.deactivated_at, None]
    # Each status change is in the history at its record's timestamp, so the last record holds them all.
    stamps = [m.timestamp()[1] for m in read_topic(settings, Topic.METERS, expect=3)]
    assert on.status_history == tuple(zip(stamps, ("active", "inactive", "active"), strict=True))
    assert values[-1]["status_history"] == [{"status": s, "since_ms": t} for t, s in on.status_history]


def test_event_name_belongs_to_one_meter_even_when_inactive(registry: MeterRegistry) -> None:
    meter = registry.create(params("dup"))
    registry.deactivate(meter.id)
    with pytest.raises(MeterConflictError) as err:
        registry.create(params("dup", default_aggregation={"formula": "count"}))
    assert (err.value.param, err.value.code, err.value.http_status) == ("event_name", "resource_already_exists", 400)
    assert meter.id in err.value.message
    assert len(registry.list()[0]) == 1


def test_concurrent_creates_of_one_event_name_have_one_winner(
    settings: Settings, read_topic: Callable[..., list[Any]]
) -> None:
    clients = [MeterRegistry(settings) for _ in range(4)]
    barrier = threading.Barrier(len(clients))
    won: list[Meter] = []
    lost: list[MeterConflictError] = []

    def create(client: MeterRegistry, i: int) -> None:
        barrier.wait()
        try:
            won.append(client.create(params("race", display_name=f"client {i}")))
        except MeterConflictError as exc:
            lost.append(exc)

    threads = [threading.Thread(target=create, args=(c, i)) for i, c in enumerate(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for c in clients:
        c.close()
    assert len(won) == 1 and len(lost) == len(clients) - 1
    records = read_topic(settings, Topic.METERS, expect=1, idle=2.0)
    assert [m.key().decode() for m in records] == [won[0].id]
    with MeterRegistry(settings) as reg:
        assert reg.find_by_event_name("race") == won[0]


def test_failed_produce_releases_the_reservation(
    settings: Settings, registry: MeterRegistry, redis_client: redis.Redis
) -> None:
    registry.create(params("existing"))  # the mirror is not empty, so no topic read happens first
    broker_down = settings.replace(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    with MeterRegistry(broker_down, delivery_timeout=1.0) as down:
        with pytest.raises(KafkaDeliveryError):
            down.create(params("lost"))
    assert redis_client.hget(Keys(settings.redis_prefix).meter_names, "lost") is None
    assert registry.create(params("lost")).event_name == "lost"


def test_sync_releases_a_reservation_left_by_a_crash(
    settings: Settings, registry: MeterRegistry, redis_client: redis.Redis
) -> None:
    registry.create(params("other"))
    keys = Keys(settings.redis_prefix)
    redis_client.hset(keys.meter_names, "crashed", RESERVATION_PREFIX + "mtr_neverproduced")
    with pytest.raises(MeterConflictError) as err:
        registry.create(params("crashed"))
    assert "meters sync" in err.value.message
    report = registry.sync()
    assert report.released == ["crashed"] and report.meters == 1
    assert registry.create(params("crashed")).event_name == "crashed"


def test_sync_finishes_a_create_that_crashed_after_the_ack(
    settings: Settings, registry: MeterRegistry, redis_client: redis.Redis
) -> None:
    registry.create(params("other"))
    keys = Keys(settings.redis_prefix)
    acked = Meter(id="mtr_acked", display_name="Acked", event_name="acked", formula="count", created=1, updated=1)
    redis_client.hset(keys.meter_names, "acked", RESERVATION_PREFIX + acked.id)
    writer = MeterTopicWriter(settings)
    writer.write(acked)
    writer.close()
    report = registry.sync()
    assert report.updated == ["mtr_acked"] and report.released == []
    assert redis_client.hget(keys.meter_names, "acked") == "mtr_acked"
    assert registry.get("mtr_acked") == acked


def test_sync_rebuilds_a_deleted_mirror(settings: Settings, registry: MeterRegistry, redis_client: redis.Redis) -> None:
    made = [registry.create(params(f"s{i}")) for i in range(3)]
    latest = [registry.rename(made[0].id, "renamed"), registry.deactivate(made[1].id), made[2]]
    drop_prefix(redis_client, settings)
    with pytest.raises(MeterNotFoundError):
        registry.get(made[0].id)
    report = registry.sync()
    assert report.meters == 3 and sorted(report.updated) == sorted(m.id for m in made)
    assert sorted(registry.all(), key=lambda m: m.id) == sorted(latest, key=lambda m: m.id)
    assert registry.find_by_event_name("s1") == latest[1]
    assert registry.sync().updated == []  # a second sync finds nothing to do


def test_create_on_a_wiped_mirror_still_sees_the_topic(
    settings: Settings, registry: MeterRegistry, redis_client: redis.Redis
) -> None:
    meter = registry.create(params("kept"))
    drop_prefix(redis_client, settings)
    with pytest.raises(MeterConflictError):
        registry.create(params("kept"))
    assert registry.get(meter.id) == meter  # the create's topic read restored the mirror


def test_sync_restores_meters_a_lost_topic_no_longer_has(
    settings_factory: Callable[..., Settings], read_topic: Callable[..., list[Any]]
) -> None:
    before = settings_factory()
    with MeterRegistry(before) as reg:
        meter = reg.create(params("survivor"))
    # The broker restarted empty (ephemeral Tansu) while Redis kept its data: a new, empty topic.
    after = before.replace(topic_prefix=before.topic_prefix + "restarted.")
    settings_factory(METERSTREAM_TOPIC_PREFIX=after.topic_prefix)
    with MeterRegistry(after) as reg:
        report = reg.sync()
        assert report.restored == [meter.id]
        assert reg.get(meter.id) == meter
    assert [json.loads(m.value()) for m in read_topic(after, Topic.METERS, expect=1)] == [meter.to_record()]
    with MeterRegistry(after) as reg:
        assert reg.sync(prune=True).removed == []


def test_sync_prune_drops_mirror_entries_missing_from_the_topic(
    settings: Settings, registry: MeterRegistry, redis_client: redis.Redis
) -> None:
    registry.create(params("real"))
    ghost = Meter(id="mtr_ghost", display_name="g", event_name="ghost", formula="sum")
    redis_client.hset(Keys(settings.redis_prefix).meters, ghost.id, ghost.to_json())
    report = registry.sync(prune=True)
    assert report.removed == ["mtr_ghost"]
    with pytest.raises(MeterNotFoundError):
        registry.get("mtr_ghost")


def test_read_meters_topic_skips_malformed_records(settings: Settings, registry: MeterRegistry) -> None:
    meter = registry.create(params("good"))
    producer = AckedProducer(settings)
    meters = topic_name(Topic.METERS, settings.topic_prefix)
    producer.produce(meters, key="mtr_bad", value=b"{not json")
    producer.produce(meters, key="mtr_other", value=meter.to_json())  # key != id
    assert producer.flush(10) == 0
    assert read_meters_topic(settings) == {meter.id: meter}
