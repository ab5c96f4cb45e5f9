from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from confluent_kafka.admin import NewTopic  # type: ignore[attr-defined]

from processor.config import Settings
from processor.embedded import EmbeddedRedis
from processor.errors import EmbeddedError, TopicDriftError
from processor.kafka.admin import ensure_topics, new_admin
from topics import Topic, topic_name

pytestmark = pytest.mark.integration


def test_ensure_is_idempotent(settings: Settings) -> None:
    again = ensure_topics(settings)
    assert {r.status for r in again} == {"ok"}
    by_name = {r.name: r for r in again}
    assert by_name[topic_name(Topic.METERS, settings.topic_prefix)].partitions == 1
    assert by_name[topic_name(Topic.EVENTS, settings.topic_prefix)].partitions == 3


def test_check_only_reports_missing(settings_factory: Callable[..., Settings]) -> None:
    s = settings_factory(ensure=False)
    reports = ensure_topics(s, check_only=True)
    assert {r.status for r in reports} == {"missing"}


def test_drift_in_partition_count_is_reported(settings_factory: Callable[..., Settings]) -> None:
    s = settings_factory(ensure=False)
    events = topic_name(Topic.EVENTS, s.topic_prefix)
    admin = new_admin(s)  # kept: a collected client cancels its pending request
    admin.create_topics([NewTopic(events, 2, -1)])[events].result()
    with pytest.raises(TopicDriftError) as err:
        ensure_topics(s)
    assert Topic.EVENTS in str(err.value) and "partitions=2" in str(err.value)


def test_embedded_redis_starts_and_stops(tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = EmbeddedRedis(workdir=tmp_path).start()
    client = redis.Redis.from_url(server.url)
    assert client.ping()
    server.stop()
    with pytest.raises(redis.ConnectionError):
        client.ping()


def test_embedded_failure_is_a_clear_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(EmbeddedError) as err:
        EmbeddedRedis(workdir=tmp_path, extra_args=["--no-such-option", "1"]).start(timeout=5)
    assert "Valkey" in str(err.value)


def test_topics_ensure_cli(settings: Settings) -> None:
    from click.testing import CliRunner

    from processor.cli import main

    result = CliRunner().invoke(main, ["topics", "ensure", "--check"], env=settings.to_env())
    assert result.exit_code == 0, result.output
    assert Topic.EVENTS in result.output and "ok" in result.output
    bad = CliRunner().invoke(main, ["topics", "ensure"], env={**settings.to_env(), "METERSTREAM_STRIPE_MODE": "v9"})
    assert bad.exit_code == 2 and "METERSTREAM_STRIPE_MODE" in bad.output
