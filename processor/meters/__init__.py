"""Meters (SPEC §4): the model, Stripe's create-time validation, and the registry on the compacted
``meters`` topic mirrored into Redis (design and error table: docs/meters.md)."""

from processor.meters.apply import Change
from processor.meters.log import MetersLog, read_meters_topic
from processor.meters.model import CreateParams, Meter
from processor.meters.registry import MeterRegistry, SyncReport, new_meter_id
from processor.meters.validation import validate_create_params, validate_update_params

__all__ = [
    "Change",
    "CreateParams",
    "Meter",
    "MeterRegistry",
    "MetersLog",
    "SyncReport",
    "new_meter_id",
    "read_meters_topic",
    "validate_create_params",
    "validate_update_params",
]
