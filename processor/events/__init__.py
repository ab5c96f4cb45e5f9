"""Meter events at the edge: validation of the topic shapes (:mod:`.schema`, pure) and the producer SDK
services use to publish events and cancellations (:mod:`.producer`).

The producer names load on first use, so importing the validation functions (the gateway, the CLI,
``import processor``) does not import confluent-kafka.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from processor.events.schema import (
    EVENT_NAME_MAX,
    IDENTIFIER_MAX,
    check_cancel_shape,
    check_event_shape,
    parse_cancel_object,
    parse_event_object,
)

if TYPE_CHECKING:
    from processor.events.producer import DeliveryCallback, DeliveryFailure, MeterEventProducer

__all__ = [
    "EVENT_NAME_MAX",
    "IDENTIFIER_MAX",
    "DeliveryCallback",
    "DeliveryFailure",
    "MeterEventProducer",
    "check_cancel_shape",
    "check_event_shape",
    "parse_cancel_object",
    "parse_event_object",
]

_LAZY = frozenset({"DeliveryCallback", "DeliveryFailure", "MeterEventProducer"})


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'processor.events' has no attribute {name!r}")
    value = getattr(importlib.import_module("processor.events.producer"), name)
    globals()[name] = value
    return value
