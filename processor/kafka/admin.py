"""Create or check the catalog's topics, idempotently, and report drift.

Drift that cannot be repaired safely (a topic with fewer or more partitions than the catalog) is
reported, not "fixed": adding partitions re-routes keys, which would break per-customer ordering for
records already in flight. Config drift is reported for configs the broker returns (Tansu's
DescribeConfigs omits unset configs, so a missing config is "unknown", not drift).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic  # type: ignore[attr-defined]

from processor.config import Settings
from processor.errors import TopicDriftError, TopicError
from topics import CATALOG, TopicSpec

__all__ = ["TopicReport", "broker_answers", "ensure_topics", "new_admin"]

log = logging.getLogger(__name__)


@dataclass
class TopicReport:
    """What ``ensure`` found or did for one topic."""

    name: str
    status: str  # "created" | "ok" | "drift"
    partitions: int
    expected_partitions: int
    config_drift: dict[str, tuple[str, str]] = field(default_factory=dict)

    def line(self) -> str:
        text = f"{self.name:<40} {self.status:<8} partitions={self.partitions}"
        if self.partitions != self.expected_partitions:
            text += f" (catalog says {self.expected_partitions})"
        for key, (have, want) in sorted(self.config_drift.items()):
            text += f" {key}={have} (catalog says {want})"
        return text


def new_admin(settings: Settings) -> AdminClient:
    """An admin client for the cluster of ``settings`` (security settings included)."""
    return AdminClient(settings.kafka_config())


def broker_answers(bootstrap: str, timeout: float = 1.0) -> bool:
    """Whether a broker at ``bootstrap`` answers a metadata request within ``timeout`` seconds: the
    readiness probe of the embedded and durable brokers, which have a bare loopback address and no
    :class:`~processor.config.Settings` yet (librdkafka's logs are silenced: refusals are expected while
    the broker starts)."""
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    try:
        return bool(admin.list_topics(timeout=timeout).brokers)
    except Exception:
        return False


def _expected_partitions(spec: TopicSpec, settings: Settings) -> int:
    if spec.partitions == 1 or settings.topic_partitions is None:
        return spec.partitions
    return settings.topic_partitions


def ensure_topics(settings: Settings, *, check_only: bool = False, timeout: float = 15.0) -> list[TopicReport]:
    """Create missing catalog topics (unless ``check_only``) and describe the rest.

    Raises :class:`TopicDriftError` when any topic has the wrong partition count; the message lists
    every drifted topic, so one run shows everything to fix.
    """
    admin = new_admin(settings)
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise TopicError(f"cannot reach the Kafka cluster at {settings.kafka_bootstrap}: {exc}") from exc

    reports: list[TopicReport] = []
    to_create: list[NewTopic] = []
    for spec in CATALOG:
        name = settings.topic_prefix + spec.name
        want = _expected_partitions(spec, settings)
        if name in existing and not existing[name].error:
            have = len(existing[name].partitions)
            reports.append(TopicReport(name, "ok" if have == want else "drift", have, want))
        elif check_only:
            reports.append(TopicReport(name, "missing", 0, want))
        else:
            to_create.append(NewTopic(name, num_partitions=want, replication_factor=-1, config=dict(spec.configs)))
            reports.append(TopicReport(name, "created", want, want))

    if to_create:
        for name, future in admin.create_topics(to_create, operation_timeout=timeout).items():
            try:
                future.result()
            except KafkaException as exc:
                if exc.args and exc.args[0].name() == "TOPIC_ALREADY_EXISTS":
                    # Another process created it between our list and create: fine, check it below.
                    log.info("topic %s created concurrently", name)
                    continue
                raise TopicError(f"cannot create topic {name}: {exc}") from exc

    _check_configs(admin, settings, reports, timeout)
    drift = [r for r in reports if r.status == "drift"]
    if drift:
        raise TopicDriftError(
            "topics differ from the catalog (partition counts are not changed automatically; "
            "recreate the topic or set METERSTREAM_TOPIC_PARTITIONS to match):\n  "
            + "\n  ".join(r.line() for r in drift)
        )
    return reports


def _check_configs(admin: AdminClient, settings: Settings, reports: list[TopicReport], timeout: float) -> None:
    specs = {settings.topic_prefix + s.name: s for s in CATALOG}
    resources = [ConfigResource("topic", r.name) for r in reports if r.status in ("ok", "created")]
    if not resources:
        return
    try:
        futures = admin.describe_configs(resources, request_timeout=timeout)
    except KafkaException as exc:  # pragma: no cover - broker without DescribeConfigs
        log.warning("cannot describe topic configs: %s", exc)
        return
    by_name = {r.name: r for r in reports}
    for resource, future in futures.items():
        try:
            entries = future.result()
        except KafkaException as exc:
            log.warning("cannot describe configs of %s: %s", resource.name, exc)
            continue
        spec = specs[resource.name]
        report = by_name[resource.name]
        for key in ("cleanup.policy",):
            want = spec.configs.get(key)
            entry = entries.get(key)
            if want is not None and entry is not None and entry.value is not None and entry.value != want:
                report.config_drift[key] = (entry.value, want)
                report.status = "drift"
