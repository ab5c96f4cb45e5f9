"""``meterstream rebuild``: recompute aggregates from the topics into a shadow prefix, diff, swap atomically.

The exact guarantee (docs/operations.md, "rebuild"): after ``--swap``, for every selected (meter,
customer) pair, every hour / day / minute bucket whose start lies in the range, and the window state
behind it, equals what the processor computes from the records on the topics — as if it had run over
them without incident — and the live processor, running all along, continues from that state.

How:

1. **Range.** ``[from, to)`` is widened to whole UTC days. Records whose event time can fall in it were
   received at ``from - 5 min`` or later; the identifier and cancellation rules look 24 h around each
   record, and a duplicate's holder may itself have been judged against an older record, so the read
   starts at ``from - 49 h`` (context) and goes to the cut-off. Buckets outside the range are computed
   from partial context and are never compared or swapped.
2. **Cut-off.** Per partition, the processor's stored progress (``Keys.progress``: every record before
   it is applied to the live state); where Redis holds none (Redis lost), the offsets the processor
   group committed to Kafka (it commits after each batch is applied and emitted); else the partition's
   end. ``set_progress`` writes the Kafka-derived ones back as stored progress (only where still
   missing), so a processor started afterwards resumes there instead of re-reading — and re-emitting
   to the sink — everything from the beginning.
3. **Shadow.** The processor's own :class:`~processor.aggregator.engine.Engine` runs over those records
   into the shadow prefix ``<prefix>-rebuild-<run>``; its keys keep the live hash tags.
4. **Diff / swap** per pair with :mod:`.swap`'s script. The live processor keeps writing meanwhile:
   the script refuses a pair the live processor has moved past the cut-off (its watermarks say so);
   the shadow then reads on to the new progress and the pair is tried again.
5. **After the swap**, the customers index gets the shadow's members (``ZADD GT``), identifier claims
   missing from the live state are copied (``SET NX``: the live processor's own claims win), and the
   shadow is deleted (also when anything fails).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis

from processor.aggregator.engine import ADJUSTMENTS, EVENTS, Engine
from processor.aggregator.fetch import EventFetcher
from processor.config import Settings
from processor.errors import MeterNotFoundError, StateError
from processor.meters.book import MeterBook
from processor.meters.log import load_meters
from processor.meters.model import Meter
from processor.ops.reader import RangeRead, committed_offsets
from processor.ops.swap import PairResult, SwapScript
from processor.state.connect import sync_redis
from processor.state.keys import CLAIM_TTL_S, DAY_S, HOUR_S, Keys
from processor.state.store import StateStore, map_redis_errors

__all__ = ["CONTEXT_S", "Rebuild", "RebuildReport", "cleanup_shadows", "day_range"]

log = logging.getLogger(__name__)

#: How far before ``from`` records are read as context (identifier and cancellation rules, see above).
CONTEXT_S = 49 * HOUR_S
#: How often the shadow may catch up with a live processor that keeps moving before the rebuild gives up.
MAX_ROUNDS = 8
_PIPELINE = 200


def day_range(start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` widened to whole UTC days."""
    if end <= start:
        raise ValueError("--to must be after --from")
    return start - start % DAY_S, -(-end // DAY_S) * DAY_S


@dataclass
class RebuildReport:
    start: int
    end: int
    records: int = 0
    rounds: int = 0
    pairs: list[PairResult] = field(default_factory=list)
    swapped: bool = False
    claims_restored: int = 0

    @property
    def differing(self) -> list[PairResult]:
        return [p for p in self.pairs if p.differs]


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


class Rebuild:
    """One rebuild run. Use as a context manager: the shadow is deleted on exit, whatever happened."""

    def __init__(
        self,
        settings: Settings,
        start: int,
        end: int,
        *,
        meter: str | None = None,
        customer: str | None = None,
        client: redis.Redis | None = None,
        on_consumed: Callable[[int], None] | None = None,
        on_total: Callable[[int | None], None] | None = None,
        run_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.start, self.end = day_range(start, end)
        self.meter_ref = meter
        self.customer = customer
        self.client: Any = client or sync_redis(settings)
        self.live = Keys(settings.redis_prefix)
        self.shadow = Keys(self.live.rebuild_prefix(run_id or uuid.uuid4().hex[:10]))
        self.on_consumed = on_consumed
        self.on_total = on_total
        self.book = MeterBook()
        self.meters: list[Meter] = []
        self.cutoff: dict[str, int] = {}
        self.from_kafka: dict[str, int] = {}  # cut-offs taken from the group's Kafka commits
        self.report = RebuildReport(self.start, self.end)
        self._engine: Engine | None = None
        self._fetcher: EventFetcher | None = None

    def __enter__(self) -> Rebuild:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # ---- steps ------------------------------------------------------------------------------------
    def build(self) -> RebuildReport:
        """Read the range (plus context) up to the cut-off into the shadow."""
        self.book, latest = load_meters(self.settings)
        self.meters = self._select_meters(latest)
        self._fetcher = EventFetcher(self.settings)
        shadow = StateStore(self.client, self.shadow.prefix, self.settings.usage_retention_days)
        self._engine = Engine(shadow, self.book, self._fetcher)
        group = self.settings.processor_group
        stored = StateStore(self.client, self.live.prefix).load_progress(group)
        committed = committed_offsets(self.settings, group, [EVENTS, ADJUSTMENTS])
        self.from_kafka = {k: v for k, v in committed.items() if k not in stored}
        self._read(starts={}, stops={**self.from_kafka, **stored})
        return self.report

    def compare(self) -> RebuildReport:
        """Diff every selected pair (catching up with the live processor where needed)."""
        self.report.pairs = self._run_pairs("diff")
        return self.report

    def swap(self) -> RebuildReport:
        """Replace the live range with the shadow's, pair by pair, atomically; then indexes and claims."""
        self.report.pairs = self._run_pairs("swap")
        self._merge_customers()
        self.report.claims_restored = self._restore_claims()
        self.report.swapped = True
        return self.report

    def set_progress(self) -> dict[str, int]:
        """Store the Kafka-derived cut-offs as the processor's progress where Redis still has none
        (``HSETNX``: a processor that stored progress meanwhile keeps its own). Call after :meth:`swap`
        of an unrestricted rebuild: the records before these offsets are in the swapped state."""
        if not self.report.swapped or self.meter_ref is not None or self.customer is not None:
            raise StateError("set_progress needs a completed swap of every meter and customer")
        key = self.live.progress(self.settings.processor_group)
        written: dict[str, int] = {}
        with map_redis_errors("storing progress"):
            for field_name, offset in sorted(self.from_kafka.items()):
                if self.client.hsetnx(key, field_name, offset):
                    written[field_name] = offset
        return written

    def cleanup(self) -> None:
        """Delete every key of this run's shadow prefix."""
        if self._fetcher is not None:
            self._fetcher.close()
            self._fetcher = None
        cleanup_shadows(self.client, self.shadow.prefix)

    # ---- internals --------------------------------------------------------------------------------
    def _select_meters(self, latest: dict[str, Meter]) -> list[Meter]:
        meters = sorted(latest.values(), key=lambda m: m.id)
        if self.meter_ref is None:
            return meters
        chosen = [m for m in meters if self.meter_ref in (m.id, m.event_name)]
        if not chosen:
            raise MeterNotFoundError(self.meter_ref)
        return chosen

    def _read(self, starts: dict[str, int], stops: dict[str, int]) -> None:
        assert self._engine is not None
        read = RangeRead(
            self.settings,
            [EVENTS, ADJUSTMENTS],
            since_ms=(self.start - CONTEXT_S) * 1000,
            starts=starts,
            stops=stops,
            on_consumed=self.on_consumed,
            on_total=self.on_total,
        )
        now_ms = int(time.time() * 1000)
        for batch in read.records():
            self._engine.process(batch, now_ms)
            self.report.records += len(batch)
        self.cutoff = dict(read.ends)

    def _catch_up(self) -> None:
        """Read on from the cut-off to where the live processor is now."""
        stored = StateStore(self.client, self.live.prefix).load_progress(self.settings.processor_group)
        stops = {k: max(v, self.cutoff.get(k, 0)) for k, v in stored.items()}
        self.report.rounds += 1
        log.info("live processor moved past the cut-off; reading on (round %d)", self.report.rounds)
        self._read(starts=dict(self.cutoff), stops=stops)

    def _pairs(self) -> list[tuple[Meter, str]]:
        pairs: list[tuple[Meter, str]] = []
        with map_redis_errors("reading the customers indexes"):
            for meter in self.meters:
                names: set[str] = set()
                for keys in (self.live, self.shadow):
                    names.update(_text(c) for c in self.client.zrange(keys.customers(meter.id), 0, -1))
                if self.customer is not None:
                    names &= {self.customer}
                pairs.extend((meter, c) for c in sorted(names))
        return pairs

    def _run_pairs(self, mode: str) -> list[PairResult]:
        script = SwapScript(self.client, self.live, self.shadow)
        pending = self._pairs()
        done: list[PairResult] = []
        for _ in range(MAX_ROUNDS):
            now = int(time.time())
            behind: list[tuple[Meter, str]] = []
            for i in range(0, len(pending), _PIPELINE):
                chunk = pending[i : i + _PIPELINE]
                calls = [script.call(mode, m, c, self.start, self.end, self.cutoff, now) for m, c in chunk]
                with map_redis_errors(f"the rebuild {mode} step"):
                    raws = script.run(calls)
                for (meter, customer), raw in zip(chunk, raws, strict=True):
                    result = SwapScript.parse(meter.id, customer, raw)
                    (behind.append((meter, customer)) if result.behind else done.append(result))
            if not behind:
                return done
            self._catch_up()
            pending = behind
        raise StateError(
            f"{len(pending)} pair(s) kept moving past the rebuild's reading after {MAX_ROUNDS} rounds "
            "(is the stored progress behind the live state, e.g. topics recreated under an old Redis?)"
        )

    def _merge_customers(self) -> None:
        with map_redis_errors("merging the customers index"):
            for meter in self.meters:
                members = self.client.zrange(self.shadow.customers(meter.id), 0, -1, withscores=True)
                chosen = {_text(m): int(s) for m, s in members if self.customer is None or _text(m) == self.customer}
                if chosen:
                    self.client.zadd(self.live.customers(meter.id), chosen, gt=True)

    def _restore_claims(self) -> int:
        """Copy identifier claims the live state lacks (after a loss), so the next 24 h dedup exactly."""
        meter_tags = {f"{{{m.id}|" for m in self.meters}
        restored = 0
        cap_ms = (CLAIM_TTL_S + DAY_S) * 1000
        with map_redis_errors("restoring identifier claims"):
            batch: list[str] = []
            for key in self.client.scan_iter(match=self.shadow.claim_pattern(), count=1000):
                name = _text(key)
                if any(tag in name for tag in meter_tags):
                    batch.append(name)
                if len(batch) >= 500:
                    restored += self._copy_claims(batch, cap_ms)
                    batch = []
            if batch:
                restored += self._copy_claims(batch, cap_ms)
        return restored

    def _copy_claims(self, names: list[str], cap_ms: int) -> int:
        """Copy the fields of these shadow claim buckets that the live buckets lack (HSETNX: a live claim,
        written by the live processor meanwhile, always wins), with the shadow bucket's expiry."""
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(name)
            pipe.pttl(name)
        raw = pipe.execute()
        pipe = self.client.pipeline(transaction=False)
        queued = 0
        setnx: list[int] = []  # which pipeline answers are HSETNX's
        for i, name in enumerate(names):
            fields, ttl = raw[2 * i], raw[2 * i + 1]
            if not fields or ttl == -2:
                continue
            live_name = self.live.prefix + name[len(self.shadow.prefix) :]
            ttl = cap_ms if ttl < 0 else int(ttl)
            for fld, value in fields.items():
                pipe.hsetnx(live_name, fld, value)
                setnx.append(queued)
                queued += 1
            pipe.pexpire(live_name, max(1, ttl), nx=True)
            pipe.pexpire(live_name, max(1, ttl), gt=True)
            queued += 2
        if not queued:
            return 0
        answers = pipe.execute()
        return sum(1 for j in setnx if answers[j])


def cleanup_shadows(client: Any, prefix_or_live: str, *, all_runs: bool = False) -> int:
    """Delete a shadow prefix's keys (or, with ``all_runs``, the shadows of every run of a live prefix,
    e.g. left by an interrupted rebuild). SCAN + UNLINK in batches, never KEYS."""
    pattern = f"{Keys(prefix_or_live).rebuild_prefix('*')}:*" if all_runs else f"{prefix_or_live}:*"
    deleted = 0
    with map_redis_errors("deleting the rebuild shadow"):
        batch: list[Any] = []
        for key in client.scan_iter(match=pattern, count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(client.unlink(*batch))
    return deleted


def summarize_pairs(pairs: Iterable[PairResult]) -> tuple[int, int, int]:
    """(pairs compared, pairs differing, hour/day buckets differing)."""
    items = list(pairs)
    return len(items), sum(1 for p in items if p.differs), sum(len(p.changes) for p in items)
