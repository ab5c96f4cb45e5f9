"""The emulator's meters: Stripe's create-time validation, display_name updates, status changes, listing.

The validation is written here from Stripe's documented parameters (and deliberately not shared with the
processor's meter registry): required ``display_name`` (<= 250), ``event_name`` (<= 100, one meter per
event name, inactive meters keep theirs), ``default_aggregation[formula]`` in sum/count/last; optional
``customer_mapping`` (``type`` must be ``by_id``, ``event_payload_key`` <= 100), ``event_time_window``
hour/day, ``value_settings[event_payload_key]`` (<= 100); anything else is an unknown parameter.
:class:`processor.meters.model.Meter` is used only as the JSON shape of ``billing.meter``.
"""

from __future__ import annotations

import secrets
import string
from collections.abc import Mapping
from typing import Any

from processor.errors import InvalidRequestError, ResourceMissingError
from processor.meters.model import Meter
from processor.wire import get_enum, get_map, get_str, reject_unknown

__all__ = ["EmulatorMeters", "new_id"]

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, length: int = 24) -> str:
    """A Stripe-looking random id such as ``mtr_test_...``."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(length))


class EmulatorMeters:
    """The emulator's billing meters by id and event name, with Stripe's create-time rules (not the
    processor's :class:`processor.meters.book.MeterBook`, which versions meters by time)."""

    def __init__(self) -> None:
        self._by_id: dict[str, Meter] = {}
        self._by_event_name: dict[str, str] = {}
        self._order: list[str] = []  # creation order; lists show newest first

    def __len__(self) -> int:
        return len(self._by_id)

    def get(self, meter_id: str) -> Meter:
        meter = self._by_id.get(meter_id)
        if meter is None:
            raise ResourceMissingError(f"No such billing meter: '{meter_id[:100]}'", param="id")
        return meter

    def find(self, meter_id: str) -> Meter | None:
        return self._by_id.get(meter_id)

    def for_event_name(self, event_name: str) -> Meter | None:
        meter_id = self._by_event_name.get(event_name)
        return None if meter_id is None else self._by_id[meter_id]

    def create(self, params: Mapping[str, Any], now: int) -> Meter:
        reject_unknown(
            params,
            (
                "default_aggregation",
                "display_name",
                "event_name",
                "customer_mapping",
                "event_time_window",
                "value_settings",
                "expand",
            ),
        )
        aggregation = get_map(params, "default_aggregation", required=True) or {}
        reject_unknown(aggregation, ("formula",), prefix=("default_aggregation",))
        formula = get_enum(
            aggregation, "formula", ("sum", "count", "last"), required=True, prefix=("default_aggregation",)
        )
        display_name = get_str(params, "display_name", required=True, max_length=250)
        event_name = get_str(params, "event_name", required=True, max_length=100)
        window = get_enum(params, "event_time_window", ("day", "hour"))
        customer_key = "stripe_customer_id"
        mapping = get_map(params, "customer_mapping")
        if mapping is not None:
            reject_unknown(mapping, ("event_payload_key", "type"), prefix=("customer_mapping",))
            get_enum(mapping, "type", ("by_id",), required=True, prefix=("customer_mapping",))
            customer_key = (
                get_str(mapping, "event_payload_key", required=True, max_length=100, prefix=("customer_mapping",))
                or customer_key
            )
        value_key = "value"
        settings = get_map(params, "value_settings")
        if settings is not None:
            reject_unknown(settings, ("event_payload_key",), prefix=("value_settings",))
            value_key = (
                get_str(settings, "event_payload_key", required=True, max_length=100, prefix=("value_settings",))
                or value_key
            )
        assert display_name is not None and event_name is not None and formula is not None
        if event_name in self._by_event_name:
            raise InvalidRequestError(
                f"A meter with event_name '{event_name}' already exists. An event name can only be used by one meter.",
                param="event_name",
                code="resource_already_exists",
            )
        meter = Meter(
            id=new_id("mtr_test_"),
            display_name=display_name,
            event_name=event_name,
            formula=formula,  # type: ignore[arg-type]  # checked by get_enum
            event_time_window=window,  # type: ignore[arg-type]
            customer_key=customer_key,
            value_key=value_key,
            created=now,
            updated=now,
        )
        self._by_id[meter.id] = meter
        self._by_event_name[event_name] = meter.id
        self._order.append(meter.id)
        return meter

    def update(self, meter_id: str, params: Mapping[str, Any], now: int) -> Meter:
        meter = self.get(meter_id)
        reject_unknown(params, ("display_name", "expand"))
        display_name = get_str(params, "display_name", max_length=250)
        if display_name is not None:
            meter = meter.renamed(display_name, now)
            self._by_id[meter_id] = meter
        return meter

    def set_active(self, meter_id: str, active: bool, now: int) -> Meter:
        """Deactivate or reactivate; doing it to a meter already in that state changes nothing."""
        meter = self.get(meter_id)
        if meter.active != active:
            meter = meter.reactivated(now) if active else meter.deactivated(now)
            self._by_id[meter_id] = meter
        return meter

    def listing(self, status: str | None) -> list[Meter]:
        """All meters, newest first, optionally only ``active`` or ``inactive`` ones."""
        meters = (self._by_id[i] for i in reversed(self._order))
        return [m for m in meters if status is None or m.status == status]
