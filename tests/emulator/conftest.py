"""Fixtures: one in-process Stripe emulator per session (a real HTTP server on a free port, in a
background thread), reset before every test, and the official ``stripe`` SDK pointed at it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import stripe

from processor.emulator import EmulatorConfig, EmulatorServer
from tests.helpers import EmulatorControl


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


def make_meter(client: stripe.StripeClient, event_name: str, formula: str = "sum", **extra: Any) -> Any:
    params: dict[str, Any] = {
        "display_name": event_name.title(),
        "event_name": event_name,
        "default_aggregation": {"formula": formula},
        **extra,
    }
    return client.v1.billing.meters.create(params)


@contextlib.asynccontextmanager
async def async_client(url: str, key: str = "sk_test_emulator") -> AsyncIterator[stripe.StripeClient]:
    """An SDK client for ``*_async`` calls inside one event loop, its aiohttp session closed at the end
    (an unclosed session warns at garbage collection, which the test settings turn into errors)."""
    http = stripe.AIOHTTPClient()
    try:
        yield stripe.StripeClient(key, base_addresses={"api": url, "meter_events": url}, http_client=http)
    finally:
        await http.close_async()
