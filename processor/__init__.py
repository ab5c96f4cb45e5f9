"""meterstream: usage metering on Kafka and Redis with Stripe Billing Meter semantics.

The public API for services and scripts::

    from processor import MeterEventProducer, load_settings

    with MeterEventProducer(load_settings()) as events:
        events.send("api_requests", {"stripe_customer_id": "cus_123", "value": 25})

Everything named in ``__all__`` is supported API; anything else (submodules included) may change.
Importing this package stays cheap: the names that pull in confluent-kafka are loaded on first use,
so ``import processor`` (and every ``processor.*`` import, the CLI's included) does not pay for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from processor.config import Settings, load_settings
from processor.errors import (
    ConfigError,
    EventValidationError,
    InvalidRequestError,
    KafkaDeliveryError,
    MeterstreamError,
)
from processor.events.schema import check_cancel_shape, check_event_shape

if TYPE_CHECKING:
    from processor.events.producer import DeliveryFailure, MeterEventProducer

__all__ = [
    "ConfigError",
    "DeliveryFailure",
    "EventValidationError",
    "InvalidRequestError",
    "KafkaDeliveryError",
    "MeterEventProducer",
    "MeterstreamError",
    "Settings",
    "check_cancel_shape",
    "check_event_shape",
    "load_settings",
]

_LAZY = {
    "MeterEventProducer": "processor.events.producer",
    "DeliveryFailure": "processor.events.producer",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'processor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
