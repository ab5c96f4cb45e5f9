"""Meters (SPEC §4): the model, Stripe's create-time validation, and the registry on the compacted
``meters`` topic mirrored into Redis."""

from processor.meters.model import Meter

__all__ = ["Meter"]
