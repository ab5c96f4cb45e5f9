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
from typing import TYPE_CHECKING

from confluent_kafka import TopicPartition

from processor.config import Settings
from processor.errors import StateError
from processor.kafka.consume import new_consumer
from topics import Topic, topic_name

if TYPE_CHECKING:
    from confluent_kafka import Consumer

__all__ = ["EventFetcher", "Fetched"]

#: (received time in ms, record value) by (partition, offset)
Fetched = dict[tuple[int, int], tuple[int, bytes | None]]

#: How long to wait for one record. A record not read by then is left out of the answer: it may not be on
#: the topic yet (another processor claimed the event and has not produced it), and the processor then reads
#: the cancellation again a moment later (runner.py, held-back cancellations).
FETCH_TIMEOUT_S = 2.0
#: Wanted offsets of one partition this close together are read in one pass rather than by a seek each.
MAX_GAP = 20_000


class EventFetcher:
    """Reads records of ``<prefix>meter-events`` by position. Its consumer joins no group (assign only)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = topic_name(Topic.EVENTS, settings.topic_prefix)
        self._consumer: Consumer | None = None

    def __call__(self, positions: Iterable[tuple[int, int]]) -> Fetched:
        """The records at ``positions`` that could be read within FETCH_TIMEOUT_S. Every partition is read at
        once, from its first wanted offset through runs of wanted offsets less than MAX_GAP apart (a
        cancellation's event is usually near other cancelled events), then the next run after a seek."""
        runs: dict[int, list[list[int]]] = {}
        for part, offset in sorted(set(positions)):
            part_runs = runs.setdefault(part, [])
            if part_runs and offset - part_runs[-1][-1] <= MAX_GAP:
                part_runs[-1].append(offset)
            else:
                part_runs.append([offset])
        found: Fetched = {}
        if not runs:
            return found
        if self._consumer is None:
            self._consumer = new_consumer(self.settings, f"{self.settings.processor_group}-fetch", log_level=3)
        consumer = self._consumer
        while runs:
            current = {part: part_runs.pop(0) for part, part_runs in runs.items()}
            runs = {part: part_runs for part, part_runs in runs.items() if part_runs}
            todo = {(part, off) for part, offsets in current.items() for off in offsets}
            last = {part: offsets[-1] for part, offsets in current.items()}
            consumer.assign([TopicPartition(self.topic, part, offsets[0]) for part, offsets in current.items()])
            deadline = time.monotonic() + FETCH_TIMEOUT_S
            paused: list[TopicPartition] = []
            while last and time.monotonic() < deadline:
                for msg in consumer.consume(5000, 0.2):
                    part_or_none, got = msg.partition(), msg.offset()
                    if msg.error() is not None or part_or_none not in last or got is None:
                        continue
                    part = int(part_or_none)
                    if (part, got) in todo:
                        todo.discard((part, got))
                        found[(part, got)] = (msg.timestamp()[1], msg.value())
                    if got >= last[part]:
                        del last[part]
                        paused.append(TopicPartition(self.topic, part))
                        consumer.pause(paused[-1:])
            if paused:  # a pause outlives the assignment: without this, the partition is never read again
                consumer.resume(paused)
            gone = [(p, o) for p, o in todo if p not in last]  # read past them: not on the topic any more
            if gone:
                raise StateError(f"{self.topic} records {sorted(gone)[:5]} are gone (retention or compaction?)")
            consumer.unassign()
        return found

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
