"""Meters as they were at any received time, built from the ``meters`` topic.

Each record on the compacted ``meters`` topic is a version of a meter, effective from its Kafka timestamp.
Judging an event by the version effective at the event's *received* time (not "whatever we know now")
makes replays give the same answers as the live run (docs/semantics.md, "Meters over time").

Log compaction keeps only each meter's latest record, so a reader that starts after compaction may first
meet a meter at a later version (``updated > created``): the creation record, effective from ``created``,
is gone. The book puts that history back itself, the moment it first sees a meter: the meter existed,
active, from ``created``. Every reader of the topic (the live processor, ``rebuild``, ``errors replay``)
adds records through this one class, so all of them judge the same event the same way whether or not the
topic was compacted. (A deactivate-then-reactivate period that compaction erased cannot be recovered:
docs/operations.md.)
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field, replace

from processor.meters.model import Meter

__all__ = ["MeterBook"]

log = logging.getLogger(__name__)


@dataclass
class _History:
    times: list[int] = field(default_factory=list)
    versions: list[Meter] = field(default_factory=list)

    def add(self, effective_ms: int, meter: Meter) -> None:
        i = bisect.bisect_right(self.times, effective_ms)
        self.times.insert(i, effective_ms)
        self.versions.insert(i, meter)

    def at(self, received_ms: int) -> Meter | None:
        i = bisect.bisect_right(self.times, received_ms)
        return self.versions[i - 1] if i else None


class MeterBook:
    """Version history per meter, and the event_name → meter ids index."""

    def __init__(self) -> None:
        self._by_id: dict[str, _History] = {}
        self._by_name: dict[str, list[str]] = {}

    def add(self, effective_ms: int, meter: Meter) -> None:
        hist = self._by_id.get(meter.id)
        if hist is None:
            hist = self._by_id[meter.id] = _History()
            self._by_name.setdefault(meter.event_name, []).append(meter.id)
            created_ms = meter.created * 1000
            if meter.updated > meter.created and 0 < created_ms < effective_ms:
                # The first record seen is a later version: compaction removed the creation record.
                hist.add(created_ms, replace(meter, status="active", deactivated_at=None, updated=meter.created))
        hist.add(effective_ms, meter)

    def add_record(self, effective_ms: int, value: bytes | None) -> Meter | None:
        """Add a raw ``meters`` topic record; a malformed one is logged and skipped (never fatal)."""
        if not value:
            return None
        try:
            meter = Meter.from_json(value)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipping malformed meter record: %s", exc)
            return None
        self.add(effective_ms, meter)
        return meter

    def by_event_name(self, event_name: str, received_ms: int) -> Meter | None:
        """The meter owning ``event_name`` at ``received_ms`` (the earliest-created one if several claim it)."""
        found: Meter | None = None
        for meter_id in self._by_name.get(event_name, ()):
            meter = self._by_id[meter_id].at(received_ms)
            if meter is not None and meter.event_name == event_name:
                if found is None or (meter.created, meter.id) < (found.created, found.id):
                    found = meter
        return found

    def latest(self, meter_id: str) -> Meter | None:
        hist = self._by_id.get(meter_id)
        return hist.versions[-1] if hist and hist.versions else None

    def __len__(self) -> int:
        return len(self._by_id)
