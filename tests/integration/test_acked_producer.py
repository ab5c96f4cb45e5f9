"""processor.kafka.produce.AckedProducer, the one acknowledged-produce loop, against the real broker:
per-message callbacks, a full queue waited out, bounded waits, one error mapping. Tests that use the broker
are marked ``integration`` by tests/conftest.py (through their fixtures); the ones against an unreachable
address need no service and run in ``make unit``."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError, Message

from processor.config import Settings, load_settings
from processor.errors import KafkaDeliveryError
from processor.kafka.produce import AckedProducer, RecordTooLargeError
from tests.fixtures import ReadTopic
from topics import Topic, topic_name


def test_each_record_gets_its_own_callback(settings: Settings, read_topic: ReadTopic) -> None:
    topic = topic_name(Topic.EVENTS, settings.topic_prefix)
    producer = AckedProducer(settings)
    answers: dict[int, tuple[KafkaError | None, int | None]] = {}

    def answer_for(i: int) -> Callable[[KafkaError | None, Message], None]:
        return lambda err, msg: answers.__setitem__(i, (err, msg.offset()))

    for i in range(50):
        producer.produce(topic, f"v{i}".encode(), f"k{i % 5}", on_delivery=answer_for(i))
    assert producer.flush(30) == 0
    assert sorted(answers) == list(range(50))
    assert all(err is None and offset is not None for err, offset in answers.values())
    assert sorted(m.value() for m in read_topic(settings, Topic.EVENTS, expect=50)) == sorted(
        f"v{i}".encode() for i in range(50)
    )


def _one_by_one(producer: AckedProducer, records: list[tuple[str, bytes]]) -> None:
    for topic, value in records:
        producer.produce(topic, value, "k")


def _in_bulk(producer: AckedProducer, records: list[tuple[str, bytes]]) -> None:
    assert producer.produce_many((topic, value, "k", None) for topic, value in records) == len(records)


#: The two ways to queue records: each waits out a full queue and maps errors the same way.
PATHS = pytest.mark.parametrize("produce", [_one_by_one, _in_bulk], ids=["produce", "produce_many"])


@PATHS
def test_a_full_local_queue_is_waited_out(
    settings: Settings, read_topic: ReadTopic, produce: Callable[[AckedProducer, list[tuple[str, bytes]]], None]
) -> None:
    topic = topic_name(Topic.EVENTS, settings.topic_prefix)
    producer = AckedProducer(settings, config={"queue.buffering.max.messages": 3, "linger.ms": 20})
    produce(producer, [(topic, str(i).encode()) for i in range(100)])
    assert producer.close(30) == 0
    assert len(read_topic(settings, Topic.EVENTS, expect=100)) == 100


@PATHS
def test_a_queue_that_stays_full_is_an_error_not_a_hang(
    produce: Callable[[AckedProducer, list[tuple[str, bytes]]], None],
) -> None:
    # A broker that is not there: nothing is ever acknowledged, so the 2-record queue never drains.
    settings = load_settings({"METERSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:9"})
    producer = AckedProducer(settings, config={"queue.buffering.max.messages": 2}, queue_wait_s=0.5)
    produce(producer, [("nowhere", b"1"), ("nowhere", b"2")])
    with pytest.raises(KafkaDeliveryError, match="stayed full"):
        produce(producer, [("nowhere", b"3")])


def test_produce_and_wait_is_bounded_and_says_what_failed(settings: Settings) -> None:
    ok = AckedProducer(settings).produce_and_wait(
        topic_name(Topic.METERS, settings.topic_prefix), b"{}", "mtr_1", timeout=30
    )
    assert ok.offset() is not None and ok.key() == b"mtr_1"
    unreachable = AckedProducer(load_settings({"METERSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:9"}))
    with pytest.raises(KafkaDeliveryError, match="not acknowledged"):
        unreachable.produce_and_wait(Topic.METERS, b"{}", "mtr_1", timeout=0.5)


@PATHS
def test_a_record_over_the_size_limit_is_its_own_error(
    settings: Settings, produce: Callable[[AckedProducer, list[tuple[str, bytes]]], None]
) -> None:
    producer = AckedProducer(settings, config={"message.max.bytes": 10_000})
    with pytest.raises(RecordTooLargeError) as info:
        produce(producer, [(topic_name(Topic.EVENTS, settings.topic_prefix), b"x" * 20_000)])
    assert info.value.size == 20_000 and isinstance(info.value, KafkaDeliveryError)
