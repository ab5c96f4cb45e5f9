"""A Redis Cluster of its own for these tests (3 primaries, 1 replica each): they move slots and fail over
primaries, which must not disturb the session's Redis that every other test shares.

They run in the Makefile's second run (``METERSTREAM_TEST_REDIS_CLUSTER=1``, the Redis Cluster run) and are
skipped, with that reason, in the main run, whose time budget is spent elsewhere."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from processor.config import Settings
from processor.embedded import EmbeddedRedisCluster
from processor.state.connect import SyncRedis, sync_redis_url
from tests.conftest import cluster_wanted


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if cluster_wanted():
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(
        reason="Redis Cluster tests run with METERSTREAM_TEST_REDIS_CLUSTER=1 (make test's 2nd run)"
    )
    for item in items:
        if here in Path(item.path).parents:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedisCluster]:
    with EmbeddedRedisCluster(workdir=tmp_path_factory.mktemp("cluster"), primaries=3, replicas=1) as c:
        yield c


@pytest.fixture
def cluster_settings(settings_factory: Callable[..., Settings], cluster: EmbeddedRedisCluster) -> Settings:
    """The test's isolated settings, pointed at this module's cluster (cluster mode left to auto-detection), small batches so a chunk of records takes many."""
    return settings_factory(partitions=3, METERSTREAM_REDIS_URL=cluster.url, METERSTREAM_PROCESSOR_BATCH="500")


@pytest.fixture
def cluster_client(cluster: EmbeddedRedisCluster) -> Iterator[SyncRedis]:
    client = sync_redis_url(cluster.url, decode_responses=True)
    yield client
    client.close()
