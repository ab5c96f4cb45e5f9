"""Screenshots of the dashboard and the upload page for docs/operating.md, taken in headless Chromium over
a real gateway, processor and Redis with a small, realistic workload.

The test always runs (the pages must render with data, without console errors, and give non-empty PNGs);
``make screenshots`` sets ``METERSTREAM_TEST_SCREENSHOTS=docs/images`` so the same run rewrites the committed
images. Without it they go to a temporary directory."""

from __future__ import annotations

import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import stripe

from processor.config import Settings
from processor.events.producer import MeterEventProducer
from tests.gateway.conftest import make_meter, requires_chromium, run_processor

pytestmark = requires_chromium

PNG = b"\x89PNG\r\n\x1a\n"
HOUR = 3600


def shots_dir(tmp_path: Path) -> Path:
    target = os.environ.get("METERSTREAM_TEST_SCREENSHOTS")
    out = Path(target) if target else tmp_path
    out.mkdir(parents=True, exist_ok=True)
    return out


def shoot(page: Any, out: Path, name: str, selector: str | None = None) -> Path:
    path = out / f"{name}.png"
    if selector is None:
        page.screenshot(path=str(path), full_page=True)
    else:
        page.locator(selector).screenshot(path=str(path))
    data = path.read_bytes()
    assert data.startswith(PNG) and len(data) > 5000, name  # a real picture, not an empty frame
    return path


def test_screenshots_for_the_docs(
    browser_page: tuple[Any, list[str]],
    client: stripe.StripeClient,
    url: str,
    gw_settings: Settings,
    tmp_path: Path,
) -> None:
    page, problems = browser_page
    expect = pytest.importorskip("playwright.sync_api").expect
    page.set_viewport_size({"width": 1280, "height": 900})
    api = make_meter(client, "api_requests")
    make_meter(client, "storage_gb", "last")
    rng = random.Random(7)
    now = int(time.time())
    customers = [f"cus_{name}" for name in ("acme", "globex", "initech", "umbrella", "hooli", "stark")]
    for hours_ago in range(0, 40):
        for customer in customers:
            if rng.random() < 0.5:
                continue
            client.v1.billing.meter_events.create(
                {
                    "event_name": "api_requests",
                    "payload": {"stripe_customer_id": customer, "value": str(rng.randint(1, 400))},
                    "timestamp": now - hours_ago * HOUR - rng.randint(0, 3000),
                }
            )
    for customer in customers[:3]:
        client.v1.billing.meter_events.create(
            {"event_name": "storage_gb", "payload": {"stripe_customer_id": customer, "value": "12"}, "timestamp": now}
        )
    # A producer that bypasses the gateway (which refuses unknown meters at once): the processor rejects it.
    with MeterEventProducer(gw_settings) as producer:
        producer.send("unknown_meter", {"stripe_customer_id": "cus_acme", "value": "1"})
    run_processor(gw_settings)
    out = shots_dir(tmp_path)

    page.goto(f"{url}/?refresh=60&meter={api.id}&customer=cus_acme")
    chart = page.locator("#chart")
    expect(chart).to_have_attribute("data-state", "drawn")
    expect(page.locator("#top tbody tr").first).to_be_visible()
    expect(page.locator("#health")).to_have_attribute("data-status", "ok")
    expect(page.locator("#accepted")).not_to_have_text("\u2013")  # the placeholder dash
    expect(page.locator("#history")).to_have_attribute("data-state", "drawn")
    shoot(page, out, "dashboard")
    shoot(page, out, "dashboard-usage", "#usage-panel")
    shoot(page, out, "dashboard-pipeline", "#pipeline-panel")

    page.click("#meter-admin summary")
    shoot(page, out, "dashboard-meters", "#meters-panel")
    page.select_option("#ev-kind", "rejected")
    page.click("#ev-search")
    expect(page.locator("#events-panel")).to_have_attribute("data-state", "found")
    page.select_option("#ev-kind", "accepted")
    page.fill("#ev-customer", "cus_acme")
    page.click("#ev-search")
    expect(page.locator("#events-panel")).to_have_attribute("data-kind", "accepted")
    expect(page.locator("#events-panel")).to_have_attribute("data-state", "found")
    shoot(page, out, "dashboard-events", "#events-panel")
    page.fill("#cust-id", "cus_acme")
    page.click("#cust-show")
    expect(page.locator("#customer-panel")).to_have_attribute("data-state", "shown")
    page.click("#customer-panel details summary")
    shoot(page, out, "dashboard-customer", "#customer-panel")

    csv = tmp_path / "usage.csv"
    hour = now - now % HOUR
    csv.write_text(
        "timestamp,event_name,payload_stripe_customer_id,payload_value\n"
        f"{hour},api_requests,cus_acme,40\n"
        f"{hour},api_requests,cus_globex,abc\n"
        f"{hour},api_requests,,3\n"
        f"{hour},storage_gb,cus_hooli,7\n",
        "utf-8",
    )
    page.goto(f"{url}/upload")
    page.set_input_files("#file", str(csv))
    page.click("#check")
    expect(page.locator("#report")).to_have_attribute("data-state", "checked")
    shoot(page, out, "upload-check")
    assert problems == []
