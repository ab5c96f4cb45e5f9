"""Small builders for model scenarios: meters in Stripe's shape and records with per-partition offsets.

Used by the hand-computed examples (test_reference.py) and by the hypothesis strategies, so both describe
records the same way a broker would number them: offsets count up per (topic, partition) in append order.
"""

from __future__ import annotations

import json
from typing import Any, Final

from processor.meters.model import Meter
from tests.model.reference import ADJUSTMENTS, EVENTS, MeterVersion, Rec

__all__ = ["MISSING", "Log", "meter", "meter_version"]


class _Missing:
    """Marks a field that must be left out of the JSON (not the same as JSON null)."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Final = _Missing()


def meter(
    meter_id: str = "mtr_1",
    event_name: str = "api",
    formula: str = "sum",
    window: str | None = None,
    *,
    status: str = "active",
    customer_key: str = "stripe_customer_id",
    value_key: str = "value",
    created: int = 0,
) -> dict[str, Any]:
    """A billing.meter JSON object (the exact shape the meters topic carries)."""
    built = Meter(
        id=meter_id,
        display_name=f"Meter {meter_id}",
        event_name=event_name,
        formula=formula,  # type: ignore[arg-type]
        event_time_window=window,  # type: ignore[arg-type]
        customer_key=customer_key,
        value_key=value_key,
        created=created,
        updated=created,
    )
    if status == "inactive":
        built = built.deactivated(created)
    return built.to_dict()


def meter_version(effective_ms: int, **kwargs: Any) -> MeterVersion:
    return MeterVersion(effective_ms, meter(created=effective_ms // 1000, **kwargs))


def _json(obj: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in obj.items() if v is not MISSING}).encode()


class Log:
    """Records in append order; ``offset`` counts per (topic, partition) like a broker's log."""

    def __init__(self) -> None:
        self.records: list[Rec] = []
        self._next: dict[tuple[str, int], int] = {}

    def raw(self, topic: str, received_ms: int, value: bytes, partition: int = 0) -> tuple[str, int, int]:
        offset = self._next.get((topic, partition), 0)
        self._next[(topic, partition)] = offset + 1
        rec = Rec(topic, partition, offset, received_ms, value)
        self.records.append(rec)
        return rec.key

    @staticmethod
    def event_json(event_name: Any, payload: dict[str, Any], identifier: Any = MISSING) -> bytes:
        """The exact bytes ``event`` would write (for tests that need to size a record precisely)."""
        return _json({"event_name": event_name, "payload": payload, "identifier": identifier})

    def event(
        self,
        received_ms: int,
        event_name: Any = "api",
        *,
        customer: Any = "cus_1",
        value: Any = 1,
        identifier: Any = MISSING,
        timestamp: Any = MISSING,
        partition: int = 0,
        customer_key: str = "stripe_customer_id",
        value_key: str = "value",
        extra: dict[str, Any] | None = None,
    ) -> tuple[str, int, int]:
        """A meter event; ``MISSING`` leaves a field out."""
        payload = {customer_key: customer, value_key: value, **(extra or {})}
        payload = {k: v for k, v in payload.items() if v is not MISSING}
        body = {"event_name": event_name, "payload": payload, "identifier": identifier, "timestamp": timestamp}
        return self.raw(EVENTS, received_ms, _json(body), partition)

    def cancel(
        self, received_ms: int, identifier: Any, event_name: Any = "api", *, partition: int = 0, kind: Any = "cancel"
    ) -> tuple[str, int, int]:
        body = {"event_name": event_name, "type": kind, "cancel": {"identifier": identifier}}
        if identifier is MISSING:
            body["cancel"] = {}
        return self.raw(ADJUSTMENTS, received_ms, _json(body), partition)
