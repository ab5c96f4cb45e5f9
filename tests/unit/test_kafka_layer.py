"""The Kafka layer's client settings: confluent-kafka consumers and the sink's faust app get the same
brokers, group timings and security settings from one place."""

from __future__ import annotations

import faust
import pytest

from processor.config import load_settings
from processor.errors import ConfigError
from processor.kafka.clients import consumer_config
from processor.kafka.faust_config import faust_broker_settings

BASE = {"METERSTREAM_KAFKA_BOOTSTRAP": "k1:9092,k2:9093"}


def test_faust_and_confluent_consumers_share_brokers_and_group_timings() -> None:
    settings = load_settings(BASE)
    faust_side = faust_broker_settings(settings)
    confluent = consumer_config(settings, "g")
    assert faust_side["broker"] == ["kafka://k1:9092", "kafka://k2:9093"]
    assert faust_side["broker_session_timeout"] * 1000 == confluent["session.timeout.ms"]
    assert faust_side["broker_heartbeat_interval"] * 1000 == confluent["heartbeat.interval.ms"]
    assert faust_side["broker_credentials"] is None and faust_side["producer_acks"] == -1


def test_sasl_settings_become_faust_credentials() -> None:
    settings = load_settings(
        {
            **BASE,
            "METERSTREAM_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "METERSTREAM_KAFKA_SASL_MECHANISM": "scram-sha-256",
            "METERSTREAM_KAFKA_SASL_USERNAME": "svc",
            "METERSTREAM_KAFKA_SASL_PASSWORD": "s3cret",
        }
    )
    credentials = faust_broker_settings(settings)["broker_credentials"]
    assert isinstance(credentials, faust.SASLCredentials)
    assert (credentials.username, credentials.password, credentials.mechanism.value) == (
        "svc",
        "s3cret",
        "SCRAM-SHA-256",
    )


def test_an_unsupported_security_protocol_names_the_variable() -> None:
    settings = load_settings({**BASE, "METERSTREAM_KAFKA_SECURITY_PROTOCOL": "KERBEROS_MAGIC"})
    with pytest.raises(ConfigError, match="METERSTREAM_KAFKA_SECURITY_PROTOCOL"):
        faust_broker_settings(settings)
