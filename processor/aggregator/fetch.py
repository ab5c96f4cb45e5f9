"""Read ``meter-events`` records back by position: what a cancellation needs of its event.

A claim (claim.lua) remembers only an event's received time and record position, not its customer,
timestamp and value (that keeps a remembered identifier under 40 bytes of Redis). When a cancellation
resolves to an event the engine has not seen in this process (its recent-events cache: after a restart,
or an event another processor judged), the engine reads the event's record here and validates it again
with the meter version of its received time, which gives exactly the values judged the first time.
Cancellations are rare, and most hit the cache, so this is one seek per record, batched per call.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from confluent_kafka import Consumer, TopicPartition

from processor.config import Settings
from processor.errors import StateError
from processor.kafka.clients import consumer_config

__all__ = ["EventFetcher", "Fetched"]

#: (received time in ms, record value) by (partition, offset)
Fetched = dict[tuple[int, int], tuple[int, bytes | None]]

#: How long to wait for one record. A record not read by then is left out of the answer: it may not be on
#: the topic yet (another processor claimed the event and has not produced it), and the processor then reads
#: the cancellation again a moment later (runner.py, held-back cancellations).
FETCH_TIMEOUT_S = 2.0


class EventFetcher:
    """Reads records of ``<prefix>meter-events`` by position. Its consumer joins no group (assign only)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = settings.topic_prefix + "meter-events"
        self._consumer: Consumer | None = None

    def __call__(self, positions: Iterable[tuple[int, int]]) -> Fetched:
        wanted = sorted(set(positions))
        found: Fetched = {}
        if not wanted:
            return found
        if self._consumer is None:
            self._consumer = Consumer(
                consumer_config(self.settings, f"{self.settings.processor_group}-fetch", **{"log_level": 3})
            )
        consumer = self._consumer
        todo = set(wanted)
        for part, offset in wanted:
            if (part, offset) not in todo:
                continue  # read on the way to an earlier one
            consumer.assign([TopicPartition(self.topic, part, offset)])
            deadline = time.monotonic() + FETCH_TIMEOUT_S
            while (part, offset) in todo:
                if time.monotonic() > deadline:
                    todo.discard((part, offset))
                    break
                for msg in consumer.consume(500, 0.5):
                    if msg.error() is not None or msg.partition() != part:
                        continue
                    got = msg.offset()
                    assert got is not None
                    if got > offset and (part, offset) in todo:
                        raise StateError(f"{self.topic}[{part}]@{offset} is gone (retention or compaction?)")
                    if (part, got) in todo:
                        todo.discard((part, got))
                        found[(part, got)] = (msg.timestamp()[1], msg.value())
        consumer.unassign()
        return found

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
