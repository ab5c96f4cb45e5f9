"""Fixtures: one in-process Stripe emulator per session (a real HTTP server on a free port, in a
background thread), reset before every test, and the official ``stripe`` SDK pointed at it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
import stripe

from processor.emulator import EmulatorConfig, EmulatorServer
from tests.helpers import EmulatorControl, async_sdk_client
from tests.helpers import make_meter as make_meter


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(port=0, seed=1234)) as server:
        yield server


@pytest.fixture
def control(emulator_server: EmulatorServer) -> EmulatorControl:
    ctl = EmulatorControl(emulator_server.url)
    ctl.reset()
    return ctl


@pytest.fixture
def url(control: EmulatorControl) -> str:
    return control.url


@pytest.fixture
def client(url: str) -> stripe.StripeClient:
    return stripe.StripeClient("sk_test_emulator", base_addresses={"api": url, "meter_events": url})


def async_client(
    url: str, key: str = "sk_test_emulator"
) -> contextlib.AbstractAsyncContextManager[stripe.StripeClient]:
    """``tests.helpers.async_sdk_client`` with this package's key."""
    return async_sdk_client(url, key)
