"""Fixtures for the sink's integration tests: a Stripe emulator on a free port, accepted records
produced to the test's topics, meters in the Redis mirror, and the sink as a real subprocess
(``python -m processor sink``) pointed at all of them."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import TopicPartition

from processor.config import Settings
from processor.emulator import EmulatorConfig, EmulatorServer, FaultConfig
from processor.kafka.consume import new_consumer
from processor.kafka.produce import AckedProducer
from processor.meters.model import Meter
from processor.state.keys import Keys
from tests import helpers
from tests.helpers import EmulatorControl, child_env
from topics import Topic, topic_name

API_KEY = "sk_test_sinkintegration"


@pytest.fixture
def emulator() -> Iterator[EmulatorControl]:
    """A fresh emulator per test (faults are set per test through the control endpoint)."""
    with EmulatorServer(EmulatorConfig(port=0, api_key=API_KEY, faults=FaultConfig(), seed=99)) as server:
        yield EmulatorControl(server.url)


@dataclass
class Produced:
    """What a test produced: values by customer in Kafka order, and the last offset per partition."""

    by_customer: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    end_offsets: dict[int, int] = field(default_factory=dict)
    at: dict[tuple[int, int], Any] = field(default_factory=dict)  # (partition, offset) -> parsed value
    count: int = 0


def produce_accepted(
    settings: Settings, records: list[tuple[str, bytes]], produced: Produced | None = None
) -> Produced:
    """Produce ``(customer, value)`` records to the accepted topic, keyed by customer, in list order."""
    produced = produced or Produced()
    producer = AckedProducer(settings)
    topic = topic_name(Topic.ACCEPTED, settings.topic_prefix)
    errors: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            produced.end_offsets[msg.partition()] = max(produced.end_offsets.get(msg.partition(), -1), msg.offset())
            try:
                produced.at[(msg.partition(), msg.offset())] = json.loads(msg.value())
            except ValueError:
                produced.at[(msg.partition(), msg.offset())] = None

    for customer, value in records:
        producer.produce(topic, value, customer, on_delivery=on_delivery)
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = None
        produced.by_customer.setdefault(customer, []).append(parsed)
        produced.count += 1
    assert producer.flush(30) == 0
    assert not errors, errors
    return produced


def put_meter(settings: Settings, redis_client: Any, meter: Meter) -> None:
    """Publish a meter as the meter registry does: the compacted topic and the Redis mirror."""
    producer = AckedProducer(settings)
    producer.produce(topic_name(Topic.METERS, settings.topic_prefix), meter.to_json().encode(), meter.id)
    assert producer.flush(30) == 0
    redis_client.hset(Keys(settings.redis_prefix).meters, meter.id, meter.to_json())


def event(meter: Meter, customer: str, identifier: str, value: int, timestamp: int | None = None) -> bytes:
    ts = int(time.time()) - 60 if timestamp is None else timestamp
    return json.dumps(
        {
            "kind": "event",
            "meter_id": meter.id,
            "event_name": meter.event_name,
            "identifier": identifier,
            "customer": customer,
            "timestamp": ts,
            "payload": {meter.customer_key: customer, meter.value_key: str(value)},
            "received_at": ts * 1000,
            "source": f"meter-events/0/{identifier}",
        }
    ).encode()


def cancel(meter: Meter, customer: str, identifier: str) -> bytes:
    return json.dumps(
        {
            "kind": "cancel",
            "meter_id": meter.id,
            "event_name": meter.event_name,
            "identifier": identifier,
            "customer": customer,
            "received_at": int(time.time() * 1000),
            "source": f"meter-event-adjustments/0/{identifier}",
        }
    ).encode()


class SinkProcess:
    """``python -m processor sink`` as a child process, its output in a log file."""

    def __init__(self, settings: Settings, log_path: Path, args: tuple[str, ...] = ()) -> None:
        env = child_env()
        env.update(settings.to_env())
        self.log_path = log_path
        self._log = open(log_path, "ab")  # closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "processor", "sink", *args], env=env, stdout=self._log, stderr=subprocess.STDOUT
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM (a graceful drain) and the exit code."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.alive():
            self.kill()
        self._log.close()


@pytest.fixture
def sink_factory(tmp_path: Path) -> Iterator[Callable[..., SinkProcess]]:
    started: list[SinkProcess] = []

    def start(settings: Settings, *args: str) -> SinkProcess:
        sink = SinkProcess(settings, tmp_path / f"sink-{len(started)}.log", args)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        sink.stop()


def wait_until(predicate: Callable[[], bool], timeout: float, what: str, sink: SinkProcess | None = None) -> None:
    """Poll ``predicate`` (a liveness bound, not a performance assertion); fail at once if ``sink`` exits."""

    def check() -> bool:
        if predicate():
            return True
        if sink is not None and not sink.alive():
            pytest.fail(f"the sink exited ({sink.proc.returncode}) before {what}:\n{sink.output()[-4000:]}")
        return False

    tail = (lambda: sink.output()[-4000:]) if sink is not None else None
    helpers.wait_until(check, what, timeout, interval=0.5, on_timeout=tail)


def committed_offsets(settings: Settings, partitions: list[int]) -> dict[int, int]:
    consumer = new_consumer(settings, settings.sink_group)
    try:
        topic = topic_name(Topic.ACCEPTED, settings.topic_prefix)
        found = consumer.committed([TopicPartition(topic, p) for p in partitions], timeout=30)
        return {tp.partition: tp.offset for tp in found}
    finally:
        consumer.close()


def read_all(settings: Settings, base: str, expect: int, timeout: float = 60.0) -> list[Any]:
    """Every record of a topic, read from the start by a throwaway group, until ``expect`` arrived."""
    consumer = new_consumer(settings, f"reader-{time.monotonic_ns()}")
    consumer.subscribe([topic_name(base, settings.topic_prefix)])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(out) < expect:
            for msg in consumer.consume(100, 0.5):
                if not msg.error():
                    out.append(msg)
    finally:
        consumer.close()
    return out
