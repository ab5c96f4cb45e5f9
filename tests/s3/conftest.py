"""Fixtures of the S3 connector's tests: moto's S3 server over real HTTP (one per session), boto3 pointed at
it through ``METERSTREAM_S3_ENDPOINT``, and a meter in the registry mirror."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest
import redis

from processor.config import Settings
from processor.meters.model import Meter
from processor.ops.s3 import s3_client
from tests.ops.test_reconcile import mirror
from tests.pipeline import put_meters

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

#: moto accepts any credentials; boto3 finds these through its standard chain, as in production.
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing"}
METER = Meter("mtr_s3", "S3 usage", "s3_api", "sum", created=1)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_settings(
    settings_factory: Callable[..., Settings], s3_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    return settings_factory(METERSTREAM_S3_ENDPOINT=s3_endpoint, METERSTREAM_S3_REGION="us-east-1")


@pytest.fixture
def bucket(s3_settings: Settings) -> str:
    name = f"usage-{uuid.uuid4().hex[:10]}"
    s3_client(s3_settings).create_bucket(Bucket=name)
    return name


@pytest.fixture
def s3(s3_settings: Settings) -> S3Client:
    return s3_client(s3_settings)


@pytest.fixture
def meter(s3_settings: Settings, redis_client: redis.Redis) -> Meter:
    put_meters(s3_settings, [METER], int(time.time() * 1000) - 60_000)
    mirror(redis_client, s3_settings, METER)
    return METER


class Connector:
    """``meterstream s3-connector`` as a subprocess (a real process: it can be SIGTERMed and kill -9ed)."""

    def __init__(self, settings: Settings, *args: str) -> None:
        env = {**os.environ, **AWS_ENV, **settings.to_env()}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "processor", "s3-connector", *args],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def output(self) -> str:
        out, _ = self.proc.communicate(timeout=60)
        return out


@pytest.fixture
def connector(s3_settings: Settings) -> Iterator[Callable[..., Connector]]:
    started: list[Connector] = []

    def start(*args: str) -> Connector:
        c = Connector(s3_settings, *args)
        started.append(c)
        return c

    yield start
    for c in started:
        if c.proc.poll() is None:
            c.proc.kill()
            c.proc.wait(10)
