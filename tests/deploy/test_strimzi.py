"""topics/strimzi.py (pure) and ``meterstream topics render``: KafkaTopic resources from the catalog."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from processor.cli import main
from topics import CATALOG
from topics.strimzi import kafka_topic_resources, min_insync_replicas, object_name, render_strimzi

SCHEMA = json.loads((Path(__file__).parent / "strimzi-kafkatopic-v1beta2.schema.json").read_text())
SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
# What Kafka allows in a topic name, and what METERSTREAM_TOPIC_PREFIX allows (processor/config.py).
kafka_names = st.text(alphabet="abcXYZ019._-", min_size=1, max_size=249)
prefixes = st.text(alphabet="abzAZ09._-", max_size=40)


@given(kafka_names)
def test_object_names_are_dns_subdomains(topic: str) -> None:
    name = object_name(topic)
    assert SUBDOMAIN.match(name) and len(name) <= 253, name
    if SUBDOMAIN.match(topic):
        assert name == topic  # valid names are kept, so the usual case reads naturally


@given(kafka_names, kafka_names)
def test_distinct_topics_get_distinct_object_names(a: str, b: str) -> None:
    if a != b:
        assert object_name(a) != object_name(b)


def test_object_name_examples() -> None:
    assert object_name("meter-events") == "meter-events"
    assert object_name("prod.meter-events") == "prod.meter-events"
    for unsafe in ("Prod_meter-events", "-x", "a..b", "x.", "__", "a-.b"):
        name = object_name(unsafe)
        assert SUBDOMAIN.match(name) and re.search(r"-[0-9a-f]{8}$", name), (unsafe, name)


@given(prefixes, st.integers(1, 7), st.none() | st.integers(1, 64))
def test_resources_follow_the_catalog_and_validate(prefix: str, replicas: int, partitions: int | None) -> None:
    resources = kafka_topic_resources("my-kafka", prefix=prefix, replicas=replicas, partitions=partitions)
    assert [r["spec"]["topicName"] for r in resources] == [prefix + spec.name for spec in CATALOG]
    assert len({r["metadata"]["name"] for r in resources}) == len(CATALOG)
    for resource, spec in zip(resources, CATALOG, strict=True):
        jsonschema.Draft7Validator(SCHEMA).validate(resource)
        assert resource["metadata"]["labels"] == {"strimzi.io/cluster": "my-kafka"}
        want = spec.partitions if spec.partitions == 1 or partitions is None else partitions
        assert resource["spec"]["partitions"] == want
        assert resource["spec"]["replicas"] == replicas
        config = resource["spec"]["config"]
        assert config == {**spec.configs, "min.insync.replicas": str(min_insync_replicas(replicas))}
        assert int(config["min.insync.replicas"]) <= replicas


def test_min_insync_replicas() -> None:
    assert [min_insync_replicas(n) for n in (1, 2, 3, 4, 5)] == [1, 1, 2, 2, 2]


@pytest.mark.parametrize(
    "kwargs",
    [{"cluster": "My_Kafka"}, {"cluster": ""}, {"cluster": "k", "replicas": 0}, {"cluster": "k", "partitions": 0}],
)
def test_invalid_arguments_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        kafka_topic_resources(**kwargs)  # type: ignore[arg-type]


def test_namespace_is_set_when_given() -> None:
    assert {r["metadata"]["namespace"] for r in kafka_topic_resources("k", namespace="kafka")} == {"kafka"}
    assert all("namespace" not in r["metadata"] for r in kafka_topic_resources("k"))


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"prefix": "Prod_"}, {"replicas": 1, "partitions": 6, "namespace": "kafka"}],
)
def test_the_header_command_reproduces_the_file(kwargs: dict[str, object]) -> None:
    """The "Regenerate with" line is a real command that prints the same text."""
    text = render_strimzi("meterstream", **kwargs)  # type: ignore[arg-type]
    assert list(yaml.safe_load_all(text)) == kafka_topic_resources("meterstream", **kwargs)  # type: ignore[arg-type]
    command = re.search(r"#   meterstream (.*)\n", text).group(1)  # type: ignore[union-attr]
    result = CliRunner().invoke(main, shlex.split(command), env={})
    assert result.exit_code == 0, result.output
    assert result.output == text


def test_render_takes_prefix_and_partitions_from_the_settings() -> None:
    env = {"METERSTREAM_TOPIC_PREFIX": "staging.", "METERSTREAM_TOPIC_PARTITIONS": "6"}
    result = CliRunner().invoke(main, ["topics", "render", "--cluster", "k"], env=env)
    assert result.exit_code == 0, result.output
    assert result.output == render_strimzi("k", prefix="staging.", partitions=6)
    explicit = CliRunner().invoke(
        main, ["topics", "render", "--cluster", "k", "--prefix", "", "--partitions", "3"], env=env
    )
    assert explicit.output == render_strimzi("k", prefix="", partitions=3)


def test_render_refuses_a_bad_cluster_name() -> None:
    result = CliRunner().invoke(main, ["topics", "render", "--cluster", "Bad_Name"], env={})
    assert result.exit_code == 2 and "DNS-1123" in result.output
