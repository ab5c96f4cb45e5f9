"""Fixtures: one in-process Stripe emulator per session (a real HTTP server on a free port, in a
background thread), reset before every test, and the official ``stripe`` SDK pointed at it."""

from __future__ import annotations

import contextlib
import json
import urllib.request
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import stripe

from processor.emulator import EmulatorConfig, EmulatorServer


class Control:
    """The emulator's ``/_emulator/*`` endpoints (test control, not part of Stripe's API)."""

    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        self.call("POST", "/_emulator/reset")

    def faults(self, **changes: Any) -> dict[str, Any]:
        return self.call("POST", "/_emulator/faults", changes)  # type: ignore[no-any-return]

    def advance(self, seconds: float) -> float:
        return float(self.call("POST", "/_emulator/clock", {"advance": seconds})["now"])

    def set_time(self, unix: float, *, freeze: bool = False) -> float:
        return float(self.call("POST", "/_emulator/clock", {"set": unix, "freeze": freeze})["now"])

    def now(self) -> float:
        return float(self.call("GET", "/_emulator/clock")["now"])

    def events(self, event_name: str) -> dict[str, Any]:
        return self.call("GET", f"/_emulator/events?event_name={event_name}")  # type: ignore[no-any-return]

    def errors(self) -> list[dict[str, Any]]:
        return self.call("GET", "/_emulator/errors")["errors"]  # type: ignore[no-any-return]

    def stats(self) -> dict[str, int]:
        return self.call("GET", "/_emulator/stats")["stats"]  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(port=0, seed=1234)) as server:
        yield server


@pytest.fixture
def control(emulator_server: EmulatorServer) -> Control:
    ctl = Control(emulator_server.url)
    ctl.reset()
    return ctl


@pytest.fixture
def url(control: Control) -> str:
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
