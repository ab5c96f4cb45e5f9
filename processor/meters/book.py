"""Meters as they were at any received time, built from the records of the ``meters`` topic. Pure: no I/O.

Each record on the compacted ``meters`` topic is a version of a meter, effective from its Kafka timestamp.
Judging an event by the meter's state at the event's *received* time (not "whatever we know now") makes
replays give the same answers as the live run (docs/semantics.md, "Meters over time"). Every reader of
the topic feeds its records to a book through :class:`processor.meters.log.MetersLog`, so the live
processor, ``rebuild`` and ``errors replay`` judge the same event the same way.

Log compaction keeps only each meter's latest record, so a reader may first meet a meter at a later
version. What the book does about the history compaction removed:

- **A record with ``status_history``** (every meter written since the field exists) carries the meter's
  whole status history, each status with the millisecond it took effect. The meter's status at any time
  comes from that history alone (merged over its records: each record's history extends the previous
  one's), so the latest record on its own gives exactly what the full log gives, deactivate/reactivate
  periods included. The records' timestamps only choose the version of the other fields (a rename).
- **A record without it** (written before the field existed): the status comes from the record
  timestamps, and when the first record seen is a later version (``updated > created``) the lost
  creation is put back: the meter existed, active, from ``created``. A deactivate-then-reactivate period
  that compaction erased cannot be recovered for such meters (docs/operations.md).

A meter's records either all carry the history or none do: the model only extends a history the meter
was created with (:meth:`processor.meters.model.Meter.deactivated`).
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field, replace

from processor.meters.model import Meter, Status

__all__ = ["MeterBook"]

log = logging.getLogger(__name__)


@dataclass
class _History:
    #: Versions by effective time (the records' Kafka timestamps).
    times: list[int] = field(default_factory=list)
    versions: list[Meter] = field(default_factory=list)
    #: The declared status history, merged over the records (empty for meters written before it existed).
    since: list[int] = field(default_factory=list)
    statuses: list[Status] = field(default_factory=list)
    #: (version index, history index) -> the version with the status at that time (built once).
    _judged: dict[tuple[int, int], Meter] = field(default_factory=dict)

    def add(self, effective_ms: int, meter: Meter) -> None:
        """Add a version; the same record read again (a reader that reopened the topic) changes nothing."""
        i = bisect.bisect_right(self.times, effective_ms)
        k = bisect.bisect_left(self.times, effective_ms)
        if any(self.versions[j] == meter for j in range(k, i)):
            return
        self.times.insert(i, effective_ms)
        self.versions.insert(i, meter)
        self._judged.clear()
        for since_ms, status in meter.status_history:
            j = bisect.bisect_left(self.since, since_ms)
            if j < len(self.since) and self.since[j] == since_ms:
                continue  # known from an earlier record of this meter
            self.since.insert(j, since_ms)
            self.statuses.insert(j, status)

    def at(self, received_ms: int) -> Meter | None:
        i = bisect.bisect_right(self.times, received_ms)
        if not self.since:
            return self.versions[i - 1] if i else None
        j = bisect.bisect_right(self.since, received_ms)
        if not j:
            return None  # before the meter was created
        key = (max(i - 1, 0), j - 1)
        judged = self._judged.get(key)
        if judged is None:
            # The version in force (or, before the first record still on the topic, the oldest one left)
            # with the status the history gives for that time.
            version, status = self.versions[key[0]], self.statuses[key[1]]
            if version.status != status:
                off = self.since[key[1]] // 1000 if status == "inactive" else None
                version = replace(version, status=status, deactivated_at=off)
            judged = self._judged[key] = version
        return judged


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
            if not meter.status_history and meter.updated > meter.created and 0 < created_ms < effective_ms:
                # An old-format record that is a later version: compaction removed the creation record.
                hist.add(created_ms, replace(meter, status="active", deactivated_at=None, updated=meter.created))
        hist.add(effective_ms, meter)

    def add_record(self, effective_ms: int, value: bytes | None) -> Meter | None:
        """Add a raw ``meters`` topic record; a malformed one is logged and skipped (never fatal)."""
        if not value:
            return None
        try:
            meter = Meter.from_json(value)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
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
