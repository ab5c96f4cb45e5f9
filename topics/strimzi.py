"""Strimzi ``KafkaTopic`` resources for the catalog, so Kubernetes deployments declare the same topics that
``meterstream topics ensure`` creates (``meterstream topics render --format strimzi``).

Pure: no I/O and no settings; the CLI passes the cluster name, prefix and replication. The output is
deterministic (catalog order, sorted keys inside ``config``), so the committed
``deploy/base/kafka-topics.yaml`` can be compared byte for byte with a fresh rendering in the tests.

Why ``spec.topicName`` is always set: Kubernetes object names must be DNS-1123 subdomains (lowercase
letters, digits, ``-`` and ``.``) while a topic prefix may hold ``_`` or capitals. The object name is the
topic name made DNS-safe (plus a short hash when that changed anything, so two topics never collide), and
the real Kafka name always comes from ``topicName``.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import yaml

from topics.catalog import CATALOG

__all__ = ["API_VERSION", "kafka_topic_resources", "object_name", "render_strimzi"]

API_VERSION = "kafka.strimzi.io/v1beta2"
CLUSTER_LABEL = "strimzi.io/cluster"

_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_UNSAFE = re.compile(r"[^a-z0-9.-]+")
_MAX_NAME = 253


def object_name(topic: str) -> str:
    """A DNS-1123 subdomain for ``topic``: the name itself when it already is one, else a sanitized form
    with an 8-hex-digit hash of the real name (distinct topics never share an object name)."""
    if _is_subdomain(topic):
        return topic
    digest = hashlib.sha256(topic.encode()).hexdigest()[:8]
    base = _UNSAFE.sub("-", topic.lower())
    base = re.sub(r"\.{2,}", ".", base)
    base = re.sub(r"[-.]*\.[-.]*", ".", base)  # a label may neither start nor end with '-'
    base = base.strip("-.")[: _MAX_NAME - 9].strip("-.")
    return f"{base}-{digest}" if base else f"topic-{digest}"


def _is_subdomain(name: str) -> bool:
    return 0 < len(name) <= _MAX_NAME and all(_DNS_LABEL.match(label) for label in name.split("."))


def min_insync_replicas(replicas: int) -> int:
    """``min.insync.replicas`` for ``replicas`` copies: one broker may be down without blocking producers
    (which write with ``acks=all``), never less than 1 and never more than 2 (3 replicas, 2 in sync is the
    usual production setting)."""
    return max(1, min(2, replicas - 1))


def kafka_topic_resources(
    cluster: str,
    *,
    prefix: str = "",
    replicas: int = 3,
    partitions: int | None = None,
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """One ``KafkaTopic`` per catalog topic.

    ``partitions`` overrides every multi-partition topic, like ``METERSTREAM_TOPIC_PARTITIONS`` does for
    ``topics ensure`` (single-partition topics stay single: their one ordered log is the point).
    """
    if not _DNS_LABEL.match(cluster) or len(cluster) > 63:
        raise ValueError(f"cluster must be a DNS-1123 label (the Strimzi Kafka resource's name), got {cluster!r}")
    if not 1 <= replicas <= 32767:
        raise ValueError(f"replicas must be between 1 and 32767, got {replicas}")
    if partitions is not None and partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    resources: list[dict[str, Any]] = []
    for spec in CATALOG:
        topic = prefix + spec.name
        metadata: dict[str, Any] = {"name": object_name(topic), "labels": {CLUSTER_LABEL: cluster}}
        if namespace:
            metadata["namespace"] = namespace
        config = dict(spec.configs)
        config["min.insync.replicas"] = str(min_insync_replicas(replicas))
        count = spec.partitions if spec.partitions == 1 or partitions is None else partitions
        resources.append(
            {
                "apiVersion": API_VERSION,
                "kind": "KafkaTopic",
                "metadata": metadata,
                "spec": {
                    "topicName": topic,
                    "partitions": count,
                    "replicas": replicas,
                    "config": {key: config[key] for key in sorted(config)},
                },
            }
        )
    return resources


def render_strimzi(
    cluster: str,
    *,
    prefix: str = "",
    replicas: int = 3,
    partitions: int | None = None,
    namespace: str | None = None,
) -> str:
    """The resources as one multi-document YAML text, with a header saying how it was generated."""
    args = f"--cluster {cluster}"
    if prefix:
        args += f" --prefix {prefix}"
    if replicas != 3:
        args += f" --replicas {replicas}"
    if partitions is not None:
        args += f" --partitions {partitions}"
    if namespace:
        args += f" --namespace {namespace}"
    header = (
        "# Generated from the topics/ catalog; do not edit. Regenerate with:\n"
        f"#   meterstream topics render --format strimzi {args}\n"
    )
    docs = kafka_topic_resources(cluster, prefix=prefix, replicas=replicas, partitions=partitions, namespace=namespace)
    body = yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False, explicit_start=True)
    return header + body
