"""Pure parts of error reports: grouping error records into windows, the events' Stripe shapes, and the
``Stripe-Signature`` header. No I/O (unit-tested without a broker).

Grouping follows Stripe's reports: one event per meter and validation window (``no_meter_found`` for
errors whose meter is unknown, one per window), counting errors by code with up to
:data:`MAX_SAMPLES` sample messages each. A window is ``[start, start + window)`` of the records' received
times; it is reported once the notifier's clock passed its end plus a grace period, so an operator hears of
bad usage within about a window.

Event ids are derived from the window and its first record's position, so a notifier that restarts and
reads the same records again builds the same events, and storing them is idempotent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass, field
from typing import Any

from processor.wire import format_iso

__all__ = [
    "ERROR_REPORT",
    "MAX_SAMPLES",
    "NO_METER",
    "Bucket",
    "Windows",
    "full_event",
    "sign",
    "thin_event",
]

ERROR_REPORT = "v1.billing.meter.error_report_triggered"
NO_METER = "v1.billing.meter.no_meter_found"
EVENT_TYPES = (ERROR_REPORT, NO_METER)
MAX_SAMPLES = 5


@dataclass
class CodeStats:
    count: int = 0
    samples: list[tuple[str, str]] = field(default_factory=list)  # (message, identifier)


@dataclass
class Bucket:
    """The errors of one meter (or of unknown meters) in one window."""

    type: str
    meter_id: str | None
    start_ms: int
    end_ms: int
    first_ref: str
    count: int = 0
    codes: dict[str, CodeStats] = field(default_factory=dict)
    min_offsets: dict[int, int] = field(default_factory=dict)  # partition -> first offset in this bucket

    @property
    def event_id(self) -> str:
        seed = f"{self.type}|{self.meter_id}|{self.start_ms}|{self.first_ref}"
        return "evt_test_" + hashlib.blake2b(seed.encode(), digest_size=12).hexdigest()


class Windows:
    """Open buckets and the Kafka offsets that are safe to commit (every record before them is reported)."""

    def __init__(self, window_ms: int, grace_ms: int = 2_000) -> None:
        if window_ms <= 0:
            raise ValueError("window_ms must be positive")
        self.window_ms = window_ms
        self.grace_ms = grace_ms
        self._open: dict[tuple[str, str | None, int], Bucket] = {}
        self._next: dict[int, int] = {}  # partition -> next offset to read

    def add(
        self,
        *,
        partition: int,
        offset: int,
        code: str,
        message: str,
        identifier: str | None,
        meter_id: str | None,
        received_ms: int,
    ) -> None:
        kind = ERROR_REPORT if meter_id is not None else NO_METER
        start = received_ms // self.window_ms * self.window_ms
        key = (kind, meter_id, start)
        bucket = self._open.get(key)
        if bucket is None:
            bucket = self._open[key] = Bucket(kind, meter_id, start, start + self.window_ms, f"{partition}/{offset}")
        bucket.count += 1
        stats = bucket.codes.setdefault(code, CodeStats())
        stats.count += 1
        if len(stats.samples) < MAX_SAMPLES:
            stats.samples.append((message, identifier or ""))
        bucket.min_offsets.setdefault(partition, offset)
        self.seen(partition, offset)

    def seen(self, partition: int, offset: int) -> None:
        """A record was read (reported or not: unparsable records are skipped but still consumed)."""
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)

    def due(self, now_ms: int) -> list[Bucket]:
        """The buckets whose window ended (plus grace) by ``now_ms``, removed from the open set."""
        ready = [k for k, b in self._open.items() if b.end_ms + self.grace_ms <= now_ms]
        return [self._open.pop(k) for k in sorted(ready, key=lambda k: self._open[k].start_ms)]

    def commit_offsets(self) -> dict[int, int]:
        """Per partition, the offset up to which every record is in a reported bucket."""
        out = dict(self._next)
        for bucket in self._open.values():
            for partition, offset in bucket.min_offsets.items():
                out[partition] = min(out.get(partition, offset), offset)
        return out

    def __len__(self) -> int:
        return len(self._open)


def _related(meter_id: str) -> dict[str, str]:
    return {"id": meter_id, "type": "billing.meter", "url": f"/v1/billing/meters/{meter_id}"}


def thin_event(bucket: Bucket, created_ms: int) -> dict[str, Any]:
    """The thin notification an event destination receives (``object: v2.core.event``, no data)."""
    event: dict[str, Any] = {
        "id": bucket.event_id,
        "object": "v2.core.event",
        "type": bucket.type,
        "created": format_iso(created_ms / 1000),
        "livemode": False,
        "context": None,
    }
    if bucket.meter_id is not None:
        event["related_object"] = _related(bucket.meter_id)
    return event


def full_event(bucket: Bucket, created_ms: int) -> dict[str, Any]:
    """The event as ``GET /v2/core/events/{id}`` serves it: the thin fields plus Stripe's ``data``."""
    error_types = [
        {
            "code": code,
            "error_count": stats.count,
            "sample_errors": [{"error_message": m, "request": {"identifier": i}} for m, i in stats.samples],
        }
        for code, stats in sorted(bucket.codes.items(), key=lambda item: (-item[1].count, item[0]))
    ]
    what = "meter" if bucket.meter_id is not None else "meter event without an existing meter"
    noun = "event" if bucket.count == 1 else "events"
    summary = f"There {'is' if bucket.count == 1 else 'are'} {bucket.count} invalid async usage {noun} ({what})."
    return {
        **thin_event(bucket, created_ms),
        "reason": None,
        "changes": None,
        "data": {
            "developer_message_summary": summary,
            "reason": {"error_count": bucket.count, "error_types": error_types},
            "validation_start": format_iso(bucket.start_ms / 1000),
            "validation_end": format_iso(bucket.end_ms / 1000),
        },
    }


def sign(payload: str, secret: str, timestamp: int) -> str:
    """Stripe's ``Stripe-Signature`` header: ``t=<unix s>,v1=<HMAC-SHA256 of "<t>.<payload>" with the
    endpoint's whsec_ secret>`` (what ``stripe.WebhookSignature.verify_header`` checks)."""
    mac = hmac.new(secret.encode("utf-8"), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))
