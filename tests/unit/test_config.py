from __future__ import annotations

import logging

import pytest

from processor.config import Secret, load_settings
from processor.errors import ConfigError
from processor.logs import SecretMaskingFilter, mask_secrets


def test_defaults() -> None:
    s = load_settings({})
    assert s.redis_prefix == "ms"
    assert s.processor_group == "meterstream-processor"
    assert s.sink_group == "meterstream-sink"
    assert s.stripe_mode == "v2_stream"
    assert s.kafka_bootstrap is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("METERSTREAM_STRIPE_MODE", "v3"),
        ("METERSTREAM_STRIPE_RATE", "fast"),
        ("METERSTREAM_STRIPE_RATE", "0"),
        ("METERSTREAM_GATEWAY_PORT", "70000"),
        ("METERSTREAM_REDIS_URL", "http://x"),
        ("METERSTREAM_KAFKA_BOOTSTRAP", "nohostport"),
        ("METERSTREAM_REDIS_PREFIX", "a:b"),
        ("METERSTREAM_TOPIC_PREFIX", "a b"),
        ("METERSTREAM_API_KEYS", "short"),
        ("METERSTREAM_API_KEYS", "fifteen-chars15"),
        ("METERSTREAM_PROCESSOR_BATCH", "0"),
        ("METERSTREAM_NOT_A_SETTING", "1"),
    ],
)
def test_invalid_values_name_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({name: value})
    assert name in str(err.value)


def test_secrets_are_masked_everywhere() -> None:
    s = load_settings(
        {
            "METERSTREAM_STRIPE_API_KEY": "sk_test_abcdef123456",
            "METERSTREAM_API_KEYS": "key-one-123456789,key-two-456789012",
        }
    )
    assert "sk_test_abcdef123456" not in repr(s)
    assert "key-one-123" not in repr(s)
    assert s.stripe_api_key.reveal() == "sk_test_abcdef123456"
    assert [k.reveal() for k in s.api_keys] == ["key-one-123456789", "key-two-456789012"]
    assert str(Secret("x")) == "Secret('**********')"


def test_settings_are_frozen() -> None:
    s = load_settings({})
    with pytest.raises(AttributeError):
        s.redis_prefix = "x"  # type: ignore[misc]


def test_to_env_round_trips() -> None:
    env = {
        "METERSTREAM_KAFKA_BOOTSTRAP": "h:1",
        "METERSTREAM_REDIS_URL": "redis://h:2/0",
        "METERSTREAM_STRIPE_API_KEY": "sk_test_x",
        "METERSTREAM_KAFKA_SASL_PASSWORD": "pw",
        "METERSTREAM_TOPIC_PARTITIONS": "4",
    }
    s = load_settings(env)
    assert load_settings(s.to_env()) == s
    assert s.kafka_config()["sasl.password"] == "pw"


@pytest.mark.parametrize(
    "text",
    [
        "calling with sk_test_51Habcdefghijkl",
        "Authorization: Bearer abcdefghijklmnop",
        "redis://user:hunter2@host:6379",
        "password=hunter2 next",
    ],
)
def test_mask_secrets(text: str) -> None:
    masked = mask_secrets(text)
    for secret in ("51Habcdefghijkl", "abcdefghijklmnop", "hunter2"):
        assert secret not in masked


def test_logging_filter_masks_messages_and_args() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "key %s", ("sk_live_abcdefgh",), None)
    SecretMaskingFilter().filter(record)
    assert "abcdefgh" not in record.getMessage()
