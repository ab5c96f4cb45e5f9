"""The Kafka side of the registry: the compacted ``meters`` topic, written with acknowledgement and read to
its end.

Reading "to the end" is the delicate part. Tansu answers ListOffsets high watermarks wrongly (it has
reported 1 for a partition holding 5 records), while the high watermark in its Fetch responses, which
librdkafka reports as a partition-EOF event, has been right. So a read is finished when every partition
has reported EOF at or beyond the ListOffsets answer (a lower bound on any broker), with no record since,
and nothing new has arrived for a short idle period. Should ListOffsets ever answer *too high*, a longer
idle period after EOF ends the read anyway, with a warning, instead of waiting for records that do not
exist.

The reader assigns partitions itself (no group join: joins take seconds on Tansu) under a throwaway group
id that never commits.
"""

from __future__ import annotations

import logging
import time
import uuid

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from processor.config import Settings
from processor.errors import KafkaDeliveryError, TopicError
from processor.kafka.clients import consumer_config
from processor.kafka.produce import AckedProducer
from processor.meters.model import Meter
from topics import Topic

__all__ = ["METERS_TOPIC", "MeterTopicWriter", "meters_topic", "read_meters_topic"]

log = logging.getLogger(__name__)

METERS_TOPIC = Topic.METERS
#: How long the broker may take to acknowledge a meter record. Kept well below the registry's lock TTL,
#: so a writer never holds the lock past its expiry while waiting for Kafka.
DELIVERY_TIMEOUT_S = 15.0
#: Quiet time after the end is reached before a read is considered complete.
IDLE_S = 0.25
#: Quiet time after which EOF alone ends the read, even if ListOffsets promised more records.
SUSPICIOUS_IDLE_S = 2.0


def meters_topic(settings: Settings) -> str:
    return settings.topic_prefix + METERS_TOPIC


class MeterTopicWriter:
    """Writes meters to the topic with an idempotent producer, one acknowledged record at a time.

    The producer is created on first use (the constructor does no I/O) and reused afterwards.
    """

    def __init__(self, settings: Settings, delivery_timeout: float = DELIVERY_TIMEOUT_S) -> None:
        self._topic = meters_topic(settings)
        self._timeout = delivery_timeout
        self._producer = AckedProducer(settings, config={"message.timeout.ms": int(delivery_timeout * 1000)})

    def write(self, meter: Meter) -> None:
        """Produce ``meter`` keyed by its id and wait for the broker's acknowledgement.

        Raises :class:`KafkaDeliveryError` when the record was not acknowledged (the caller must then
        treat the change as not made).
        """
        try:
            self._producer.produce_and_wait(
                self._topic, meter.to_json().encode("utf-8"), meter.id, timeout=self._timeout + 5.0
            )
        except KafkaDeliveryError as exc:
            raise KafkaDeliveryError(f"meter {meter.id} was not written to {self._topic}: {exc}") from exc

    def close(self) -> None:
        self._producer.close(self._timeout)


def read_meters_topic(settings: Settings, timeout: float = 30.0) -> dict[str, Meter]:
    """Every meter on the compacted topic, latest record per id, in order of first appearance.

    Records that are not a meter (bad JSON, wrong shape, key different from the meter id) are skipped
    with a warning: one bad record must not make the registry unreadable. Raises :class:`TopicError` if
    the topic is missing or cannot be read to its end within ``timeout`` seconds.
    """
    topic = meters_topic(settings)
    consumer = Consumer(
        consumer_config(
            settings,
            f"meterstream-meters-reader-{uuid.uuid4().hex[:12]}",
            **{"enable.partition.eof": True},
        )
    )
    try:
        return _read(consumer, topic, timeout)
    except KafkaException as exc:
        raise TopicError(f"cannot read {topic}: {exc}") from exc
    finally:
        consumer.close()


def _read(consumer: Consumer, topic: str, timeout: float) -> dict[str, Meter]:
    deadline = time.monotonic() + timeout
    metadata = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        raise TopicError(f"topic {topic} does not exist (run `meterstream topics ensure`)")
    partitions = sorted(metadata.partitions)
    # A lower bound on where each partition ends (Tansu may answer too low; see the module docstring).
    floor = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout)[1] for p in partitions}
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])

    meters: dict[str, Meter] = {}
    eof_at: dict[int, int] = {}  # partition -> offset of its latest EOF, dropped when a record follows
    last_activity = time.monotonic()
    while True:
        now = time.monotonic()
        if now > deadline:
            raise TopicError(f"could not read {topic} to its end within {timeout:.0f} s")
        for msg in consumer.consume(500, 0.1):
            last_activity = time.monotonic()
            partition, offset = msg.partition() or 0, msg.offset() or 0
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    eof_at[partition] = offset
                    continue
                raise TopicError(f"cannot read {topic}: {err.str()}")
            eof_at.pop(partition, None)
            _apply_record(meters, msg)
        quiet = time.monotonic() - last_activity
        if len(eof_at) < len(partitions) or quiet < IDLE_S:
            continue
        if all(eof_at[p] >= floor[p] for p in partitions):
            return meters
        if quiet >= SUSPICIOUS_IDLE_S:
            log.warning("%s: ListOffsets promised offsets %s, fetch ended at %s; trusting fetch", topic, floor, eof_at)
            return meters


def _apply_record(meters: dict[str, Meter], msg: Message) -> None:
    raw_key = msg.key()
    key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else str(raw_key)
    value = msg.value()
    if value is None:  # a tombstone: nothing in meterstream writes one, but honour it
        meters.pop(key, None)
        return
    try:
        meter = Meter.from_json(value)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning("skipping malformed record at %s/%s@%s: %s", msg.topic(), msg.partition(), msg.offset(), exc)
        return
    if meter.id != key:
        log.warning("skipping record at offset %s: key %r but meter id %r", msg.offset(), key, meter.id)
        return
    meters[key] = meter
