"""The meter, in Stripe's ``billing.meter`` shape. Pure: no I/O.

A :class:`Meter` is immutable; the only changes a meter ever sees (display_name, status) produce a new
value with a new ``updated`` time. ``to_dict``/``from_dict`` round-trip the exact JSON stored on the
``meters`` topic and in the Redis ``<prefix>:meters`` hash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Literal

__all__ = ["FORMULAS", "WINDOWS", "Formula", "Meter", "Window"]

Formula = Literal["sum", "count", "last"]
Window = Literal["hour", "day"]
FORMULAS: tuple[str, ...] = ("sum", "count", "last")
WINDOWS: tuple[str, ...] = ("hour", "day")


@dataclass(frozen=True)
class Meter:
    id: str
    display_name: str
    event_name: str
    formula: Formula
    event_time_window: Window | None = None
    customer_key: str = "stripe_customer_id"
    value_key: str = "value"
    status: Literal["active", "inactive"] = "active"
    created: int = 0
    updated: int = 0
    deactivated_at: int | None = None

    @property
    def active(self) -> bool:
        return self.status == "active"

    def to_dict(self) -> dict[str, Any]:
        """Stripe's ``billing.meter`` object."""
        return {
            "id": self.id,
            "object": "billing.meter",
            "created": self.created,
            "customer_mapping": {"event_payload_key": self.customer_key, "type": "by_id"},
            "default_aggregation": {"formula": self.formula},
            "display_name": self.display_name,
            "event_name": self.event_name,
            "event_time_window": self.event_time_window,
            "livemode": False,
            "status": self.status,
            "status_transitions": {"deactivated_at": self.deactivated_at},
            "updated": self.updated,
            "value_settings": {"event_payload_key": self.value_key},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Meter:
        """Parse a stored meter. Raises ``KeyError``/``ValueError`` on a malformed record."""
        formula = data["default_aggregation"]["formula"]
        if formula not in FORMULAS:
            raise ValueError(f"unknown formula {formula!r}")
        window = data.get("event_time_window")
        if window not in (None, *WINDOWS):
            raise ValueError(f"unknown event_time_window {window!r}")
        status = data.get("status", "active")
        if status not in ("active", "inactive"):
            raise ValueError(f"unknown status {status!r}")
        transitions = data.get("status_transitions") or {}
        return cls(
            id=str(data["id"]),
            display_name=str(data["display_name"]),
            event_name=str(data["event_name"]),
            formula=formula,
            event_time_window=window,
            customer_key=str((data.get("customer_mapping") or {}).get("event_payload_key") or "stripe_customer_id"),
            value_key=str((data.get("value_settings") or {}).get("event_payload_key") or "value"),
            status=status,
            created=int(data.get("created") or 0),
            updated=int(data.get("updated") or 0),
            deactivated_at=transitions.get("deactivated_at"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Meter:
        return cls.from_dict(json.loads(text))

    def renamed(self, display_name: str, now: int) -> Meter:
        return replace(self, display_name=display_name, updated=now)

    def deactivated(self, now: int) -> Meter:
        return replace(self, status="inactive", deactivated_at=now, updated=now)

    def reactivated(self, now: int) -> Meter:
        return replace(self, status="active", deactivated_at=None, updated=now)
