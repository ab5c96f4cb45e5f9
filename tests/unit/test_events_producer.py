"""MeterEventProducer logic that needs no broker: no I/O before the first send, validation and customer
resolution before any client exists, topic names; and the package's public API."""

from __future__ import annotations

import subprocess
import sys

import pytest

import processor
from processor import ConfigError, EventValidationError, MeterEventProducer, Settings
from processor.events.producer import _dumps


def _offline() -> Settings:
    # No bootstrap: creating the confluent-kafka client would raise ConfigError, so any test below
    # that gets an EventValidationError proves validation ran first, with no I/O.
    return Settings(kafka_bootstrap=None, topic_prefix="pfx.")


def test_constructor_does_no_io_and_flush_close_are_noops() -> None:
    producer = MeterEventProducer(_offline())
    assert len(producer) == 0
    assert producer.flush(0.1) == 0
    producer.close()
    with MeterEventProducer(_offline()):
        pass


def test_topic_names_take_the_prefix() -> None:
    producer = MeterEventProducer(_offline())
    assert producer.events_topic == "pfx.meter-events"
    assert producer.adjustments_topic == "pfx.meter-event-adjustments"


def test_the_client_is_created_on_first_valid_send() -> None:
    producer = MeterEventProducer(_offline())
    with pytest.raises(ConfigError, match="METERSTREAM_KAFKA_BOOTSTRAP"):
        producer.send("e", {"stripe_customer_id": "cus_1"})


def test_invalid_event_raises_before_any_client() -> None:
    producer = MeterEventProducer(_offline())
    with pytest.raises(EventValidationError) as info:
        producer.send("", {"stripe_customer_id": "cus_1"})
    assert info.value.param == "event_name"
    with pytest.raises(EventValidationError) as info:
        producer.send("e", {"stripe_customer_id": "cus_1", "value": 1.5})
    assert info.value.param == "payload[value]"
    with pytest.raises(EventValidationError) as info:
        producer.cancel("e", "")
    assert info.value.param == "cancel[identifier]"


def test_missing_customer_is_stripes_no_customer_message() -> None:
    producer = MeterEventProducer(_offline())
    with pytest.raises(EventValidationError) as info:
        producer.send("e", {"value": 1})
    err = info.value
    assert (err.message, err.param, err.code) == (
        "Customer mapping key stripe_customer_id not found in payload.",
        "payload[stripe_customer_id]",
        "parameter_missing",
    )
    with pytest.raises(EventValidationError) as info:
        producer.send("e", {"stripe_customer_id": "", "value": 1})
    assert info.value.param == "payload[stripe_customer_id]"


def test_customer_key_is_configurable_and_customer_must_agree_with_payload() -> None:
    producer = MeterEventProducer(_offline(), customer_key="account")
    with pytest.raises(EventValidationError) as info:
        producer.send("e", {"stripe_customer_id": "cus_1"})
    assert info.value.param == "payload[account]"
    with pytest.raises(EventValidationError) as info:
        producer.send("e", {"account": "a1"}, customer="a2")
    assert info.value.param == "customer"
    with pytest.raises(EventValidationError) as info:
        producer.send("e", {"account": "a1"}, customer="")
    assert info.value.param == "customer"
    with pytest.raises(EventValidationError):
        MeterEventProducer(_offline(), customer_key="")


def test_values_are_compact_utf8_json() -> None:
    assert _dumps({"event_name": "é", "payload": {"k": 1}}) == '{"event_name":"é","payload":{"k":1}}'.encode()


def test_public_api_is_curated_and_resolvable() -> None:
    assert {"MeterEventProducer", "Settings", "load_settings"} <= set(processor.__all__)
    assert processor.__all__ == sorted(processor.__all__)
    for name in processor.__all__:
        assert getattr(processor, name) is not None
    with pytest.raises(AttributeError):
        _ = processor.no_such_name  # type: ignore[attr-defined]


def test_importing_the_package_does_not_import_confluent_kafka() -> None:
    code = (
        "import sys, processor, processor.events; "
        "assert 'confluent_kafka' not in sys.modules, 'eager import'; "
        "processor.MeterEventProducer; "
        "assert 'confluent_kafka' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
