"""The dashboard's events explorer (processor/gateway/explorer.py ``read_tail``) against the real broker,
without a browser: the browser test of the same page needs chromium and is skipped where it is absent, and
the explorer's consumer comes from the Kafka layer (``new_consumer``) like every other one."""

from __future__ import annotations

import json

import pytest

from processor.config import Settings
from processor.gateway.explorer import ExplorerQuery, read_tail
from processor.kafka.produce import AckedProducer
from topics import Topic, topic_name

pytestmark = pytest.mark.integration


def _accepted(i: int) -> bytes:
    return json.dumps(
        {
            "kind": "event",
            "meter_id": "mtr_1",
            "event_name": "calls",
            "customer": f"cus_{i % 2}",
            "identifier": f"ev-{i}",
            "timestamp": 1_700_000_000 + i,
            "payload": {"stripe_customer_id": f"cus_{i % 2}", "value": str(i)},
            "received_at": 1_700_000_000_000 + i,
        }
    ).encode()


def _rejected(identifier: str) -> bytes:
    event = {"event_name": "nope", "identifier": identifier, "payload": {"stripe_customer_id": "cus_9"}}
    record = {"code": "no_meter", "message": "No active meter", "event": event, "topic": Topic.EVENTS}
    return json.dumps({**record, "partition": 0, "offset": 7, "received_at": 1_700_000_000_000}).encode()


def test_the_tail_of_each_partition_is_read_and_filtered(settings: Settings) -> None:
    producer = AckedProducer(settings)
    accepted = topic_name(Topic.ACCEPTED, settings.topic_prefix)
    for i in range(20):
        producer.produce(accepted, _accepted(i), "one-partition")  # one key: one partition, in order
    producer.produce(topic_name(Topic.ERRORS, settings.topic_prefix), _rejected("lost-1"), "cus_9")
    assert producer.close(30) == 0

    found = read_tail(settings, ExplorerQuery("accepted", meter="calls", customer="cus_0", limit=100))
    assert found["topic"] == Topic.ACCEPTED
    assert sorted(row["identifier"] for row in found["data"]) == sorted(f"ev-{i}" for i in range(0, 20, 2))
    assert found["scanned"] == 20 and not found["has_more"]

    # Only the newest `tail` records of each partition are read, and the newest come first.
    short = read_tail(settings, ExplorerQuery("accepted", limit=100), tail=3)
    assert [row["identifier"] for row in short["data"]] == ["ev-19", "ev-18", "ev-17"]
    assert short["scanned"] == 3

    rejected = read_tail(settings, ExplorerQuery("rejected", identifier="lost"))
    assert [(row["code"], row["identifier"], row["customer"]) for row in rejected["data"]] == [
        ("no_meter", "lost-1", "cus_9")
    ]
    assert rejected["data"][0]["source"] == f"{Topic.EVENTS}/0/7"
