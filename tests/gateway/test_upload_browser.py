"""The upload page in a real headless Chromium (Debian's ``chromium``, driven by Playwright, launched as in
test_dashboard_browser.py): pick a CSV, check it (counts, a line error, the meters involved), send it, see
the result and the aggregates the real processor computes; uploading the same file again shows it was
imported before and sends nothing; the template link serves the meter's columns; too large a file is
refused before it is uploaded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import stripe

from processor.config import Settings
from processor.state.connect import sync_redis_url
from processor.state.keys import Keys
from tests.gateway.conftest import make_meter, requires_chromium, run_processor

pytestmark = requires_chromium

HOUR = 3600


def test_upload_page(
    browser_page: tuple[Any, list[str]],
    client: stripe.StripeClient,
    url: str,
    gw_settings: Settings,
    redis_url: str,
    tmp_path: Path,
) -> None:
    page, problems = browser_page
    expect = pytest.importorskip("playwright.sync_api").expect
    meter = make_meter(client, "page_calls", customer_mapping={"event_payload_key": "account", "type": "by_id"})
    hour = int(time.time()) // HOUR * HOUR - HOUR
    csv = tmp_path / "usage.csv"
    csv.write_text(
        "timestamp,event_name,payload_account,payload_value\n"
        f"{hour + 10},page_calls,acct_1,40\n"
        f"{hour + 20},page_calls,acct_1,2\n"
        f"not-a-time,page_calls,acct_1,9\n"  # line 4
        f"{hour + 30},page_calls,acct_2,7\n"
        f"{hour + 40},page_calls,acct_3,abc\n",  # line 6: the value is no number
        "utf-8",
    )

    page.goto(f"{url}/upload")
    expect(page.locator("#template-link")).to_have_attribute(
        "href", f"/dashboard/api/imports/template?meter={meter.id}"
    )
    template = page.request.get(f"{url}/dashboard/api/imports/template?meter={meter.id}")
    header, example = template.text().splitlines()
    assert header == "timestamp,event_name,payload_account,payload_value"
    assert example.split(",")[1:] == ["page_calls", "cus_EXAMPLE", "1"]
    # the template as downloaded passes the check: its example row shows formats the importer accepts
    sample = tmp_path / "template.csv"
    sample.write_bytes(template.body())
    page.set_input_files("#file", str(sample))
    page.click("#check")
    expect(page.locator("#report")).to_have_attribute("data-state", "checked")
    expect(page.locator("#valid-rows")).to_have_text("1")
    expect(page.locator("#invalid-rows")).to_have_text("0")

    page.set_input_files("#file", str(csv))
    page.click("#check")
    expect(page.locator("#report")).to_have_attribute("data-state", "checked")
    expect(page.locator("#valid-rows")).to_have_text("3")
    expect(page.locator("#invalid-rows")).to_have_text("2")
    error_row = page.locator("#errors tbody tr[data-line='4']")
    expect(error_row).to_contain_text("not-a-time")
    assert page.locator("#errors tbody tr").count() == 2
    # the bad cell is shown: its column and what the file holds there
    bad_value = page.locator("#errors tbody tr[data-line='6']")
    expect(bad_value).to_have_attribute("data-column", "payload_value")
    cells = bad_value.locator("td").all_inner_texts()
    assert cells[:3] == ["6", "payload_value", '"abc"'], cells
    expect(page.locator("#involved tbody tr")).to_contain_text(meter.id)
    assert page.is_hidden("#already")

    # with an invalid row the send is refused, and nothing goes out
    page.click("#send")
    expect(page.locator("#result")).to_have_attribute("data-state", "error")
    expect(page.locator("#result-text")).to_contain_text("nothing was sent")

    page.check("#skip-invalid")
    page.click("#send")
    expect(page.locator("#result")).to_have_attribute("data-state", "imported")
    expect(page.locator("#result-text")).to_contain_text("Sent 3 row(s)")
    expect(page.locator("#message")).to_contain_text("Done.")
    run_processor(gw_settings)
    keys = Keys(gw_settings.redis_prefix)
    with sync_redis_url(redis_url, decode_responses=True) as r:
        assert r.hgetall(keys.usage_hour(meter.id, "acct_1")) == {str(hour): "42"}
        assert r.hgetall(keys.usage_hour(meter.id, "acct_2")) == {str(hour): "7"}

    # the same file again: shown as imported before, and a send sends nothing
    page.reload()
    page.set_input_files("#file", str(csv))
    page.click("#check")
    expect(page.locator("#report")).to_have_attribute("data-state", "already-imported")
    expect(page.locator("#already")).to_contain_text("already imported")
    expect(page.locator("#force-label")).to_be_visible()
    page.check("#skip-invalid")
    page.click("#send")
    expect(page.locator("#result")).to_have_attribute("data-state", "already_imported")
    expect(page.locator("#result")).to_have_attribute("data-sent", "0")
    expect(page.locator("#result-text")).to_contain_text("Nothing sent")
    expect(page.locator("#message")).to_have_text("")  # no "Done." next to "Nothing sent"

    # over 5 MB: refused in the page, before any upload
    big = tmp_path / "big.csv"
    big.write_bytes(b"x" * (5 * 1024 * 1024 + 1))
    page.set_input_files("#file", str(big))
    expect(page.locator("#message")).to_contain_text("at most 5 MB")
    assert page.is_disabled("#check")
    # the one refused send is the only thing the console reports
    assert problems == ["Failed to load resource: the server responded with a status of 400 (Bad Request)"]
