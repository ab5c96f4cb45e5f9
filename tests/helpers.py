"""Helpers shared by test packages: the emulator's test-control endpoints, bounded polling, and the
hour/day arithmetic tests use to place events in buckets.

One copy here, so a change to the emulator's control API or to how tests wait is made once."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

HOUR_S = 3600
DAY_S = 86_400


def hour_start(unix: int) -> int:
    """The start of the UTC hour holding ``unix`` (the processor's hour bucket)."""
    return unix - unix % HOUR_S


def day_start(unix: int) -> int:
    """The start of the UTC day holding ``unix`` (the processor's day bucket)."""
    return unix - unix % DAY_S


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
