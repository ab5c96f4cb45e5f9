"""The dashboard in a real headless Chromium (Debian's ``chromium`` package, driven by Playwright; never
``playwright install``, which downloads): the page loads without console errors, the chart shows the
values in Redis, the customer picker, the daily view and the top-customers table work, and the page
refreshes by itself when new usage arrives."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import pytest
import stripe

from processor.config import Settings
from tests.gateway.conftest import API_KEY, make_meter, requires_chromium, run_processor, watch_problems

HOUR = 3600
DAY = 86400

pytestmark = requires_chromium


def bars(page: Any) -> dict[int, str]:
    """The chart's non-zero bars: window start → exact value as the page shows it."""
    found = page.eval_on_selector_all(
        "#chart rect.bar", "els => els.map(e => [Number(e.dataset.start), e.dataset.value])"
    )
    return {int(start): value for start, value in found if value != "0"}


def wait_chart(page: Any, customer: str, grouping: str) -> None:
    # Playwright's expect() polls without eval(), which the page's Content-Security-Policy forbids.
    chart = page.locator("#chart")
    expect = pytest.importorskip("playwright.sync_api").expect
    expect(chart).to_have_attribute("data-customer", customer)
    expect(chart).to_have_attribute("data-grouping", grouping)
    expect(chart).to_have_attribute("data-state", "drawn")


def test_dashboard(
    browser_page: tuple[Any, list[str]], client: stripe.StripeClient, url: str, gw_settings: Settings
) -> None:
    page, problems = browser_page
    expect = pytest.importorskip("playwright.sync_api").expect
    make_meter(client, "dash_calls")
    now = int(time.time())
    sent: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for customer, hours_ago, value in [
        ("cus_a", 0, 1), ("cus_a", 1, 5), ("cus_a", 1, 6), ("cus_a", 3, 40), ("cus_a", 30, 7),
        ("cus_b", 2, 1000), ("cus_b", 26, 2),
    ]:  # fmt: skip
        ts = now - hours_ago * HOUR
        client.v1.billing.meter_events.create(
            {
                "event_name": "dash_calls",
                "payload": {"stripe_customer_id": customer, "value": str(value)},
                "timestamp": ts,
            }
        )
        sent[customer].append((ts, value))
    run_processor(gw_settings)

    def expected(customer: str, width: int) -> dict[int, str]:
        totals: dict[int, int] = defaultdict(int)
        for ts, value in sent[customer]:
            totals[ts // width * width] += value
        return {start: str(v) for start, v in totals.items()}

    page.goto(f"{url}/?refresh=1&customer=cus_a")
    wait_chart(page, "cus_a", "hour")
    assert bars(page) == expected("cus_a", HOUR)
    assert page.locator("#meters tbody tr").count() == 1
    assert "dash_calls" in page.inner_text("#meters")

    page.select_option("#customer", "cus_b")  # the picker lists the meter's customers
    wait_chart(page, "cus_b", "hour")
    assert bars(page) == expected("cus_b", HOUR)
    options = page.eval_on_selector_all("#customer option", "els => els.map(e => e.value)")
    assert sorted(options) == ["cus_a", "cus_b"]

    page.select_option("#grouping", "day")
    wait_chart(page, "cus_b", "day")
    assert bars(page) == expected("cus_b", DAY)

    today = now // DAY * DAY
    top = {c: sum(v for ts, v in rows if ts >= today) for c, rows in sent.items()}
    want = [(c, f"{v:,}") for c, v in sorted(top.items(), key=lambda cv: -cv[1]) if v]
    expect(page.locator("#top tbody tr")).to_have_count(len(want))
    shown = page.eval_on_selector_all(
        "#top tbody tr", "rows => rows.map(r => [r.cells[1].innerText, r.cells[2].innerText])"
    )
    assert [tuple(r) for r in shown] == want

    expect(page.locator("#accepted")).to_have_text("7")
    assert page.get_attribute("#health", "data-status") == "ok"

    # live: new usage shows up without a reload
    client.v1.billing.meter_events.create(
        {"event_name": "dash_calls", "payload": {"stripe_customer_id": "cus_b", "value": "5"}, "timestamp": now}
    )
    run_processor(gw_settings)
    sent["cus_b"].append((now, 5))
    want_today = expected("cus_b", DAY)[today]
    expect(page.locator(f"#chart rect.bar[data-start='{today}']")).to_have_attribute("data-value", want_today)
    expect(page.locator("#accepted")).to_have_text("8")
    assert problems == []


@pytest.mark.parametrize("path", ["/", "/upload"])
def test_pages_work_when_the_url_carries_the_key(
    chromium: Any, client: stripe.StripeClient, url: str, gw_settings: Settings, path: str
) -> None:
    """``http://<key>:@host/`` is how a link or a headless browser logs in; fetch() refuses relative paths
    on such a page unless they are made absolute on the page's origin."""
    expect = pytest.importorskip("playwright.sync_api").expect
    make_meter(client, "cred_calls")
    context = chromium.new_context()  # no stored credentials: only the ones in the URL
    try:
        page = context.new_page()
        problems = watch_problems(page)
        page.goto(url.replace("http://", f"http://{API_KEY}:@") + path + "?refresh=1")
        if path == "/":
            expect(page.locator("#meters tbody tr")).to_have_count(1)
            expect(page.locator("#health")).to_have_attribute("data-status", "ok")
        else:
            expect(page.locator("#template-meter option")).to_have_count(1)
        assert problems == []
    finally:
        context.close()
