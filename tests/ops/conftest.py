"""Fixtures of the ops tests: the Stripe emulator (driven through the official SDK) and settings that
point the ops commands at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import stripe

from processor.config import Settings
from processor.emulator import EmulatorConfig, EmulatorServer
from tests.helpers import EmulatorControl

API_KEY = "sk_test_opsintegration"


class Emulator(EmulatorControl):
    """The emulator's control endpoints, and the official SDK pointed at it with the ops tests' key."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.client = stripe.StripeClient(API_KEY, base_addresses={"api": url, "meter_events": url})


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    with EmulatorServer(EmulatorConfig(port=0, api_key=API_KEY)) as server:
        yield Emulator(server.url)


@pytest.fixture
def stripe_settings(settings_factory: Callable[..., Settings], emulator: Emulator) -> Settings:
    return settings_factory(
        METERSTREAM_STRIPE_API_KEY=API_KEY,
        METERSTREAM_STRIPE_API_BASE=emulator.url,
        METERSTREAM_STRIPE_RATE="2000",
        METERSTREAM_STRIPE_MODE="v1",
    )
