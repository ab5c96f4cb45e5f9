"""`meterstream up --data DIR` survives kill -9 of every one of its processes mid-stream.

A producer streams events with fixed identifiers into the running stack; when part of them are
acknowledged, `up`, the broker, its object store, Valkey, the emulator and every pipeline component are
killed with SIGKILL at once. `up --data DIR` is started again, and then:

- every record the broker had acknowledged is still on `meter-events` (the topics are complete);
- the meter created before the crash is still there;
- after the producer sends the whole stream again (what a producer does after a failure: same
  identifiers), each customer's aggregate equals the sum of the stream counted once, and
  `meter-events-accepted` holds every identifier exactly once (exact: nothing lost, nothing twice).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from processor.cli import main
from processor.config import Settings, load_settings
from processor.embedded import free_port
from processor.kafka import AckedProducer, new_consumer
from tests.e2e.conftest import read_banner, start_up
from tests.helpers import child_env
from tests.pipeline import event_value
from topics import Topic, topic_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N = 6000
CUSTOMERS = 20


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc: each process's parent), deepest last."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


@contextmanager
def up_data(data: Path, port: int) -> Iterator[tuple[subprocess.Popen[str], dict[str, str], str]]:
    proc = start_up(child_env(METERSTREAM_GATEWAY_PORT=str(port)), "--data", str(data))
    _, exports, lines = read_banner(proc)
    assert "METERSTREAM_KAFKA_BOOTSTRAP" in exports, "".join(lines)
    # keep draining up's output so it never blocks on a full pipe
    threading.Thread(target=lambda: [None for _ in proc.stdout or []], daemon=True).start()
    try:
        yield proc, exports, "".join(lines)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                for pid in [proc.pid, *descendants(proc.pid)]:
                    os.kill(pid, signal.SIGKILL)


def kill_everything(proc: subprocess.Popen[str]) -> int:
    """SIGKILL `up` and every process under it at once (components run in their own sessions, so a
    process-group kill would miss them); returns how many were killed."""
    victims = [proc.pid, *descendants(proc.pid)]
    for pid in victims:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(30)
    return len(victims)


def stream(now: int) -> list[tuple[str, bytes, str, int]]:
    """(customer, value, identifier, amount) of the whole stream, deterministic."""
    out = []
    for i in range(N):
        customer, amount, ident = f"cus_{i % CUSTOMERS}", i % 7 + 1, f"dur-{i}"
        out.append((customer, event_value("dur_calls", customer, amount, ident, now - 60), ident, amount))
    return out


def read_topic(settings: Settings, base: Topic) -> list[dict[str, object]]:
    topic = topic_name(base, settings.topic_prefix)
    consumer = new_consumer(settings, "durable-check", **{"enable.partition.eof": True, "log_level": 0})
    parts = consumer.list_topics(topic, timeout=15).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    records: list[dict[str, object]] = []
    at_eof: set[int] = set()
    deadline = time.monotonic() + 120
    while len(at_eof) < len(parts) and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 1.0):
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    at_eof.add(msg.partition() or 0)
                continue
            records.append(json.loads(msg.value() or b"{}"))
    consumer.close()
    assert len(at_eof) == len(parts), f"{topic}: not read to the end"
    return records


def test_kill_9_of_every_process_loses_nothing_and_counts_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    port = free_port()
    runner = CliRunner()
    now = int(time.time())
    events = stream(now)
    acked: set[str] = set()

    with up_data(data, port) as (proc, exports, output):
        assert f"DURABLE in {data}" in output and "EPHEMERAL" not in output
        made = runner.invoke(
            main,
            ["meters", "create", "--event-name", "dur_calls", "--display-name", "D", "--formula", "sum"],
            env=exports,
        )
        assert made.exit_code == 0, made.output
        settings = load_settings(exports)
        topic = topic_name(Topic.EVENTS, settings.topic_prefix)
        with redis.Redis.from_url(exports["METERSTREAM_REDIS_URL"]) as r:
            r.set("durable-test:sentinel", "written before the kill")  # Valkey's own durability, below

        def delivered(err: object, msg: object) -> None:
            if err is None:
                acked.add(json.loads(msg.value())["identifier"])  # type: ignore[attr-defined]

        producer = AckedProducer(settings, config={"log_level": 0}, on_delivery=delivered)

        killed = 0
        for i, (customer, value, _, _) in enumerate(events):
            producer.produce(topic, key=customer, value=value)
            if i % 100 == 99:
                # a stream with at most ~1,000 records in flight, not one burst: records are being produced,
                # stored, processed and sent to the emulator when the kill comes
                producer.poll(0)
                while i + 1 - len(acked) > 1000:
                    producer.poll(0.05)
            if len(acked) >= N // 3:
                killed = kill_everything(proc)
                break
        assert killed >= 8, "expected up, broker, object store, Valkey, emulator and 3 components"
        producer.close(5)  # whatever is in flight now fails or was acknowledged before the kill
        acked_before = set(acked)
    assert N // 3 <= len(acked_before) < N

    with up_data(data, port) as (proc, exports2, output):
        assert exports2 == exports  # same ports and keys: the printed exports stay valid
        # the topics are complete: every acknowledged record survived
        on_topic = {str(r["identifier"]) for r in read_topic(settings, Topic.EVENTS)}
        assert acked_before <= on_topic, f"{len(acked_before - on_topic)} acknowledged records lost"
        with redis.Redis.from_url(exports["METERSTREAM_REDIS_URL"]) as r:
            assert r.get("durable-test:sentinel") == b"written before the kill"  # the AOF survived kill -9
        listed = runner.invoke(main, ["meters", "list"], env=exports)
        assert "dur_calls" in listed.output, listed.output

        # the producer's retry after the failure: the whole stream again, same identifiers
        producer = AckedProducer(settings, config={"log_level": 0})
        for customer, value, _, _ in events:
            producer.produce(topic, key=customer, value=value)
            producer.poll(0)
        assert producer.flush(60) == 0

        expected: Counter[str] = Counter()
        for customer, _, _, amount in events:
            expected[customer] += amount
        hour = (now - 60) // 3600 * 3600

        def totals() -> dict[str, int]:
            found = {}
            for customer in expected:
                res = runner.invoke(
                    main,
                    ["usage", "--meter", "dur_calls", "--customer", customer, "--from", str(hour),
                     "--to", str(hour + 3600), "--json"],
                    env=exports,
                )  # fmt: skip
                rows = [json.loads(line) for line in res.stdout.splitlines()]
                found[customer] = sum(r["aggregated_value"] or 0 for r in rows)
            return found

        deadline = time.monotonic() + 180
        got = totals()
        while got != dict(expected) and time.monotonic() < deadline:
            time.sleep(2)
            got = totals()
        assert got == dict(expected)  # each event counted exactly once

        accepted = Counter(str(r["identifier"]) for r in read_topic(settings, Topic.ACCEPTED))
        assert set(accepted) == {ident for _, _, ident, _ in events}
        assert max(accepted.values()) == 1, [k for k, n in accepted.items() if n > 1][:10]
