"""Shared fixtures: a real Kafka-protocol broker and a real Redis, started lazily once per session.

Where the services come from, in order:
1. ``METERSTREAM_TEST_KAFKA`` / ``METERSTREAM_TEST_REDIS`` name existing services (a Redis Cluster node is
   detected as such: every component then uses the cluster client);
2. otherwise the embedded Tansu broker and Valkey server (the wheels in our dependencies);
   ``METERSTREAM_TEST_REDIS_CLUSTER=1`` starts an embedded 3-primary Valkey Redis Cluster instead of one server;
3. ``METERSTREAM_TEST_DOCKER=1`` uses testcontainers (apache/kafka, redis) where a Docker engine runs.

Each test gets its own topic prefix and Redis prefix (``settings`` fixture), so tests never see each
other's records or keys and need no cleanup between them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from processor.config import Settings, load_settings
from processor.embedded import EmbeddedKafka, EmbeddedRedis, EmbeddedRedisCluster
from processor.kafka.admin import ensure_topics
from processor.state.connect import SyncRedis, sync_redis_url
from tests.helpers import Hook

pytest_plugins = ["tests.fixtures"]


@pytest.fixture(autouse=True)
def _clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests build settings explicitly; a developer's METERSTREAM_* variables must not leak in."""
    for name in list(os.environ):
        if name.startswith("METERSTREAM_") and not name.startswith("METERSTREAM_TEST_"):
            monkeypatch.delenv(name)


def _docker_wanted() -> bool:
    return os.environ.get("METERSTREAM_TEST_DOCKER") == "1"


def cluster_wanted() -> bool:
    """The suite runs against an embedded Redis Cluster (the Makefile's second, cluster run)."""
    return os.environ.get("METERSTREAM_TEST_REDIS_CLUSTER") == "1"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("METERSTREAM_TEST_KAFKA"):
        yield os.environ["METERSTREAM_TEST_KAFKA"]
        return
    if _docker_wanted():  # pragma: no cover - needs a Docker engine
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:3.8.0").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    with EmbeddedKafka(workdir=tmp_path_factory.mktemp("kafka")) as kafka:
        yield kafka.bootstrap


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("METERSTREAM_TEST_REDIS"):
        yield os.environ["METERSTREAM_TEST_REDIS"]
        return
    if _docker_wanted():  # pragma: no cover - needs a Docker engine
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7.4") as container:
            host, port = container.get_container_host_ip(), container.get_exposed_port(6379)
            yield f"redis://{host}:{port}/0"
        return
    if cluster_wanted():
        with EmbeddedRedisCluster(workdir=tmp_path_factory.mktemp("redis-cluster"), primaries=3) as cluster:
            yield cluster.url
        return
    with EmbeddedRedis(workdir=tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture
def now() -> int:
    """The wall-clock second (Unix) at which this test started.

    Read when the test runs, not when its module is imported: a module-level ``NOW = time.time()`` is as
    old as the collection, and a long run (or one test waiting on another worker) could push a test's
    "recent" events past Stripe's 35-day or 5-minute windows, or into another hour than the one it
    asserts on. Tests derive their buckets from it with ``processor.windows``."""
    return int(time.time())


@pytest.fixture
def unique() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture
def settings_factory(kafka_bootstrap: str, redis_url: str, unique: str) -> Callable[..., Settings]:
    """Settings isolated to this test (own topic prefix, Redis prefix and groups), topics created."""

    def make(*, partitions: int = 3, ensure: bool = True, **env: str) -> Settings:
        base = {
            "METERSTREAM_KAFKA_BOOTSTRAP": kafka_bootstrap,
            "METERSTREAM_REDIS_URL": redis_url,
            "METERSTREAM_TOPIC_PREFIX": f"t{unique}.",
            "METERSTREAM_REDIS_PREFIX": f"ms{unique}",
            "METERSTREAM_PROCESSOR_GROUP": f"proc-{unique}",
            "METERSTREAM_SINK_GROUP": f"sink-{unique}",
            "METERSTREAM_TOPIC_PARTITIONS": str(partitions),
        }
        base.update(env)
        settings = load_settings(base)
        if ensure:
            ensure_topics(settings)
        return settings

    return make


@pytest.fixture
def settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory()


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[SyncRedis]:
    """A str client for the test Redis: a cluster client when it is a cluster (processor/state/connect.py)."""
    client = sync_redis_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent


#: Fixtures that start (or reach) a broker or Redis; a test that uses one, directly or through another
#: fixture, is an integration test.
SERVICE_FIXTURES = frozenset({"kafka_bootstrap", "redis_url"})
#: Directories whose tests run whole programs (``meterstream up``, subprocess pipelines, a Redis Cluster,
#: a browser) rather than only calling code.
SERVICE_DIRECTORIES = frozenset({"e2e", "faults", "cluster"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that needs a service ``integration``, so ``make unit`` (``-m "not integration"``)
    runs exactly the tests that need none, wherever they live."""
    root = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(root).parts
        uses = SERVICE_FIXTURES.intersection(getattr(item, "fixturenames", ()))
        if uses or (parts and parts[0] in SERVICE_DIRECTORIES):
            item.add_marker(pytest.mark.integration)


@pytest.fixture
def hook() -> Iterator[Hook]:
    """A webhook endpoint on a free port (tests.helpers.Hook) for error-report deliveries."""
    with Hook() as server:
        yield server  # type: ignore[misc]
