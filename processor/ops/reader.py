"""Reading topics for the ops tools: every partition assigned directly, bounded by time and by offsets.

Why not a consumer group: a group join takes seconds (on Tansu ~23 s with default timeouts), commits
offsets nobody wants, and would rebalance a live group if the id were shared. An ops read assigns every
partition itself under a throwaway group id and never commits.

Where a read starts: ``offsets_for_times(since)`` is only a *hint*. Kafka answers the first offset whose
timestamp is at or after ``since`` (every earlier record is older, so skipping them loses nothing);
Tansu answers 0 whatever the time (SPEC §11). Either way every record is also *filtered* by its
timestamp, so a wrong hint costs time, never correctness.

Where a read ends, per partition: at an explicit stop offset (exclusive) when one is given — the
processor's stored progress, which is exact — else at the partition-EOF event. (Tansu's ListOffsets
high watermark is wrong, but the high watermark in its Fetch responses, which librdkafka reports as
EOF, is right.) A read that makes no progress for ``stall_s`` seconds fails instead of hanging.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, Message, TopicPartition

from processor.aggregator.engine import RawRecord
from processor.config import Settings
from processor.errors import TopicError
from processor.kafka.consume import new_consumer

if TYPE_CHECKING:
    from confluent_kafka import Consumer

__all__ = ["RangeRead", "committed_offsets", "to_raw"]

log = logging.getLogger(__name__)

#: How long a read may go without a record or an EOF before it is declared stuck.
STALL_S = 60.0
_BATCH = 5000


def _key(base: str, partition: int) -> str:
    return f"{base}/{partition}"


@dataclass
class RangeRead:
    """One bounded read of some catalog topics (base names; the prefix is applied here).

    :param since_ms: drop records whose timestamp is before this (and use it as the seek hint).
    :param until_ms: drop records whose timestamp is at or after this (the read still goes to the end:
        timestamps are not ordered within a partition).
    :param starts: explicit start offsets, ``"<base>/<partition>" → offset`` (override the hint).
    :param stops: exclusive end offsets, ``"<base>/<partition>" → offset``; partitions without one are
        read to EOF.
    :param on_consumed: called with the number of records consumed (kept or filtered) after each batch.
    :param on_total: called once the partitions are assigned, with the number of records the read will
        consume up to the stop offsets (partitions read to EOF may add more; ``None`` when no partition has
        a stop offset).

    After :meth:`records` is exhausted, :attr:`ends` holds the next offset of every partition, i.e.
    exactly what was covered: a later read can continue from there.
    """

    settings: Settings
    bases: Sequence[str]
    since_ms: int | None = None
    until_ms: int | None = None
    starts: Mapping[str, int] = field(default_factory=dict)
    stops: Mapping[str, int] = field(default_factory=dict)
    on_consumed: Callable[[int], None] | None = None
    on_total: Callable[[int | None], None] | None = None
    stall_s: float = STALL_S
    ends: dict[str, int] = field(default_factory=dict)
    first_offsets: dict[str, int] = field(default_factory=dict)
    partitions: dict[str, int] = field(default_factory=dict)
    total: int | None = None

    def messages(self) -> Iterator[list[Message]]:
        """Batches of kept messages, each partition in offset order."""
        consumer = new_consumer(
            self.settings, f"meterstream-ops-{uuid.uuid4().hex[:12]}", **{"enable.partition.eof": True}
        )
        try:
            yield from self._run(consumer)
        except KafkaException as exc:
            raise TopicError(f"cannot read {', '.join(self.bases)}: {exc}") from exc
        finally:
            consumer.close()

    def records(self) -> Iterator[list[RawRecord]]:
        """Batches of kept records as the engine takes them."""
        for batch in self.messages():
            yield [to_raw(m, self.settings.topic_prefix) for m in batch]

    # ---- internals --------------------------------------------------------------------------------
    def _assignment(self, consumer: Consumer) -> list[TopicPartition]:
        prefix = self.settings.topic_prefix
        tps: list[TopicPartition] = []
        for base in self.bases:
            name = prefix + base
            meta = consumer.list_topics(name, timeout=15).topics.get(name)
            if meta is None or meta.error is not None or not meta.partitions:
                raise TopicError(f"topic {name} does not exist (run `meterstream topics ensure`)")
            self.partitions[base] = len(meta.partitions)
            tps.extend(TopicPartition(name, p, OFFSET_BEGINNING) for p in sorted(meta.partitions))
        hinted: dict[tuple[str, int], int] = {}
        if self.since_ms is not None:
            query = [TopicPartition(tp.topic, tp.partition, self.since_ms) for tp in tps]
            for tp in consumer.offsets_for_times(query, timeout=15):
                if tp.error is None and tp.offset >= 0:
                    hinted[(tp.topic, tp.partition)] = tp.offset
        total = 0
        for tp in tps:
            key = _key(tp.topic[len(prefix) :], tp.partition)
            if key in self.starts:
                tp.offset = self.starts[key]
            elif (tp.topic, tp.partition) in hinted:
                tp.offset = hinted[(tp.topic, tp.partition)]
            else:
                tp.offset = consumer.get_watermark_offsets(tp, timeout=15)[0]
            stop = self.stops.get(key)
            if stop is not None:
                total += max(0, stop - tp.offset)
        # Partitions without a stop are read to EOF and their size is unknown here (Tansu's ListOffsets high
        # watermark is wrong): the total counts the bounded ones, which for rebuild are all that ever held
        # a record the processor saw (the others are empty or new), so a progress bar still has a length.
        self.total = total if any(_key(t.topic[len(prefix) :], t.partition) in self.stops for t in tps) else None
        if self.on_total is not None:
            self.on_total(self.total)
        return tps

    def _run(self, consumer: Consumer) -> Iterator[list[Message]]:
        prefix = self.settings.topic_prefix
        tps = self._assignment(consumer)
        open_parts: dict[str, TopicPartition] = {}
        for tp in tps:
            key = _key(tp.topic[len(prefix) :], tp.partition)
            self.ends[key] = tp.offset
            stop = self.stops.get(key)
            if stop is None or tp.offset < stop:
                open_parts[key] = tp
        consumer.assign(list(open_parts.values()))
        last_progress = time.monotonic()
        while open_parts:
            kept: list[Message] = []
            consumed = 0
            for msg in consumer.consume(_BATCH, 0.1):
                topic, part = msg.topic(), msg.partition()
                assert topic is not None and part is not None
                key = _key(topic[len(prefix) :], part)
                if key not in open_parts:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        last_progress = time.monotonic()
                        self._at_eof(consumer, open_parts, key, msg.offset() or 0)
                    elif err.fatal():
                        raise TopicError(f"cannot read {topic}[{part}]: {err.str()}")
                    continue
                offset = msg.offset()
                assert offset is not None
                stop = self.stops.get(key)
                if stop is not None and offset >= stop:
                    self._close(consumer, open_parts, key)
                    continue
                consumed += 1
                self.first_offsets.setdefault(key, offset)
                self.ends[key] = offset + 1
                if stop is not None and offset + 1 >= stop:
                    self._close(consumer, open_parts, key)
                ts = msg.timestamp()[1]
                if self.since_ms is not None and ts < self.since_ms:
                    continue
                if self.until_ms is not None and ts >= self.until_ms:
                    continue
                kept.append(msg)
            if consumed:
                last_progress = time.monotonic()
                if self.on_consumed is not None:
                    self.on_consumed(consumed)
            if kept:
                yield kept
            if open_parts and time.monotonic() - last_progress > self.stall_s:
                raise TopicError(
                    f"reading stalled for {self.stall_s:.0f} s before the end of {', '.join(sorted(open_parts))}"
                )

    def _at_eof(self, consumer: Consumer, open_parts: dict[str, TopicPartition], key: str, eof_offset: int) -> None:
        stop = self.stops.get(key)
        if stop is None:
            self.ends[key] = max(self.ends.get(key, 0), eof_offset)
            self._close(consumer, open_parts, key)
        elif eof_offset >= stop:
            self.ends[key] = max(self.ends.get(key, 0), stop)
            self._close(consumer, open_parts, key)

    @staticmethod
    def _close(consumer: Consumer, open_parts: dict[str, TopicPartition], key: str) -> None:
        tp = open_parts.pop(key, None)
        if tp is not None:
            consumer.pause([tp])


def committed_offsets(settings: Settings, group: str, bases: Sequence[str]) -> dict[str, int]:
    """The offsets ``group`` committed to Kafka, ``"<base>/<partition>" → offset`` (partitions without a
    commit are left out). Only fetches them: the consumer never subscribes, so the group is not joined."""
    consumer = new_consumer(settings, group)
    try:
        tps: list[TopicPartition] = []
        for base in bases:
            name = settings.topic_prefix + base
            meta = consumer.list_topics(name, timeout=15).topics.get(name)
            if meta is not None and meta.error is None:
                tps.extend(TopicPartition(name, p) for p in sorted(meta.partitions))
        out: dict[str, int] = {}
        for tp in consumer.committed(tps, timeout=15) if tps else []:
            if tp.error is None and tp.offset >= 0:
                out[_key(tp.topic[len(settings.topic_prefix) :], tp.partition)] = tp.offset
        return out
    except KafkaException as exc:
        raise TopicError(f"cannot read the committed offsets of {group}: {exc}") from exc
    finally:
        consumer.close()


def to_raw(msg: Message, prefix: str) -> RawRecord:
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return RawRecord(topic[len(prefix) :], partition, offset, msg.timestamp()[1], msg.value())
