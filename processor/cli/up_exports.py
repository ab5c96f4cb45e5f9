"""The ``export`` lines ``meterstream up`` prints: everything a second terminal needs to reach the stack
``up`` started (broker, Redis, the generated gateway key, the local Stripe emulator), ready to paste.

Without them a user copies values by hand and misses one — typically the emulator's API base, and a
Stripe key without its base would go to api.stripe.com (config.load_settings refuses an emulator key
there). Secrets the user chose themselves (their own API keys, a real Stripe key) are not echoed back:
the user has them already, and a terminal scroll-back is no place for a production key.
"""

from __future__ import annotations

import shlex

from processor.config import Settings

__all__ = ["export_lines"]


def export_lines(settings: Settings, *, generated_key: str | None, emulator: bool) -> list[str]:
    """``export NAME=value`` lines (shell-quoted) for the settings ``up`` resolved."""
    values: list[tuple[str, str]] = []
    if settings.kafka_bootstrap:
        values.append(("METERSTREAM_KAFKA_BOOTSTRAP", settings.kafka_bootstrap))
    if settings.redis_url:
        values.append(("METERSTREAM_REDIS_URL", settings.redis_url))
    if settings.topic_prefix:
        values.append(("METERSTREAM_TOPIC_PREFIX", settings.topic_prefix))
    if settings.redis_prefix != "ms":
        values.append(("METERSTREAM_REDIS_PREFIX", settings.redis_prefix))
    if generated_key:
        values.append(("METERSTREAM_API_KEYS", generated_key))
    if settings.gateway_port != 8080:
        values.append(("METERSTREAM_GATEWAY_PORT", str(settings.gateway_port)))
    if emulator:
        values.append(("METERSTREAM_STRIPE_API_KEY", settings.stripe_api_key.reveal()))
        values.append(("METERSTREAM_STRIPE_API_BASE", settings.stripe_api_base))
    return [f"export {name}={shlex.quote(value)}" for name, value in values]
