"""Helpers shared by test packages: the emulator's test-control endpoints, bounded polling, a clock that
moves only when told, and the SDK calls the emulator's and the gateway's tests both make (the two serve the
same Stripe API). Buckets come from ``processor.windows``, as the processor's do.

One copy here, so a change to the emulator's control API or to how tests wait is made once."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import stripe
from aiohttp import web

from processor.config import Settings
from processor.wire.runner import AppThread

T = TypeVar("T")


def wait_until(
    check: Callable[[], T],
    what: str,
    timeout: float = 60.0,
    *,
    interval: float = 0.1,
    on_timeout: Callable[[], str] | None = None,
) -> T:
    """Poll ``check`` until it returns something truthy, and return that; fail after ``timeout`` seconds.

    A bounded wait for something to happen, never a timed assertion: ``timeout`` only bounds how long a
    broken run hangs. ``on_timeout`` adds context (a subprocess's log, say) to the failure message."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() >= deadline:
            detail = f"\n{on_timeout()}" if on_timeout is not None else ""
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}{detail}")
        time.sleep(interval)


class EmulatorControl:
    """The Stripe emulator's ``/_emulator/*`` endpoints (test control, not part of Stripe's API)."""

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
        """Move the emulator's clock forward; returns its new time."""
        return float(self.call("POST", "/_emulator/clock", {"advance": seconds})["now"])

    def set_time(self, unix: float, *, freeze: bool = False) -> float:
        return float(self.call("POST", "/_emulator/clock", {"set": unix, "freeze": freeze})["now"])

    def set_clock(self, unix: int | None) -> None:
        """Freeze the emulator's clock at ``unix`` (``None``: back to real, running time)."""
        if unix is None:
            self.call("POST", "/_emulator/clock", {"freeze": False})
            self.call("POST", "/_emulator/clock", {"set": int(time.time())})
        else:
            self.call("POST", "/_emulator/clock", {"freeze": True, "set": unix})

    def now(self) -> float:
        return float(self.call("GET", "/_emulator/clock")["now"])

    def ledger(self, event_name: str) -> dict[str, Any]:
        """Every event the emulator holds for ``event_name`` (cancelled ones marked)."""
        return self.call("GET", f"/_emulator/events?event_name={event_name}")  # type: ignore[no-any-return]

    def counted(self, event_name: str) -> list[str]:
        """Identifiers of the events Stripe counts (not cancelled), one entry per counted event."""
        return sorted(e["identifier"] for e in self.ledger(event_name)["events"] if not e.get("cancelled"))

    def errors(self) -> list[dict[str, Any]]:
        return self.call("GET", "/_emulator/errors")["errors"]  # type: ignore[no-any-return]

    def stats(self) -> dict[str, int]:
        return self.call("GET", "/_emulator/stats")["stats"]  # type: ignore[no-any-return]


class FrozenClock:
    """A clock (Unix seconds) that only moves when told: injected where a component takes a ``clock``,
    so a test reaches an expiry by advancing it instead of sleeping."""

    def __init__(self, start: float) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_meter(client: stripe.StripeClient, event_name: str, formula: str = "sum", **extra: Any) -> Any:
    """A meter created through the SDK, named after its event (``extra``: further create parameters)."""
    params: dict[str, Any] = {
        "display_name": event_name.replace("_", " ").title(),
        "event_name": event_name,
        "default_aggregation": {"formula": formula},
        **extra,
    }
    return client.v1.billing.meters.create(params)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def async_sdk_client(url: str, key: str) -> AsyncIterator[stripe.StripeClient]:
    """An SDK client for ``*_async`` calls inside one event loop, its aiohttp session closed at the end
    (an unclosed session warns at garbage collection, which the test settings turn into errors)."""
    http = stripe.AIOHTTPClient()
    try:
        yield stripe.StripeClient(key, base_addresses={"api": url, "meter_events": url}, http_client=http)
    finally:
        await http.close_async()


async def events_and_cancels_async(client: stripe.StripeClient, event_name: str, customer: str) -> None:
    """The SDK's four async meter-event calls: an event and its cancellation through v1 (identifier
    ``a1``, value 2), then through v2 (``a2``, value 3)."""
    billing = client.v1.billing
    await billing.meter_events.create_async(
        {"event_name": event_name, "identifier": "a1", "payload": {"stripe_customer_id": customer, "value": "2"}}
    )
    await billing.meter_event_adjustments.create_async(
        {"event_name": event_name, "type": "cancel", "cancel": {"identifier": "a1"}}
    )
    await client.v2.billing.meter_events.create_async(
        {"event_name": event_name, "identifier": "a2", "payload": {"stripe_customer_id": customer, "value": "3"}}
    )
    await client.v2.billing.meter_event_adjustments.create_async(
        {"event_name": event_name, "type": "cancel", "cancel": {"identifier": "a2"}}
    )


def child_env(settings: Settings | None = None, **extra: str) -> dict[str, str]:
    """The environment of a program a test starts: this process's without its ``METERSTREAM_*`` variables
    (a developer's must not reach it), then ``settings`` (as variables) and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("METERSTREAM_")}
    if settings is not None:
        env.update(settings.to_env())
    return env | extra


def stop_process(proc: subprocess.Popen[Any], sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
    """Ask ``proc`` to stop with ``sig`` (unless it has exited); kill it if it is still running after
    ``timeout`` seconds. Returns its exit code."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return proc.returncode


def stream_client(url: str, token: str) -> stripe.StripeClient:
    """An SDK client authenticated with ``token`` (an API key or a v2 session token)."""
    return stripe.StripeClient(token, base_addresses={"api": url, "meter_events": url})


def open_stream(client: stripe.StripeClient, url: str) -> stripe.StripeClient:
    """A v2 meter-event session made with ``client`` (checked to have Stripe's shape and 15-minute life),
    and a client streaming with its token."""
    session = client.v2.billing.meter_event_session.create()
    assert session.object == "v2.billing.meter_event_session"
    created = dt.datetime.fromisoformat(session.created)
    assert dt.datetime.fromisoformat(session.expires_at) - created == dt.timedelta(minutes=15)
    return stream_client(url, session.authentication_token)


def make_full_meter(client: stripe.StripeClient) -> Any:
    """A meter with every optional setting (``last``, hourly window, own customer and value keys), checked
    to come back in Stripe's shape with those settings."""
    meter = make_meter(
        client,
        "api_calls",
        "last",
        event_time_window="hour",
        customer_mapping={"type": "by_id", "event_payload_key": "account"},
        value_settings={"event_payload_key": "tokens"},
    )
    assert meter.id.startswith("mtr_") and meter.object == "billing.meter"
    assert meter.default_aggregation.formula == "last" and meter.event_time_window == "hour"
    assert meter.customer_mapping.event_payload_key == "account"
    assert meter.value_settings.event_payload_key == "tokens"
    assert meter.status == "active"
    assert meter.last_response.request_id.startswith("req_")
    return meter


class Hook(AppThread):
    """A webhook endpoint for error reports (the gateway's notifier and the emulator deliver to it): records
    every delivery; answers 500 while ``failing``."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str | None, int]] = []  # (body, Stripe-Signature, status answered)
        self.failing = False
        self.lock = threading.Lock()
        app = web.Application()
        app.router.add_post("/hook", self._hook)
        super().__init__(app, name="webhook")

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.text()
        status = 500 if self.failing else 200
        with self.lock:
            self.received.append((body, request.headers.get("Stripe-Signature"), status))
        return web.Response(status=status)

    def accepted(self) -> list[tuple[str, str | None, int]]:
        with self.lock:
            return [r for r in self.received if r[2] == 200]
