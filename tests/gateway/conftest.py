"""Fixtures: a real gateway (in-process, on a free port, in a background thread) over the session's
broker and Redis, with this test's own topic and Redis prefixes, and the official ``stripe`` SDK
pointed at it."""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import stripe

from processor.config import Settings
from processor.gateway import GatewayServer
from tests.helpers import async_sdk_client
from tests.helpers import make_meter as make_meter
from tests.pipeline import run_processor as run_processor

API_KEY = "sk_test_gatewaykey0001"
OTHER_KEY = "sk_test_gatewaykey0002"


@pytest.fixture
def gw_settings(settings_factory: Callable[..., Settings]) -> Settings:
    return settings_factory(METERSTREAM_API_KEYS=f"{API_KEY},{OTHER_KEY}")


@pytest.fixture
def gateway(gw_settings: Settings) -> Iterator[GatewayServer]:
    with GatewayServer(gw_settings) as server:
        yield server


@pytest.fixture
def url(gateway: GatewayServer) -> str:
    return gateway.url


@pytest.fixture
def client(url: str) -> stripe.StripeClient:
    return stripe.StripeClient(API_KEY, base_addresses={"api": url, "meter_events": url})


def async_client(url: str, key: str = API_KEY) -> contextlib.AbstractAsyncContextManager[stripe.StripeClient]:
    """``tests.helpers.async_sdk_client`` with this package's key."""
    return async_sdk_client(url, key)


def http(
    url: str, method: str = "GET", *, body: bytes | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], bytes]:
    """A raw HTTP call (for what the SDK cannot send: no key, odd bodies, browser headers)."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, dict(err.headers), err.read()


def bearer(key: str = API_KEY) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def get_json(url: str, key: str = API_KEY) -> Any:
    status, _, raw = http(url, headers=bearer(key))
    assert status == 200, raw
    return json.loads(raw)


# ---- headless Chromium (Debian's package; never a downloaded browser build) -------------------------
#: CHROMIUM_BIN names another binary of that package (say, one unpacked without installing it); not a
#: METERSTREAM_ variable, which every program would refuse as an unknown setting.
CHROMIUM = Path(os.environ.get("CHROMIUM_BIN", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Module mark of the browser tests.
requires_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="dashboard browser tests need Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)


@pytest.fixture
def chromium() -> Iterator[Any]:
    """Headless Chromium (Playwright's Browser); each test opens its own contexts."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()


def watch_problems(page: Any) -> list[str]:
    """Console errors and uncaught exceptions of ``page``, collected as they happen."""
    problems: list[str] = []
    page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    return problems


@pytest.fixture
def browser_page(chromium: Any, url: str) -> Iterator[tuple[Any, list[str]]]:
    """A page in headless Chromium with the API key as HTTP Basic credentials, and its console errors."""
    context = chromium.new_context(http_credentials={"username": API_KEY, "password": ""})
    try:
        page = context.new_page()
        yield page, watch_problems(page)
    finally:
        context.close()
