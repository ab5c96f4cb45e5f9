"""The processor's Kafka edge: consume batches, run the engine, produce outputs, store progress.

Order of a batch (each step only after the previous one succeeded):
1. consume up to ``processor_batch`` records from ``meter-events`` and ``meter-event-adjustments``;
2. read any new meter records (so a meter created while running takes effect);
3. engine: claim step, apply step, customers index (Redis, idempotent by record position);
4. produce accepted records and errors and wait until the broker acknowledged all of them;
5. store the next offsets in Redis (the truth for resuming) and commit them to Kafka (for lag tools).

A crash between any two steps replays the batch from the stored progress: steps 3 and 4 repeat with the
same decisions (the claim step remembers which record holds an identifier; the apply step skips offsets
already applied), so Redis sees every record exactly once and the accepted topic at least once (the sink
and Stripe deduplicate by identifier).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, KafkaError, Message, TopicPartition

from processor import metrics
from processor.aggregator.engine import ADJUSTMENTS, EVENTS, Engine, Output, RawRecord
from processor.aggregator.fetch import EventFetcher
from processor.aggregator.validate import Source
from processor.config import Settings
from processor.errors import KafkaDeliveryError
from processor.kafka.consume import new_consumer
from processor.kafka.produce import AckedProducer
from processor.logs import activity_report
from processor.meters.log import MetersLog
from processor.state.connect import sync_redis
from processor.state.store import StateStore
from topics import Topic, topic_name

if TYPE_CHECKING:
    from confluent_kafka import Consumer

__all__ = ["Processor", "partition_lags"]

log = logging.getLogger(__name__)

#: How often librdkafka reports statistics, hence each partition's lag.
LAG_INTERVAL_MS = 5000

#: How long the processor may take at start to read the ``meters`` topic to its caught-up point.
METERS_START_TIMEOUT_S = 60.0

#: Pause after holding back cancellations whose event is not out yet (see Processor._defer_early_cancels).
DEFER_PAUSE_S = 0.05


def partition_lags(stats_json: str, assigned: set[tuple[str, int]]) -> list[tuple[tuple[str, int], int]]:
    """((topic, partition), lag) of the ``assigned`` partitions whose lag librdkafka's statistics know.
    ``consumer_lag`` is -1 until both the high watermark and a committed offset are known: left out."""
    try:
        topics = json.loads(stats_json).get("topics") or {}
    except ValueError:
        return []
    found = []
    for topic, data in topics.items():
        for key, part in (data.get("partitions") or {}).items():
            tp = (topic, int(key))
            lag = part.get("consumer_lag", -1)
            if tp in assigned and isinstance(lag, int) and lag >= 0:
                found.append((tp, lag))
    return found


class Processor:
    """One processor instance (a consumer-group member). Constructing it does no I/O."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.prefix = settings.topic_prefix
        self.topics = {self.prefix + EVENTS: EVENTS, self.prefix + ADJUSTMENTS: ADJUSTMENTS}
        self._meters_log = MetersLog(settings)
        self.meters = self._meters_log.book
        self.stats: Counter[str] = Counter()
        #: seconds spent per stage over all batches (decode, validate, claim, apply, produce, commit)
        self.stage_s: defaultdict[str, float] = defaultdict(float)
        self._consumer: Consumer | None = None
        self._producer: AckedProducer | None = None
        self._store: StateStore | None = None
        self._engine: Engine | None = None
        self._fetcher: EventFetcher | None = None
        self._delivery_errors: list[str] = []
        self._assigned: set[tuple[str, int]] = set()
        self._hold_back: dict[str, int] = {}
        self._last_offsets: dict[tuple[str, int], int] = {}
        self._deferred_logged = 0.0
        self.batches = 0

    # ---- setup -------------------------------------------------------------------------------------
    def _setup(self) -> Engine:
        if self._engine is not None:
            return self._engine
        s = self.settings
        client = sync_redis(s)
        self._store = StateStore(client, s.redis_prefix, s.usage_retention_days)
        self._producer = AckedProducer(s)
        self._load_meters(initial=True)
        self._consumer = new_consumer(
            s,
            s.processor_group,
            **{
                "partition.assignment.strategy": "roundrobin",
                # librdkafka's statistics carry each partition's lag (high watermark of the fetch responses
                # minus the committed offset): exported as meterstream_processor_lag_records.
                "statistics.interval.ms": LAG_INTERVAL_MS,
                "stats_cb": self._on_stats,
            },
        )
        self._consumer.subscribe(list(self.topics), on_assign=self._on_assign, on_revoke=self._on_revoke)
        self._fetcher = EventFetcher(s)
        self._engine = Engine(self._store, self.meters, self._fetcher)
        self._engine.defer_unresolved = True
        return self._engine

    def _load_meters(self, initial: bool = False) -> int:
        """Read new records of the ``meters`` topic through the one meters reader (processor/meters/log.py):
        at start to its caught-up point, before each batch what the broker has reported since (no request,
        and no wait when nothing is new). Returns how many meter records were added."""
        if initial:
            return self._meters_log.catch_up(METERS_START_TIMEOUT_S)
        return self._meters_log.follow()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        assert self._store is not None
        stored = self._store.load_progress(self.settings.processor_group)
        missing = [tp for tp in partitions if f"{self.topics[tp.topic]}/{tp.partition}" not in stored]
        committed: dict[str, int] = {}
        if missing:
            try:
                for tp in consumer.committed([TopicPartition(t.topic, t.partition) for t in missing], timeout=10):
                    if tp.offset is not None and tp.offset >= 0:
                        committed[f"{self.topics[tp.topic]}/{tp.partition}"] = tp.offset
            except Exception as exc:  # no committed offsets known: nothing to hold back
                log.warning("cannot read committed offsets: %s", exc)
        for tp in partitions:
            key = f"{self.topics[tp.topic]}/{tp.partition}"
            # Redis progress is the truth: it moves with the state in the same batch. With no stored
            # progress (new deployment, or Redis lost) start from the beginning: replaying is exact.
            tp.offset = stored.get(key, OFFSET_BEGINNING)
            if key in committed:
                # Redis lost its state but Kafka remembers how far we got: re-derive everything, but do not
                # produce again what the accepted topic already holds (the sink would re-send events older
                # than Stripe's 24 h identifier window).
                self._hold_back[key] = committed[key]
                log.warning(
                    "no stored progress for %s but %d records were committed before: re-deriving the "
                    "state from the beginning without re-emitting them",
                    key,
                    committed[key],
                )
            self._assigned.add((tp.topic, tp.partition))
        log.info("assigned %s", ", ".join(f"{tp.topic}[{tp.partition}]@{tp.offset}" for tp in partitions))
        consumer.assign(partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._assigned.discard((tp.topic, tp.partition))
            metrics.clear_lag(self.topics[tp.topic], tp.partition)
        log.info("revoked %d partitions", len(partitions))

    def _on_stats(self, stats_json: str) -> None:
        """Lag per assigned partition from librdkafka's statistics (served from ``consume``, this thread)."""
        for partition, lag in partition_lags(stats_json, self._assigned):
            metrics.set_lag(self.topics[partition[0]], partition[1], lag)

    # ---- the loop ----------------------------------------------------------------------------------
    def poll_batch(self, timeout: float = 0.5) -> int:
        """Consume and fully process one batch; returns how many records it held (0 when idle)."""
        engine = self._setup()
        assert self._consumer is not None
        msgs = self._consumer.consume(self.settings.processor_batch, timeout)
        records: list[RawRecord] = []
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error: %s", err)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            assert topic is not None and partition is not None and offset is not None
            records.append(RawRecord(self.topics[topic], partition, offset, msg.timestamp()[1], msg.value()))
        if not records:
            self._load_meters()
            return 0
        started = time.perf_counter()
        self._load_meters()
        out = engine.process(records)
        deferred = self._defer_early_cancels(out, records)
        t0 = time.perf_counter()
        self._emit(out)
        t1 = time.perf_counter()
        self._commit(out)
        out.stages["produce"] += t1 - t0
        out.stages["commit"] += time.perf_counter() - t1
        for stage, seconds in out.stages.items():
            self.stage_s[stage] += seconds
        if deferred:
            self._rewind(deferred)
        metrics.observe_batch(out.stats, time.perf_counter() - started, len(records))
        metrics.note_processed(records)
        self.stats.update(out.stats)
        self.stats["records"] += len(records)
        self.batches += 1
        return len(records)

    def _defer_early_cancels(self, out: Output, records: list[RawRecord]) -> dict[str, int]:
        """Hold back cancellations whose event is not on the accepted topic yet; returns the adjustment
        partitions to re-read (``"<topic>/<partition>"`` → offset of the first held-back record).

        With several processors, the event a cancellation targets may have been claimed by another
        processor that has not produced its accepted record yet (its batch is in flight, or it was killed
        between its claim step and its output). Emitting the cancellation now would put it ahead of its
        event on the accepted topic, and Stripe would refuse it (the event unknown) and bill the event.
        An event's accepted record is on the topic once the stored progress of its partition is past it
        (progress is stored after the output was acknowledged), or when it is in this very batch (events
        are emitted before cancellations). Otherwise the cancellation and what follows it in its partition
        are not emitted and not committed: they are read again and re-derived (the claim and apply steps
        are idempotent by record position), as after a crash, until the event is out. Event partitions are
        never held back, so the event's own processor (or the next owner of its partition) gets there.
        A cancellation whose event record the engine could not read back (``out.unresolved``: it is not on
        the topic yet) is held back the same way; it was neither applied nor emitted.
        """
        if not out.cancel_targets and not out.unresolved:
            return {}
        assert self._store is not None
        batch: dict[tuple[str, int], tuple[int, int]] = {}
        for rec in records:
            lo, hi = batch.get((rec.topic, rec.partition), (rec.offset, rec.offset))
            batch[(rec.topic, rec.partition)] = (min(lo, rec.offset), max(hi, rec.offset))
        progress: dict[str, int] | None = None
        deferred: dict[str, int] = {}
        for by, _ in out.unresolved:  # the event's record could not be read: not out yet
            key = f"{by.topic}/{by.partition}"
            deferred[key] = min(deferred.get(key, by.offset), by.offset)
        for by, ev in out.cancel_targets:
            lo, hi = batch.get((ev.topic, ev.partition), (-1, -2))
            if lo <= ev.offset <= hi:
                continue
            if progress is None:
                progress = self._store.load_progress(self.settings.processor_group)
            if progress.get(f"{ev.topic}/{ev.partition}", 0) > ev.offset:
                continue
            key = f"{by.topic}/{by.partition}"
            deferred[key] = min(deferred.get(key, by.offset), by.offset)
        if not deferred:
            return {}

        def kept(src: Source) -> bool:
            first = deferred.get(f"{src.topic}/{src.partition}")
            return first is None or src.offset < first

        acc = [(rec, src) for rec, src in zip(out.accepted, out.accepted_from, strict=True) if kept(src)]
        err = [(rec, src) for rec, src in zip(out.errors, out.errors_from, strict=True) if kept(src)]
        out.accepted, out.accepted_from = [a for a, _ in acc], [s for _, s in acc]
        out.errors, out.errors_from = [e for e, _ in err], [s for _, s in err]
        out.next_offsets.update(deferred)
        self.stats["cancel:deferred"] += 1
        if time.monotonic() - self._deferred_logged > 30:
            self._deferred_logged = time.monotonic()
            log.info("holding back cancellations whose event is not on the accepted topic yet: %s", deferred)
        return deferred

    def _rewind(self, deferred: dict[str, int]) -> None:
        """Read held-back partitions again from their first held-back record, after a short pause (the
        event's processor needs a moment; a dead one needs a rebalance)."""
        assert self._consumer is not None
        for key, offset in deferred.items():
            base, part = key.rsplit("/", 1)
            tp = TopicPartition(self.prefix + base, int(part), offset)
            if (tp.topic, tp.partition) in self._assigned:
                self._consumer.seek(tp)
        time.sleep(DEFER_PAUSE_S)

    def _emit(self, out: Output) -> None:
        assert self._producer is not None
        accepted = topic_name(Topic.ACCEPTED, self.prefix)
        errors = topic_name(Topic.ERRORS, self.prefix)
        hold = self._hold_back
        for (key, value), src in zip(out.accepted, out.accepted_from, strict=True):
            if not hold or src.offset >= hold.get(f"{src.topic}/{src.partition}", -1):
                self._produce(accepted, key, value)
        for (ekey, value), src in zip(out.errors, out.errors_from, strict=True):
            if not hold or src.offset >= hold.get(f"{src.topic}/{src.partition}", -1):
                self._produce(errors, ekey, value)
        remaining = self._producer.flush(60)
        if remaining:
            raise KafkaDeliveryError(f"{remaining} output records were not acknowledged within 60 s")
        if self._delivery_errors:
            first, n = self._delivery_errors[0], len(self._delivery_errors)
            self._delivery_errors.clear()
            raise KafkaDeliveryError(f"{n} output records failed delivery; first error: {first}")

    def _produce(self, topic: str, key: str | None, value: bytes) -> None:
        assert self._producer is not None
        self._producer.produce(topic, value, key, on_delivery=self._on_delivery)

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._delivery_errors.append(str(err))

    def _commit(self, out: Output) -> None:
        assert self._store is not None and self._consumer is not None
        self._store.store_progress(self.settings.processor_group, out.next_offsets)
        self._store.bump_stats("processor", dict(out.stats))
        tps = []
        for key, offset in out.next_offsets.items():
            base, part = key.rsplit("/", 1)
            tps.append(TopicPartition(self.prefix + base, int(part), offset))
        self._last_offsets.update({(tp.topic, tp.partition): tp.offset for tp in tps})
        try:
            self._consumer.commit(offsets=tps, asynchronous=True)
        except Exception as exc:  # the Kafka commit is informational (lag tools); Redis holds the truth
            log.debug("offset commit failed: %s", exc)

    def run(self, stop: threading.Event) -> None:
        """Process until ``stop`` is set; the batch in progress always completes."""
        self._setup()
        last_report = time.monotonic()
        reported, reported_batches, idle = Counter(self.stats), self.batches, False
        while not stop.is_set():
            self.poll_batch()
            if time.monotonic() - last_report > 30:
                line, idle = activity_report(
                    reported, self.stats, self.batches - reported_batches, time.monotonic() - last_report, was_idle=idle
                )
                if line is not None:
                    log.info("%s", line)
                reported, reported_batches, last_report = Counter(self.stats), self.batches, time.monotonic()

    def drain(self, idle: float = 2.0, timeout: float = 120.0) -> int:
        """Process until nothing arrived for ``idle`` seconds after partitions were assigned (tests, bench).

        Returns how many records were processed.
        """
        self._setup()
        deadline = time.monotonic() + timeout
        total = 0
        quiet_since: float | None = None
        while time.monotonic() < deadline:
            n = self.poll_batch(0.2)
            total += n
            if n:
                quiet_since = None
            elif self._assigned:
                quiet_since = quiet_since or time.monotonic()
                if time.monotonic() - quiet_since >= idle:
                    return total
        raise TimeoutError(f"processor did not go idle within {timeout}s ({total} records processed)")

    def close(self) -> None:
        if self._consumer is not None:
            if self._last_offsets:
                try:  # a last synchronous commit, so lag tools (and a later re-derivation) see where we stopped
                    self._consumer.commit(
                        offsets=[TopicPartition(t, p, o) for (t, p), o in self._last_offsets.items()],
                        asynchronous=False,
                    )
                except Exception as exc:
                    log.debug("final offset commit failed: %s", exc)
            self._consumer.close()
        self._meters_log.close()
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None
        if self._producer is not None:
            self._producer.close(30)
        if self._store is not None:
            self._store.client.close()
        self._consumer = self._producer = None
        if self._engine is not None:
            self._engine.close()
        self._engine = None
