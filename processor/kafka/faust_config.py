"""The sink's faust (aiokafka) broker settings, translated from the same settings the confluent-kafka
clients use (:mod:`processor.kafka.clients`), so the brokers, the security pass-through (SPEC §7) and the
group timings are decided in one layer for both client libraries.

faust is imported here, not in :mod:`processor.kafka.clients`, so components that never run the sink do
not pay for importing it."""

from __future__ import annotations

import ssl
from typing import Any

import faust

from processor.config import Settings
from processor.errors import ConfigError
from processor.kafka.clients import HEARTBEAT_INTERVAL_MS, SESSION_TIMEOUT_MS

__all__ = ["broker_credentials", "faust_broker_settings"]


def broker_credentials(settings: Settings) -> Any:
    """Faust credentials from the librdkafka security pass-through settings, or None for PLAINTEXT."""
    conf = settings.kafka_config()
    protocol = str(conf.get("security.protocol", "PLAINTEXT")).upper()
    if protocol == "PLAINTEXT":
        return None
    context: ssl.SSLContext | None = None
    if protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=conf.get("ssl.ca.location"))
        if conf.get("ssl.certificate.location"):
            context.load_cert_chain(
                conf["ssl.certificate.location"], conf.get("ssl.key.location"), conf.get("ssl.key.password")
            )
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    if protocol not in ("SASL_PLAINTEXT", "SASL_SSL"):
        raise ConfigError(f"METERSTREAM_KAFKA_SECURITY_PROTOCOL {protocol!r} is not supported by the sink")
    return faust.SASLCredentials(
        username=conf.get("sasl.username"),
        password=conf.get("sasl.password"),
        mechanism=str(conf.get("sasl.mechanism", "PLAIN")).upper(),
        ssl_context=context,
    )


def faust_broker_settings(settings: Settings) -> dict[str, Any]:
    """Keyword arguments of ``faust.App`` for the brokers: addresses, credentials, group timings (the
    6 s session timeout Tansu needs, SPEC §11), commit interval and ``acks=all`` for the DLQ producer."""
    bootstrap = str(settings.kafka_config()["bootstrap.servers"])
    return {
        "broker": [f"kafka://{host}" for host in bootstrap.split(",")],
        "broker_credentials": broker_credentials(settings),
        "broker_session_timeout": SESSION_TIMEOUT_MS / 1000,
        "broker_heartbeat_interval": HEARTBEAT_INTERVAL_MS / 1000,
        "broker_commit_interval": 1.0,
        "producer_acks": -1,
    }
