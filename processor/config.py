"""Settings: read once from the environment, validated, frozen.

This is the only module that reads ``METERSTREAM_*`` variables. Every component receives a
:class:`Settings` (or a value derived from it), never ``os.environ``. Invalid values fail at start with a
:class:`~processor.errors.ConfigError` that names the variable, and unknown ``METERSTREAM_*`` variables
are rejected too (a typo must not silently fall back to a default).

Secrets (Stripe key, gateway API keys, SASL password) are :class:`Secret` values whose ``repr`` and
``str`` are masked, so printing settings or logging them never leaks a key.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

from processor.errors import ConfigError
from processor.limits import USAGE_RETENTION_DAYS

__all__ = ["ENV_PREFIX", "Secret", "Settings", "load_settings"]

ENV_PREFIX = "METERSTREAM_"
STRIPE_DEFAULT_API_BASE = "https://api.stripe.com"
#: Keys ``meterstream up`` generates for its local Stripe emulator start with this; such a key must never be
#: sent to api.stripe.com (it would leak a local secret to Stripe and fail confusingly), see load_settings.
EMULATOR_KEY_PREFIX = "sk_test_emu"
#: The hint of every "not set" error: `up` may already be running in another terminal, in which case the
#: fix is to paste the export lines it printed, not to start it.
_UP_HINT = "(the `export` lines `meterstream up` printed set it; or point it at your own {what})"


class Secret:
    """A string that never shows itself in ``repr``/``str``/logs; call :meth:`reveal` where it is used."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')" if self._value else "Secret('')"

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


# Kafka security settings pass through to librdkafka unchanged (SPEC §7).
_KAFKA_PASSTHROUGH: dict[str, str] = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
    "KAFKA_SSL_KEY_PASSWORD": "ssl.key.password",
}
_SECRET_KAFKA = {"sasl.password", "ssl.key.password"}

_PREFIX_RE = re.compile(r"^[A-Za-z0-9._-]*$")
_REDIS_PREFIX_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_GROUP_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_CLUSTER_MODES: dict[str, bool | None] = {"auto": None, "true": True, "false": False}


#: Shortest gateway API key accepted: 16 random characters are ~95 bits, out of reach of any guessing the
#: gateway's failed-authentication delay allows (docs/security.md). Generated keys are 42 characters.
MIN_API_KEY_LENGTH = 16


@dataclass(frozen=True)
class Settings:
    """Everything configurable, resolved and validated. Build it with :func:`load_settings`."""

    kafka_bootstrap: str | None = None
    redis_url: str | None = None
    #: ``METERSTREAM_REDIS_CLUSTER``: True/False force the Redis Cluster / single-node client; None (``auto``,
    #: the default) asks the server (``INFO cluster``) once per URL. See processor/state/connect.py.
    redis_cluster: bool | None = None
    topic_prefix: str = ""
    redis_prefix: str = "ms"
    processor_group: str = "meterstream-processor"
    sink_group: str = "meterstream-sink"
    stripe_api_key: Secret = field(default_factory=lambda: Secret(""))
    stripe_api_base: str = STRIPE_DEFAULT_API_BASE
    stripe_mode: str = "v2_stream"
    stripe_rate: float = 25.0
    api_keys: tuple[Secret, ...] = ()
    gateway_port: int = 8080
    log_level: str = "INFO"
    processor_batch: int = 5000
    #: ``METERSTREAM_USAGE_RETENTION_DAYS``: how long hour, day and minute buckets are kept, counted from the
    #: bucket's start (default 70: Stripe's 35-day timestamp window plus a 31-day billing period, and slack).
    #: At least 36, so an event Stripe still accepts never lands in a bucket already dropped.
    usage_retention_days: int = USAGE_RETENTION_DAYS
    topic_partitions: int | None = None
    kafka_security: tuple[tuple[str, Secret | str], ...] = ()
    #: S3-compatible endpoint of the S3 connector (None: AWS); credentials come from boto3's own chain.
    s3_endpoint: str | None = None
    #: S3 region (None: boto3's chain, e.g. AWS_REGION / ~/.aws/config).
    s3_region: str | None = None

    def kafka_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka config: bootstrap plus security pass-through plus ``extra`` (dots as underscores
        are not translated: pass real librdkafka names via a dict if needed)."""
        if not self.kafka_bootstrap:
            raise ConfigError("METERSTREAM_KAFKA_BOOTSTRAP is not set " + _UP_HINT.format(what="Kafka cluster"))
        conf: dict[str, Any] = {"bootstrap.servers": self.kafka_bootstrap}
        for name, value in self.kafka_security:
            conf[name] = value.reveal() if isinstance(value, Secret) else value
        conf.update(extra)
        return conf

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise ConfigError("METERSTREAM_REDIS_URL is not set " + _UP_HINT.format(what="Redis"))
        return self.redis_url

    def replace(self, **changes: Any) -> Settings:
        """A copy with some fields changed (used by ``up`` once embedded services have ports)."""
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The environment that reproduces these settings in a child process (secrets revealed: only
        for passing to subprocesses, never for printing)."""
        env: dict[str, str] = {}
        if self.kafka_bootstrap:
            env["METERSTREAM_KAFKA_BOOTSTRAP"] = self.kafka_bootstrap
        if self.redis_url:
            env["METERSTREAM_REDIS_URL"] = self.redis_url
        env["METERSTREAM_REDIS_CLUSTER"] = {None: "auto", True: "true", False: "false"}[self.redis_cluster]
        env["METERSTREAM_TOPIC_PREFIX"] = self.topic_prefix
        env["METERSTREAM_REDIS_PREFIX"] = self.redis_prefix
        env["METERSTREAM_PROCESSOR_GROUP"] = self.processor_group
        env["METERSTREAM_SINK_GROUP"] = self.sink_group
        if self.stripe_api_key:
            env["METERSTREAM_STRIPE_API_KEY"] = self.stripe_api_key.reveal()
        env["METERSTREAM_STRIPE_API_BASE"] = self.stripe_api_base
        env["METERSTREAM_STRIPE_MODE"] = self.stripe_mode
        env["METERSTREAM_STRIPE_RATE"] = repr(self.stripe_rate)
        if self.api_keys:
            env["METERSTREAM_API_KEYS"] = ",".join(k.reveal() for k in self.api_keys)
        env["METERSTREAM_GATEWAY_PORT"] = str(self.gateway_port)
        env["METERSTREAM_LOG_LEVEL"] = self.log_level
        env["METERSTREAM_PROCESSOR_BATCH"] = str(self.processor_batch)
        env["METERSTREAM_USAGE_RETENTION_DAYS"] = str(self.usage_retention_days)
        if self.topic_partitions is not None:
            env["METERSTREAM_TOPIC_PARTITIONS"] = str(self.topic_partitions)
        if self.s3_endpoint:
            env["METERSTREAM_S3_ENDPOINT"] = self.s3_endpoint
        if self.s3_region:
            env["METERSTREAM_S3_REGION"] = self.s3_region
        rev = {v: k for k, v in _KAFKA_PASSTHROUGH.items()}
        for name, value in self.kafka_security:
            env[ENV_PREFIX + rev[name]] = value.reveal() if isinstance(value, Secret) else value
        return env


def _int(env: Mapping[str, str], name: str, default: int, lo: int, hi: int) -> int:
    raw = env.get(ENV_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{ENV_PREFIX}{name} must be an integer, got {raw!r}") from None
    if not lo <= value <= hi:
        raise ConfigError(f"{ENV_PREFIX}{name} must be between {lo} and {hi}, got {value}")
    return value


def _url(env: Mapping[str, str], name: str, schemes: tuple[str, ...]) -> str | None:
    raw = env.get(ENV_PREFIX + name)
    if not raw:
        return None
    parsed = urlparse(raw)
    if parsed.scheme not in schemes or not parsed.netloc:
        raise ConfigError(
            f"{ENV_PREFIX}{name} must be a URL with scheme {' or '.join(schemes)}, got a value that is not"
        )
    return raw


_KNOWN = {
    "KAFKA_BOOTSTRAP",
    "REDIS_URL",
    "REDIS_CLUSTER",
    "TOPIC_PREFIX",
    "REDIS_PREFIX",
    "PROCESSOR_GROUP",
    "SINK_GROUP",
    "STRIPE_API_KEY",
    "STRIPE_API_BASE",
    "STRIPE_MODE",
    "STRIPE_RATE",
    "API_KEYS",
    "GATEWAY_PORT",
    "LOG_LEVEL",
    "PROCESSOR_BATCH",
    "USAGE_RETENTION_DAYS",
    "TOPIC_PARTITIONS",
    "S3_ENDPOINT",
    "S3_REGION",
    # Read by the test fixtures only (tests/conftest.py), allowed so a developer's shell may hold them.
    "TEST_KAFKA",
    "TEST_REDIS",
    "TEST_REDIS_CLUSTER",
    *_KAFKA_PASSTHROUGH,
}


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Resolve :class:`Settings` from ``env`` (``os.environ`` by default) and validate every value."""
    if env is None:
        import os

        env = os.environ
    unknown = sorted(k for k in env if k.startswith(ENV_PREFIX) and k[len(ENV_PREFIX) :] not in _KNOWN)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]} (known: {', '.join(sorted(ENV_PREFIX + k for k in _KNOWN))})")

    bootstrap = env.get(ENV_PREFIX + "KAFKA_BOOTSTRAP") or None
    if bootstrap is not None and not all(":" in part for part in bootstrap.split(",")):
        raise ConfigError(f"{ENV_PREFIX}KAFKA_BOOTSTRAP must be host:port[,host:port...], got {bootstrap!r}")
    redis_url = _url(env, "REDIS_URL", ("redis", "rediss", "unix", "valkey", "valkeys"))
    cluster_raw = (env.get(ENV_PREFIX + "REDIS_CLUSTER") or "auto").lower()
    if cluster_raw not in _CLUSTER_MODES:
        raise ConfigError(f"{ENV_PREFIX}REDIS_CLUSTER must be auto, true or false, got {cluster_raw!r}")

    topic_prefix = env.get(ENV_PREFIX + "TOPIC_PREFIX", "")
    if not _PREFIX_RE.match(topic_prefix):
        raise ConfigError(f"{ENV_PREFIX}TOPIC_PREFIX may hold only letters, digits, '.', '_' and '-'")
    redis_prefix = env.get(ENV_PREFIX + "REDIS_PREFIX", "ms") or "ms"
    if not _REDIS_PREFIX_RE.match(redis_prefix):
        raise ConfigError(f"{ENV_PREFIX}REDIS_PREFIX may hold only letters, digits, '_' and '-'")
    groups = {}
    for name, default in (("PROCESSOR_GROUP", "meterstream-processor"), ("SINK_GROUP", "meterstream-sink")):
        value = env.get(ENV_PREFIX + name) or default
        if not _GROUP_RE.match(value):
            raise ConfigError(f"{ENV_PREFIX}{name} may hold only letters, digits, '.', '_' and '-'")
        groups[name] = value

    mode = env.get(ENV_PREFIX + "STRIPE_MODE") or "v2_stream"
    if mode not in ("v2_stream", "v1"):
        raise ConfigError(f"{ENV_PREFIX}STRIPE_MODE must be v2_stream or v1, got {mode!r}")
    rate_raw = env.get(ENV_PREFIX + "STRIPE_RATE") or "25"
    try:
        rate = float(rate_raw)
    except ValueError:
        raise ConfigError(
            f"{ENV_PREFIX}STRIPE_RATE must be a number of requests per second, got {rate_raw!r}"
        ) from None
    if not 0 < rate <= 100_000:
        raise ConfigError(f"{ENV_PREFIX}STRIPE_RATE must be > 0 and <= 100000, got {rate}")
    api_base = _url(env, "STRIPE_API_BASE", ("http", "https")) or STRIPE_DEFAULT_API_BASE
    stripe_key = env.get(ENV_PREFIX + "STRIPE_API_KEY") or ""
    if stripe_key.startswith(EMULATOR_KEY_PREFIX) and api_base.rstrip("/") == STRIPE_DEFAULT_API_BASE:
        raise ConfigError(
            f"{ENV_PREFIX}STRIPE_API_KEY is a key of the local Stripe emulator (`meterstream up` printed it) but "
            f"{ENV_PREFIX}STRIPE_API_BASE is not set, so it would be sent to {STRIPE_DEFAULT_API_BASE}: "
            f"export {ENV_PREFIX}STRIPE_API_BASE as `up` printed it too"
        )

    keys = tuple(Secret(k.strip()) for k in (env.get(ENV_PREFIX + "API_KEYS") or "").split(",") if k.strip())
    for k in keys:
        if len(k.reveal()) < MIN_API_KEY_LENGTH or not k.reveal().isascii() or not k.reveal().isprintable():
            raise ConfigError(
                f"{ENV_PREFIX}API_KEYS: every key must be at least {MIN_API_KEY_LENGTH} printable ASCII characters "
                "(docs/security.md: a short key is guessed)"
            )

    level = (env.get(ENV_PREFIX + "LOG_LEVEL") or "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"{ENV_PREFIX}LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, got {level!r}")

    partitions_raw = env.get(ENV_PREFIX + "TOPIC_PARTITIONS")
    partitions = _int(env, "TOPIC_PARTITIONS", 0, 1, 10_000) if partitions_raw else None

    s3_region = env.get(ENV_PREFIX + "S3_REGION") or None
    if s3_region is not None and not re.match(r"^[a-z0-9-]+$", s3_region):
        raise ConfigError(f"{ENV_PREFIX}S3_REGION must look like us-east-1, got {s3_region!r}")

    security: list[tuple[str, Secret | str]] = []
    for var, conf_name in _KAFKA_PASSTHROUGH.items():
        raw_value = env.get(ENV_PREFIX + var)
        if raw_value:
            security.append((conf_name, Secret(raw_value) if conf_name in _SECRET_KAFKA else raw_value))

    return Settings(
        kafka_bootstrap=bootstrap,
        redis_url=redis_url,
        redis_cluster=_CLUSTER_MODES[cluster_raw],
        topic_prefix=topic_prefix,
        redis_prefix=redis_prefix,
        processor_group=groups["PROCESSOR_GROUP"],
        sink_group=groups["SINK_GROUP"],
        stripe_api_key=Secret(stripe_key),
        stripe_api_base=api_base.rstrip("/"),
        stripe_mode=mode,
        stripe_rate=rate,
        api_keys=keys,
        gateway_port=_int(env, "GATEWAY_PORT", 8080, 0, 65535),
        log_level=level,
        processor_batch=_int(env, "PROCESSOR_BATCH", 5000, 1, 1_000_000),
        usage_retention_days=_int(env, "USAGE_RETENTION_DAYS", USAGE_RETENTION_DAYS, 36, 100_000),
        topic_partitions=partitions,
        kafka_security=tuple(security),
        s3_endpoint=_url(env, "S3_ENDPOINT", ("http", "https")),
        s3_region=s3_region,
    )
