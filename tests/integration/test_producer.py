"""MeterEventProducer against the real broker: what lands on the topics, and failures surfaced."""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from processor import EventValidationError, KafkaDeliveryError, MeterEventProducer, Settings
from processor.embedded import free_port
from tests.fixtures import ReadTopic
from topics import Topic, topic_name

pytestmark = pytest.mark.integration


def test_send_puts_the_event_on_meter_events_keyed_by_customer(settings: Settings, read_topic: ReadTopic) -> None:
    before = int(time.time())
    with MeterEventProducer(settings) as producer:
        ident = producer.send("api_requests", {"stripe_customer_id": "cus_1", "value": 25})
    after = int(time.time())

    [msg] = read_topic(settings, Topic.EVENTS, expect=1)
    assert msg.topic() == topic_name(Topic.EVENTS, settings.topic_prefix)
    assert msg.key() == b"cus_1"
    assert uuid.UUID(ident).version == 4
    value = json.loads(msg.value())
    assert value == {
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_1", "value": 25},
        "identifier": ident,
        "timestamp": value["timestamp"],
    }
    assert before <= value["timestamp"] <= after
    # compact JSON, UTF-8
    assert msg.value() == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def test_explicit_identifier_and_timestamp_are_kept(settings: Settings, read_topic: ReadTopic) -> None:
    with MeterEventProducer(settings) as producer:
        ident = producer.send(
            "api_requests", {"value": "7", "région": "é"}, identifier="evt-1", timestamp=1_700_000_000, customer="cus_2"
        )
    assert ident == "evt-1"
    [msg] = read_topic(settings, Topic.EVENTS, expect=1)
    assert msg.key() == b"cus_2"
    assert json.loads(msg.value()) == {
        "event_name": "api_requests",
        "payload": {"value": "7", "région": "é", "stripe_customer_id": "cus_2"},
        "identifier": "evt-1",
        "timestamp": 1_700_000_000,
    }


def test_one_customers_events_share_a_partition_in_order(settings: Settings, read_topic: ReadTopic) -> None:
    with MeterEventProducer(settings) as producer:
        sent = [producer.send("e", {"stripe_customer_id": "cus_9", "value": i}) for i in range(20)]
    messages = read_topic(settings, Topic.EVENTS, expect=20)
    assert len({m.partition() for m in messages}) == 1
    assert [json.loads(m.value())["identifier"] for m in sorted(messages, key=lambda m: m.offset())] == sent


def test_cancel_goes_to_adjustments_keyed_by_identifier(settings: Settings, read_topic: ReadTopic) -> None:
    with MeterEventProducer(settings) as producer:
        producer.cancel("api_requests", "evt-1")
    [msg] = read_topic(settings, Topic.ADJUSTMENTS, expect=1)
    assert msg.key() == b"evt-1"
    assert json.loads(msg.value()) == {
        "event_name": "api_requests",
        "type": "cancel",
        "cancel": {"identifier": "evt-1"},
    }


def test_invalid_input_raises_and_produces_nothing(settings: Settings, read_topic: ReadTopic) -> None:
    with MeterEventProducer(settings) as producer:
        for event_name, payload in [
            ("", {"stripe_customer_id": "cus_1"}),
            ("e" * 101, {"stripe_customer_id": "cus_1"}),
            ("e", {"stripe_customer_id": "cus_1", "value": 1.5}),
            ("e", {"stripe_customer_id": "cus_1", "nested": {"a": 1}}),
            ("e", {"value": 1}),
        ]:
            with pytest.raises(EventValidationError):
                producer.send(event_name, payload)
        with pytest.raises(EventValidationError):
            producer.send("e", {"stripe_customer_id": "cus_1"}, identifier="x" * 101)
        with pytest.raises(EventValidationError):
            producer.cancel("e", "")
        marker = producer.send("marker", {"stripe_customer_id": "cus_1"})
    # Read until idle: only the valid marker may be there.
    messages = read_topic(settings, Topic.EVENTS)
    assert [json.loads(m.value())["identifier"] for m in messages] == [marker]


def test_a_full_local_queue_is_waited_out_not_lost(settings: Settings, read_topic: ReadTopic) -> None:
    # A queue of 5 records: producing 200 in a loop overflows it many times (BufferError inside).
    config = {"queue.buffering.max.messages": 5, "linger.ms": 50}
    with MeterEventProducer(settings, kafka_config=config) as producer:
        sent = [producer.send("e", {"stripe_customer_id": f"cus_{i % 7}", "value": i}) for i in range(200)]
    messages = read_topic(settings, Topic.EVENTS, expect=200)
    assert sorted(json.loads(m.value())["identifier"] for m in messages) == sorted(sent)


def test_delivery_failure_is_raised_by_flush(settings_factory: Callable[..., Settings]) -> None:
    # Topics never created, and the producer does not auto-create them: the broker answers
    # UNKNOWN_TOPIC_OR_PART once metadata propagation (2 s here) gives up.
    settings = settings_factory(ensure=False)
    producer = MeterEventProducer(settings, kafka_config={"topic.metadata.propagation.max.ms": 2000})
    sent = [producer.send("e", {"stripe_customer_id": "cus_1", "value": i}) for i in range(3)]
    with pytest.raises(KafkaDeliveryError) as info:
        producer.flush(30)
    text = str(info.value)
    assert "3 record(s) were not delivered" in text
    assert "Unknown topic or partition" in text
    assert topic_name(Topic.EVENTS, settings.topic_prefix) in text
    assert all(ident in text for ident in sent)
    # Reported once; the producer then has nothing left in flight.
    assert producer.flush(5) == 0
    producer.close()


def test_delivery_failure_is_raised_by_the_next_send(settings_factory: Callable[..., Settings]) -> None:
    settings = settings_factory(ensure=False)
    producer = MeterEventProducer(settings, kafka_config={"topic.metadata.propagation.max.ms": 1000})
    first = producer.send("e", {"stripe_customer_id": "cus_1"})
    deadline = time.monotonic() + 30
    raised: KafkaDeliveryError | None = None
    while raised is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            producer.send("e", {"stripe_customer_id": "cus_1"})
        except KafkaDeliveryError as exc:
            raised = exc
    assert raised is not None, "a failed delivery was never surfaced by send()"
    assert first in str(raised)
    # The loop's other sends may have failed too (reported above or on this flush): only clean up.
    with contextlib.suppress(KafkaDeliveryError):
        producer.close(30)


def test_on_delivery_callback_owns_reports(settings: Settings, settings_factory: Callable[..., Settings]) -> None:
    reports: list[tuple[Any, Any]] = []
    with MeterEventProducer(settings, on_delivery=lambda err, msg: reports.append((err, msg))) as producer:
        producer.send("e", {"stripe_customer_id": "cus_1"}, identifier="ok-1")
    assert [(err, msg.key()) for err, msg in reports] == [(None, b"cus_1")]

    reports.clear()
    missing = settings_factory(ensure=False, METERSTREAM_TOPIC_PREFIX=f"missing{uuid.uuid4().hex[:8]}.")
    producer = MeterEventProducer(
        missing,
        on_delivery=lambda err, msg: reports.append((err, msg)),
        kafka_config={"topic.metadata.propagation.max.ms": 1000},
    )
    producer.send("e", {"stripe_customer_id": "cus_1"}, identifier="lost-1")
    assert producer.flush(30) == 0  # no raise: the callback was told
    [(err, msg)] = reports
    assert err is not None and "Unknown topic" in err.str()
    assert json.loads(msg.value())["identifier"] == "lost-1"


def test_close_refuses_to_drop_records_still_in_flight(settings: Settings) -> None:
    down = settings.replace(kafka_bootstrap=f"127.0.0.1:{free_port()}")
    producer = MeterEventProducer(down, kafka_config={"message.timeout.ms": 3000})
    producer.send("e", {"stripe_customer_id": "cus_1"}, identifier="stuck-1")
    with pytest.raises(KafkaDeliveryError, match=re.escape("1 record(s) were not acknowledged within 0.5s")):
        producer.close(0.5)
    assert len(producer) == 1
    # Once the message times out, the failure itself is reported.
    with pytest.raises(KafkaDeliveryError, match="stuck-1"):
        producer.close(30)
    producer.close(1)
