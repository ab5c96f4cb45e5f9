"""The meter, in Stripe's ``billing.meter`` shape. Pure: no I/O.

A :class:`Meter` is immutable; the only changes a meter ever sees (display_name, status) produce a new
value with a new ``updated`` time. ``to_dict`` is Stripe's object (what the APIs answer);
``to_record``/``from_dict`` round-trip the exact JSON stored on the ``meters`` topic and in the Redis
``<prefix>:meters`` hash: Stripe's object plus ``status_history``.

Why ``status_history``: the topic is compacted, so a reader may find only a meter's latest record, and
events are judged by the meter's status at their received time. Stripe's object alone (``created``,
``status``, ``status_transitions.deactivated_at``) cannot say that a meter was inactive between two
earlier times. The history lists every status the meter had since its creation, each with the
millisecond it took effect (the Kafka timestamp of the record that made the change), so the latest
record alone defines the whole history. Meters written before the field existed have none
(``status_history == ()``); readers then fall back to the record timestamps (processor/meters/book.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Literal, TypedDict

__all__ = [
    "DEFAULT_CUSTOMER_KEY",
    "DEFAULT_VALUE_KEY",
    "FORMULAS",
    "WINDOWS",
    "CreateParams",
    "Formula",
    "Meter",
    "Status",
    "StatusChange",
    "Window",
]

Formula = Literal["sum", "count", "last"]
Window = Literal["hour", "day"]
Status = Literal["active", "inactive"]
#: One entry of a meter's status history: (effective time in ms, status from then on).
StatusChange = tuple[int, Status]
FORMULAS: tuple[str, ...] = ("sum", "count", "last")
WINDOWS: tuple[str, ...] = ("hour", "day")
DEFAULT_CUSTOMER_KEY = "stripe_customer_id"
DEFAULT_VALUE_KEY = "value"


class _Aggregation(TypedDict):
    formula: Formula


class _CustomerMapping(TypedDict):
    event_payload_key: str
    type: Literal["by_id"]


class _ValueSettings(TypedDict):
    event_payload_key: str


class CreateParams(TypedDict):
    """Stripe's meter create params after validation: every optional part filled with its default.

    Produced by :func:`processor.meters.validation.validate_create_params`; two params that normalise to
    the same dict describe the same meter (``apply`` compares them this way)."""

    display_name: str
    event_name: str
    default_aggregation: _Aggregation
    event_time_window: Window | None
    customer_mapping: _CustomerMapping
    value_settings: _ValueSettings


@dataclass(frozen=True)
class Meter:
    id: str
    display_name: str
    event_name: str
    formula: Formula
    event_time_window: Window | None = None
    customer_key: str = DEFAULT_CUSTOMER_KEY
    value_key: str = DEFAULT_VALUE_KEY
    status: Status = "active"
    created: int = 0
    updated: int = 0
    deactivated_at: int | None = None
    #: Every status since creation, oldest first (module docstring); empty for meters written before it.
    status_history: tuple[StatusChange, ...] = ()

    @property
    def active(self) -> bool:
        return self.status == "active"

    @classmethod
    def from_create_params(cls, meter_id: str, params: CreateParams, now: int, *, at_ms: int | None = None) -> Meter:
        """A new active meter from validated create params (``created`` = ``updated`` = ``now``), its
        status history starting at ``at_ms`` (default ``now`` in ms): the record's Kafka timestamp."""
        return cls(
            id=meter_id,
            display_name=params["display_name"],
            event_name=params["event_name"],
            formula=params["default_aggregation"]["formula"],
            event_time_window=params["event_time_window"],
            customer_key=params["customer_mapping"]["event_payload_key"],
            value_key=params["value_settings"]["event_payload_key"],
            created=now,
            updated=now,
            status_history=((now * 1000 if at_ms is None else at_ms, "active"),),
        )

    def create_params(self) -> CreateParams:
        """The normalised create params this meter was made from (display_name as it is now)."""
        return {
            "display_name": self.display_name,
            "event_name": self.event_name,
            "default_aggregation": {"formula": self.formula},
            "event_time_window": self.event_time_window,
            "customer_mapping": {"event_payload_key": self.customer_key, "type": "by_id"},
            "value_settings": {"event_payload_key": self.value_key},
        }

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

    def to_record(self) -> dict[str, Any]:
        """The stored record: Stripe's object plus ``status_history`` (left out when empty, as meters
        written before it had none)."""
        record = self.to_dict()
        if self.status_history:
            record["status_history"] = [{"status": status, "since_ms": ms} for ms, status in self.status_history]
        return record

    def to_json(self) -> str:
        """The stored record as compact JSON (the ``meters`` topic value and the Redis mirror's)."""
        return json.dumps(self.to_record(), separators=(",", ":"), sort_keys=True)

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
        history: list[StatusChange] = []
        for entry in data.get("status_history") or ():
            changed = entry["status"]
            if changed not in ("active", "inactive"):
                raise ValueError(f"unknown status {changed!r} in status_history")
            history.append((int(entry["since_ms"]), changed))
        if history != sorted(history, key=lambda change: change[0]):
            raise ValueError("status_history is not in time order")
        return cls(
            id=str(data["id"]),
            display_name=str(data["display_name"]),
            event_name=str(data["event_name"]),
            formula=formula,
            event_time_window=window,
            customer_key=str((data.get("customer_mapping") or {}).get("event_payload_key") or DEFAULT_CUSTOMER_KEY),
            value_key=str((data.get("value_settings") or {}).get("event_payload_key") or DEFAULT_VALUE_KEY),
            status=status,
            created=int(data.get("created") or 0),
            updated=int(data.get("updated") or 0),
            deactivated_at=transitions.get("deactivated_at"),
            status_history=tuple(history),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Meter:
        return cls.from_dict(json.loads(text))

    def renamed(self, display_name: str, now: int) -> Meter:
        return replace(self, display_name=display_name, updated=now)

    def deactivated(self, now: int, *, at_ms: int | None = None) -> Meter:
        """Inactive from ``at_ms`` (default ``now`` in ms), recorded in the status history if it has one."""
        return replace(
            self,
            status="inactive",
            deactivated_at=now,
            updated=now,
            status_history=self._changed("inactive", now, at_ms),
        )

    def reactivated(self, now: int, *, at_ms: int | None = None) -> Meter:
        """Active again from ``at_ms`` (default ``now`` in ms), recorded like :meth:`deactivated`."""
        return replace(
            self, status="active", deactivated_at=None, updated=now, status_history=self._changed("active", now, at_ms)
        )

    def _changed(self, status: Status, now: int, at_ms: int | None) -> tuple[StatusChange, ...]:
        """The history with ``status`` appended. A meter without one (written before the field existed)
        keeps none: its earlier statuses are not known, and a partial history would claim they are."""
        if not self.status_history:
            return ()
        return (*self.status_history, (now * 1000 if at_ms is None else at_ms, status))
