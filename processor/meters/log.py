"""The one reader of the ``meters`` topic: read from the beginning to a caught-up point, then follow.

Every component that needs meters goes through :class:`MetersLog`: the processor (follows the topic and
judges events with :attr:`MetersLog.book`), ``rebuild`` and ``errors`` (one read), and the registry
(``sync`` rebuilds the Redis mirror from :attr:`MetersLog.latest`; the gateway and the sink read that
mirror). So there is one rule for "caught up", one treatment of malformed records, and one place where
the history compaction removed is put back (:class:`~processor.meters.book.MeterBook`).

**Caught up** (:meth:`MetersLog.caught_up`, the only definition): for every partition,

1. the fetcher has reached the end of the partition at least once since the read began (librdkafka's
   partition-EOF event: the position equals the high watermark of a Fetch response), and
2. the position is at or past the high watermark ListOffsets reported when the log was opened, and
3. the position is at or past the high watermark of the latest Fetch response (no record fetched and
   not yet read).

On Apache Kafka (2) alone would do. The embedded Tansu broker answers ListOffsets with the base offset
of the partition's last record batch plus one, a lower bound (checked: 26 records whose last batch
started at offset 23 gave 24), while the high watermark in its Fetch responses is exact; (1) and (3)
rest on the Fetch answer, so the rule holds on both without waiting for quiet periods. ListOffsets is
asked once, before the partitions are assigned: with a fetch in flight Tansu answers it only after the
fetch's long poll (~0.5 s), too slow for every batch. Following (:meth:`MetersLog.follow`) therefore
reuses the opening answer for (2) and reads only what the fetcher already reports, costing no request.

Records are taken in offset order. A record that is not a meter (bad JSON, wrong shape, key different
from the meter id) is skipped with a warning: one bad record must not stop a reader. A tombstone (no
value; nothing in meterstream writes one) removes the meter from :attr:`MetersLog.latest` but not its
history from the book, so events already judged stay judged the same way.

The consumer is assigned every partition itself (no group join, which takes seconds on Tansu) under a
throwaway group id, and never commits.
"""

from __future__ import annotations

import logging
import time
import uuid
from types import TracebackType
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from processor.config import Settings
from processor.errors import TopicError
from processor.kafka.consume import new_consumer
from processor.meters.book import MeterBook
from processor.meters.model import Meter
from processor.meters.topic import meters_topic

if TYPE_CHECKING:
    from confluent_kafka import Consumer

__all__ = ["FOLLOW_WAIT_S", "MetersLog", "load_meters", "read_meters_topic"]

log = logging.getLogger(__name__)

#: The longest :meth:`MetersLog.follow` waits for records the fetcher reported but has not handed over.
FOLLOW_WAIT_S = 5.0
_BATCH = 500


class MetersLog:
    """The ``meters`` topic read into a :class:`MeterBook` (every version, for judging events by received
    time) and :attr:`latest` (each meter's latest record, in order of first appearance).

    The constructor does no I/O; :meth:`catch_up` opens the consumer. Not thread-safe.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = meters_topic(settings)
        self.book = MeterBook()
        self.latest: dict[str, Meter] = {}
        self._consumer: Consumer | None = None
        self._floor: dict[int, int] = {}  # partition -> ListOffsets high watermark when opened
        self._position: dict[int, int] = {}  # partition -> next offset to read
        self._reached_end: set[int] = set()  # partitions whose fetcher reported EOF since opening

    # ---- reading ----------------------------------------------------------------------------------
    def catch_up(self, timeout: float = 30.0) -> int:
        """Read until :meth:`caught_up`; returns how many meter records were added. Raises
        :class:`TopicError` when the topic is missing or cannot be read that far within ``timeout`` s."""
        deadline = time.monotonic() + timeout
        consumer = self._open(timeout)
        added = 0
        try:
            while True:
                added += self._take(consumer.consume(_BATCH, 0.1))
                if self.caught_up():
                    return added
                if time.monotonic() > deadline:
                    behind = {p: self._position.get(p) for p in sorted(self._floor) if not self._at_end(consumer, p)}
                    raise TopicError(f"could not read {self.topic} to its end within {timeout:.0f} s (at {behind})")
        except KafkaException as exc:
            raise TopicError(f"cannot read {self.topic}: {exc}") from exc

    def follow(self, wait: float = FOLLOW_WAIT_S) -> int:
        """Read what arrived since the last call, up to the end the fetcher last reported; returns how
        many meter records were added. Never blocks longer than ``wait`` s (records reported but not yet
        handed over); on an idle topic it returns at once. Call :meth:`catch_up` first."""
        consumer = self._consumer
        if consumer is None:
            raise TopicError(f"{self.topic} is not open: catch_up() first")
        deadline = time.monotonic() + wait
        try:
            added = self._take(consumer.consume(_BATCH, 0))
            while not self.caught_up():
                if time.monotonic() > deadline:
                    log.warning("%s: records reported by the broker did not arrive within %.0f s", self.topic, wait)
                    break
                added += self._take(consumer.consume(_BATCH, 0.05))
        except KafkaException as exc:
            raise TopicError(f"cannot read {self.topic}: {exc}") from exc
        return added

    def caught_up(self) -> bool:
        """Whether every partition has been read to its end (the module docstring's rule)."""
        consumer = self._consumer
        return consumer is not None and all(self._at_end(consumer, p) for p in self._floor)

    def _at_end(self, consumer: Consumer, partition: int) -> bool:
        position = self._position.get(partition)
        if partition not in self._reached_end or position is None:
            return False
        fetched_end = consumer.get_watermark_offsets(TopicPartition(self.topic, partition), cached=True)[1]
        return position >= self._floor[partition] and position >= fetched_end

    # ---- internals --------------------------------------------------------------------------------
    def _open(self, timeout: float) -> Consumer:
        if self._consumer is not None:
            return self._consumer
        consumer = new_consumer(
            self.settings, f"meterstream-meters-{uuid.uuid4().hex[:12]}", **{"enable.partition.eof": True}
        )
        try:
            metadata = consumer.list_topics(self.topic, timeout=timeout).topics.get(self.topic)
            if metadata is None or metadata.error is not None or not metadata.partitions:
                raise TopicError(f"topic {self.topic} does not exist (run `meterstream topics ensure`)")
            partitions = sorted(metadata.partitions)
            # Asked before assigning: with a fetch in flight, Tansu answers only after its long poll.
            for p in partitions:
                self._floor[p] = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout)[1]
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in partitions])
        except KafkaException as exc:
            consumer.close()
            raise TopicError(f"cannot read {self.topic}: {exc}") from exc
        except BaseException:
            consumer.close()
            raise
        self._consumer = consumer
        return consumer

    def _take(self, messages: list[Message]) -> int:
        added = 0
        for msg in messages:
            partition, offset = msg.partition() or 0, msg.offset() or 0
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    self._reached_end.add(partition)
                    self._position[partition] = max(self._position.get(partition, 0), offset)
                elif err.fatal():
                    raise TopicError(f"cannot read {self.topic}: {err.str()}")
                else:
                    log.warning("reading %s: %s", self.topic, err.str())
                continue
            self._position[partition] = offset + 1
            added += self._apply(msg, partition, offset)
        return added

    def _apply(self, msg: Message, partition: int, offset: int) -> int:
        raw_key = msg.key()
        key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else str(raw_key)
        value = msg.value()
        if value is None:
            self.latest.pop(key, None)
            return 0
        try:
            meter = Meter.from_json(value)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            log.warning("skipping malformed record at %s[%d]@%d: %s", self.topic, partition, offset, exc)
            return 0
        if meter.id != key:
            log.warning(
                "skipping record at %s[%d]@%d: key %r but meter id %r", self.topic, partition, offset, key, meter.id
            )
            return 0
        self.book.add(msg.timestamp()[1], meter)
        self.latest[key] = meter
        return 1

    def close(self) -> None:
        """Close the consumer. The book and :attr:`latest` stay; a later :meth:`catch_up` reads the
        topic again from the beginning (records already in the book change nothing)."""
        consumer, self._consumer = self._consumer, None
        self._floor.clear()
        self._position.clear()
        self._reached_end.clear()
        if consumer is not None:
            consumer.close()

    def __enter__(self) -> MetersLog:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def load_meters(settings: Settings, timeout: float = 30.0) -> tuple[MeterBook, dict[str, Meter]]:
    """One read to the caught-up point: the book (every version, compaction repaired) and the latest
    version of each meter by id. For readers that judge once (``rebuild``, ``errors``)."""
    with MetersLog(settings) as meters:
        meters.catch_up(timeout)
        return meters.book, meters.latest


def read_meters_topic(settings: Settings, timeout: float = 30.0) -> dict[str, Meter]:
    """Every meter on the topic, latest record per id, in order of first appearance (the registry's
    ``sync``). Raises :class:`TopicError` if the topic is missing or unreadable within ``timeout`` s."""
    return load_meters(settings, timeout)[1]
