"""The dashboard as the on-call tool, in headless Chromium over a real gateway, processor and Redis: meters
created, renamed, deactivated and reactivated from the page (through the registry, with the page's API
key; a page of another site cannot do it), the customer page over every meter with a custom range, CSV
export of a table, top customers that name their meter and offer more, an unknown customer said plainly,
time-axis labels, processor and sink lag apart."""

from __future__ import annotations

import csv
import http.server
import io
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
import stripe

from processor.config import Settings
from processor.embedded import free_port
from processor.events.producer import MeterEventProducer
from processor.gateway.explorer import ExplorerQuery, read_tail
from tests.gateway.conftest import make_meter, requires_chromium, run_processor

pytestmark = requires_chromium

DAY = 86_400


def expect_() -> Any:
    return pytest.importorskip("playwright.sync_api").expect


def test_meters_are_managed_from_the_page(
    browser_page: tuple[Any, list[str]], client: stripe.StripeClient, url: str
) -> None:
    page, problems = browser_page
    expect = expect_()
    page.goto(f"{url}/?refresh=60")
    page.click("#meter-admin summary")
    page.fill("#new-display-name", "Storage GB")
    page.fill("#new-event-name", "storage_gb")
    page.select_option("#new-formula", "last")
    page.fill("#new-customer-key", "account")
    page.click("#new-create")
    expect(page.locator("#meter-message")).to_contain_text("Created mtr_")
    created = [m for m in client.v1.billing.meters.list().data if m.event_name == "storage_gb"]
    assert len(created) == 1
    meter = created[0]
    assert (meter.display_name, meter.default_aggregation.formula) == ("Storage GB", "last")
    assert meter.customer_mapping.event_payload_key == "account"
    expect(page.locator(f"#meters tbody tr[data-meter='{meter.id}']")).to_have_count(1)  # listed at once

    page.select_option("#edit-meter", meter.id)
    page.fill("#edit-display-name", "Storage (GB)")
    page.click("#edit-rename")
    expect(page.locator("#meter-message")).to_contain_text("Renamed")
    assert client.v1.billing.meters.retrieve(meter.id).display_name == "Storage (GB)"
    page.click("#edit-deactivate")
    expect(page.locator("#meter-message")).to_contain_text("is inactive now")
    assert client.v1.billing.meters.retrieve(meter.id).status == "inactive"
    page.click("#edit-reactivate")
    expect(page.locator("#meter-message")).to_contain_text("is active now")
    assert client.v1.billing.meters.retrieve(meter.id).status == "active"

    # a refused change is shown, not swallowed (Stripe's error message)
    page.fill("#new-display-name", "Again")
    page.fill("#new-event-name", "storage_gb")
    page.click("#new-create")
    expect(page.locator("#meter-message.error")).to_contain_text("400")
    assert problems == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]


@pytest.fixture
def evil_site(url: str) -> Iterator[str]:
    """Another web site (another origin), whose page posts to the gateway when opened."""
    page = (
        "<html><body><form id=f method=POST action='" + url + "/v1/billing/meters'>"
        "<input name=display_name value=Evil><input name=event_name value=evil_meter>"
        "<input name='default_aggregation[formula]' value=sum></form>"
        "<script>document.getElementById('f').submit()</script></body></html>"
    ).encode()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://localhost:{server.server_address[1]}/"
    finally:
        server.shutdown()


def test_another_site_cannot_create_meters_with_the_cached_key(
    browser_page: tuple[Any, list[str]], client: stripe.StripeClient, evil_site: str
) -> None:
    page, _ = browser_page  # this browser holds the key for the gateway, as after a dashboard login
    page.goto(evil_site)
    page.wait_for_load_state("networkidle")
    assert "Requests from other web sites are refused" in page.content()
    assert [m for m in client.v1.billing.meters.list().data if m.event_name == "evil_meter"] == []


def test_customer_page_csv_top_customers_and_the_chart(
    browser_page: tuple[Any, list[str]], client: stripe.StripeClient, url: str, gw_settings: Settings
) -> None:
    page, problems = browser_page
    expect = expect_()
    calls = make_meter(client, "ops_calls")
    make_meter(client, "ops_seats", "last")
    now = int(time.time())
    today = now // DAY * DAY
    for customer, name, value, ts in [
        ("cus_x", "ops_calls", 1500, now - 60), ("cus_x", "ops_calls", 7, now - 2 * DAY),
        ("cus_x", "ops_seats", 4, now - 3 * DAY), ("cus_x", "ops_seats", 9, now - 60),
    ] + [(f"cus_{i:02d}", "ops_calls", i + 1, now - 30) for i in range(12)]:  # fmt: skip
        client.v1.billing.meter_events.create(
            {"event_name": name, "payload": {"stripe_customer_id": customer, "value": str(value)}, "timestamp": ts}
        )
    run_processor(gw_settings)

    page.goto(f"{url}/?refresh=60&meter={calls.id}&customer=cus_x")
    expect(page.locator("#chart")).to_have_attribute("data-state", "drawn")
    # a time axis: labels along it, not only at both ends
    assert page.locator("#chart text.xlabel").count() >= 5
    # top customers say which meter, and offer more than ten
    expect(page.locator("#top-meter")).to_have_text("Ops Calls (ops_calls)")
    expect(page.locator("#top tbody tr")).to_have_count(10)
    page.click("#top-more")
    expect(page.locator("#top tbody tr")).to_have_count(13)
    # processor and sink lag apart
    expect(page.locator("#sink-lag")).not_to_have_text("\u2013")
    assert page.inner_text("#lag") != page.inner_text("#sink-lag") or page.inner_text("#lag") == "0"

    # an unknown customer: said plainly, no empty chart
    page.fill("#customer-id", "cus_nobody")
    page.press("#customer-id", "Enter")
    expect(page.locator("#chart")).to_have_attribute("data-state", "empty")
    expect(page.locator("#usage-total")).to_contain_text("No usage of this meter by cus_nobody")

    # the customer page: every meter over a custom range, by day
    page.fill("#cust-id", "cus_x")
    page.fill("#cust-from", time.strftime("%Y-%m-%d", time.gmtime(today - 4 * DAY)))
    page.fill("#cust-to", time.strftime("%Y-%m-%d", time.gmtime(today)))
    page.click("#cust-show")
    expect(page.locator("#customer-panel")).to_have_attribute("data-state", "shown")
    rows = page.eval_on_selector_all("#cust-table tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.innerText))")
    by_meter = {r[1]: (r[2], r[4], r[5]) for r in rows}
    assert by_meter == {"ops_calls": ("sum", "2", "1507"), "ops_seats": ("last", "2", "9")}

    # CSV export of that table: the exact numbers, one row per meter
    with page.expect_download() as download:
        page.click("button.csv[data-table='cust-table']")
    text = open(download.value.path(), encoding="utf-8").read()
    table = list(csv.reader(io.StringIO(text)))
    assert table[0] == ["Meter", "Event name", "Formula", "Status", "Windows with usage", "Total (last: latest)"]
    assert sorted((r[1], r[5]) for r in table[1:]) == [("ops_calls", "1507"), ("ops_seats", "9")]
    assert download.value.suggested_filename == "cust-table.csv"
    with page.expect_download() as download:
        page.click("button.csv[data-table='top']")
    top = list(csv.reader(io.StringIO(open(download.value.path(), encoding="utf-8").read())))
    assert top[1] == ["1", "cus_x", "1500"]  # the exact value, no thousands separator
    assert problems == []


def test_events_explorer_finds_accepted_and_rejected_events(
    browser_page: tuple[Any, list[str]], client: stripe.StripeClient, url: str, gw_settings: Settings
) -> None:
    page, problems = browser_page
    expect = expect_()
    make_meter(client, "exp_calls")
    for i in range(5):
        client.v1.billing.meter_events.create(
            {
                "event_name": "exp_calls",
                "identifier": f"exp-{i}",
                "payload": {"stripe_customer_id": f"cus_{i % 2}", "value": str(i + 1)},
            }
        )
    # A producer that bypasses the gateway (which refuses unknown meters at once): the processor rejects it.
    with MeterEventProducer(gw_settings) as producer:
        producer.send("no_such_meter", {"stripe_customer_id": "cus_0", "value": "3"}, identifier="lost-1")
    run_processor(gw_settings)

    page.goto(f"{url}/?refresh=60")
    page.fill("#ev-meter", "exp_calls")
    page.fill("#ev-customer", "cus_0")
    page.click("#ev-search")
    expect(page.locator("#events-panel")).to_have_attribute("data-state", "found")
    rows = page.eval_on_selector_all("#ev-table tbody tr", "rs => rs.map(r => [...r.cells].map(c => c.innerText))")
    assert sorted(r[3] for r in rows) == ["exp-0", "exp-2", "exp-4"]  # accepted, that meter, that customer
    by_id = {r[3]: r for r in rows}
    assert by_id["exp-2"][1:3] == ["exp_calls", "cus_0"]
    assert '"value":' in by_id["exp-2"][6] and "3" in by_id["exp-2"][6]  # the payload as accepted

    page.select_option("#ev-kind", "rejected")
    page.fill("#ev-meter", "")
    page.fill("#ev-customer", "")
    page.fill("#ev-identifier", "lost")
    page.click("#ev-search")
    expect(page.locator("#events-panel")).to_have_attribute("data-kind", "rejected")
    expect(page.locator("#ev-table tbody tr")).to_have_count(1)
    cells = page.locator("#ev-table tbody tr td").all_inner_texts()
    assert cells[1:5] == ["no_such_meter", "cus_0", "lost-1", "no_meter"]
    assert cells[5].strip() != ""  # Stripe's message comes with the code
    page.fill("#ev-identifier", "nothing-like-this")
    page.click("#ev-search")
    expect(page.locator("#events-panel")).to_have_attribute("data-state", "none")
    expect(page.locator("#ev-note")).to_contain_text("No rejected events match among the last 300 records")
    assert problems == []

    # the read is bounded: only the newest `tail` records of each partition are looked at
    everything = read_tail(gw_settings, ExplorerQuery("accepted", limit=200))
    assert sorted(r["identifier"] for r in everything["data"]) == [f"exp-{i}" for i in range(5)]
    newest = read_tail(gw_settings, ExplorerQuery("accepted", limit=200), tail=1)
    per_partition = Counter(r["partition"] for r in everything["data"])
    assert newest["scanned"] == len(per_partition) and len(newest["data"]) == len(per_partition)
