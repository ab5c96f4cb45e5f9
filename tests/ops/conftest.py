"""Fixtures of the ops tests: the Stripe emulator (driven through the official SDK) and settings that
point the ops commands at it."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe

from processor.config import Settings
from processor.emulator import EmulatorConfig, EmulatorServer

API_KEY = "sk_test_opsintegration"


class Emulator:
    def __init__(self, url: str) -> None:
        self.url = url
        self.client = stripe.StripeClient(API_KEY, base_addresses={"api": url, "meter_events": url})

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def set_clock(self, unix: int | None) -> None:
        """Move the emulator's clock (``None``: back to real time)."""
        if unix is None:
            self.control("POST", "/_emulator/clock", {"freeze": False})
            self.control("POST", "/_emulator/clock", {"set": int(time.time())})
        else:
            self.control("POST", "/_emulator/clock", {"freeze": True, "set": unix})

    def ledger(self, event_name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.control("GET", f"/_emulator/events?event_name={event_name}")
        return result

    def counted(self, event_name: str) -> list[str]:
        """Identifiers of the events Stripe counts (not cancelled), one entry per counted event."""
        return sorted(e["identifier"] for e in self.ledger(event_name)["events"] if not e.get("cancelled"))


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
