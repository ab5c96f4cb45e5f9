"""Topic definitions. Partition counts are the unit of parallelism: processors and sinks scale up to
the partition count of their input topics, so data topics default to 12 (divisible by 1, 2, 3, 4, 6)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cache
from importlib import resources
from typing import Any

__all__ = ["CATALOG", "Topic", "TopicSpec", "load_schema", "topic_name"]


class Topic(StrEnum):
    """The base name of every topic (SPEC §2), before ``METERSTREAM_TOPIC_PREFIX``. Code names topics
    only through these members, so a typo is an AttributeError at import, not a topic nobody reads."""

    EVENTS = "meter-events"
    ADJUSTMENTS = "meter-event-adjustments"
    METERS = "meters"
    ACCEPTED = "meter-events-accepted"
    ERRORS = "meter-event-errors"
    STRIPE_DLQ = "meter-events-stripe-dlq"


_DAY_MS = 86_400_000


@dataclass(frozen=True)
class TopicSpec:
    """One topic: its base name (before the prefix), partitions, topic configs and value schema file."""

    name: str
    partitions: int
    key: str
    schema: str
    configs: dict[str, str] = field(default_factory=dict)
    description: str = ""


CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec(
        name=Topic.EVENTS,
        partitions=12,
        key="customer id",
        schema="meter-event.json",
        # 40 days: longer than Stripe's 35-day timestamp window, so `rebuild` can recompute any bucket
        # that can still change.
        configs={"cleanup.policy": "delete", "retention.ms": str(40 * _DAY_MS)},
        description="Usage events, the same fields as Stripe's POST /v1/billing/meter_events.",
    ),
    TopicSpec(
        name=Topic.ADJUSTMENTS,
        partitions=12,
        key="identifier",
        schema="meter-event-adjustment.json",
        configs={"cleanup.policy": "delete", "retention.ms": str(40 * _DAY_MS)},
        description="Cancellations of meter events by identifier.",
    ),
    TopicSpec(
        name=Topic.METERS,
        partitions=1,
        key="meter id",
        schema="meter.json",
        # One partition: the registry is small and a single ordered log makes "one meter per
        # event_name" decidable by every reader in the same way.
        configs={"cleanup.policy": "compact", "retention.ms": "-1", "min.compaction.lag.ms": "0"},
        description="Meters in Stripe's billing.meter shape; compacted, the latest record per key wins.",
    ),
    TopicSpec(
        name=Topic.ACCEPTED,
        partitions=12,
        key="customer id",
        schema="accepted.json",
        configs={"cleanup.policy": "delete", "retention.ms": str(40 * _DAY_MS)},
        description="Accepted events and resolved cancellations, normalised, with the meter id.",
    ),
    TopicSpec(
        name=Topic.ERRORS,
        partitions=3,
        key="customer id or null",
        schema="error.json",
        configs={"cleanup.policy": "delete", "retention.ms": str(30 * _DAY_MS)},
        description="Rejected records with a Stripe async error code.",
    ),
    TopicSpec(
        name=Topic.STRIPE_DLQ,
        partitions=3,
        key="customer id",
        schema="stripe-dlq.json",
        configs={"cleanup.policy": "delete", "retention.ms": str(90 * _DAY_MS)},
        description="What Stripe rejected permanently, with Stripe's error object.",
    ),
)


def topic_name(base: str, prefix: str = "") -> str:
    """The real topic name for a catalog name under a prefix (``prefix + base``)."""
    if base not in {t.name for t in CATALOG}:
        raise KeyError(f"unknown topic {base!r}")
    return f"{prefix}{base}"


@cache
def load_schema(base: str) -> dict[str, Any]:
    """The JSON Schema of a catalog topic's values."""
    spec = next(t for t in CATALOG if t.name == base)
    text = resources.files("topics").joinpath("schemas", spec.schema).read_text("utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
