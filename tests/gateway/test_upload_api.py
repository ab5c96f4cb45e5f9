"""The dashboard's upload endpoints over real HTTP, against a gateway on the session's real broker and
Redis, with the real processor turning the imported rows into aggregates: counts and per-line errors,
check then send, a re-upload (plain and forced) never counting twice, the 5 MiB limit (by
Content-Length and while streaming), the per-meter CSV template, and parameter errors."""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from http.client import HTTPConnection
from typing import Any
from urllib.parse import urlsplit

import pytest
import stripe

from processor.config import Settings
from processor.errors import InvalidRequestError
from processor.gateway.upload import MAX_FILE_BYTES, UploadOptions, parse_options, template_csv
from processor.meters.model import Meter
from processor.state.connect import SyncRedis
from processor.state.keys import Keys
from tests.gateway.conftest import bearer, http, make_meter, run_processor

IMPORTS = "/dashboard/api/imports"
HOUR = 3600


def multipart(content: bytes, filename: str = "usage.csv", **fields: str) -> tuple[bytes, str]:
    """A multipart/form-data body with the file and the text fields, as a browser's FormData sends it."""
    boundary = "----meterstream" + uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
        f"Content-Type: text/csv\r\n\r\n".encode()
        + content
        + b"\r\n"
    )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def upload(url: str, content: bytes, *, query: str = "", **fields: str) -> tuple[int, Any]:
    body, ctype = multipart(content, **fields)
    status, _, raw = http(f"{url}{IMPORTS}{query}", "POST", body=body, headers={**bearer(), "Content-Type": ctype})
    return status, json.loads(raw)


def csv_bytes(rows: list[tuple[int | str, str, str, str]], customer_key: str = "stripe_customer_id") -> bytes:
    lines = [f"timestamp,event_name,payload_{customer_key},payload_value"]
    lines += [",".join(str(c) for c in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def hourly(client: SyncRedis, settings: Settings, meter_id: str, customers: list[str]) -> dict[str, dict[str, str]]:
    keys = Keys(settings.redis_prefix)
    return {c: client.hgetall(keys.usage_hour(meter_id, c)) for c in customers}  # type: ignore[misc]


def expected_hourly(rows: list[tuple[int | str, str, str, str]]) -> dict[str, dict[str, str]]:
    totals: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for ts, _, customer, value in rows:
        assert isinstance(ts, int)
        totals[customer][ts // HOUR * HOUR] += int(value)
    return {c: {str(h): str(v) for h, v in hours.items()} for c, hours in totals.items()}


@pytest.fixture
def decoded_redis(redis_client: SyncRedis) -> SyncRedis:
    return redis_client


def test_check_send_and_reupload_never_double_count(
    url: str, client: stripe.StripeClient, gw_settings: Settings, decoded_redis: SyncRedis, now: int
) -> None:
    meter = make_meter(client, "upl_calls")
    rows: list[tuple[int | str, str, str, str]] = [
        (now - 3 * HOUR, "upl_calls", "cus_a", "5"),
        (now - 3 * HOUR + 1, "upl_calls", "cus_a", "7"),
        (now - 2 * HOUR, "upl_calls", "cus_b", "-2"),
        (now - 2 * HOUR, "upl_calls", "cus_b", "-2"),  # the same content twice: two events, both count
        (now - 1 * HOUR, "upl_calls", "cus_a", "1000000000000"),
    ]
    content = csv_bytes(rows)
    keys = Keys(gw_settings.redis_prefix)

    status, checked = upload(url, content, dry_run="true")
    assert status == 200, checked
    assert checked["status"] == "checked"
    assert (checked["valid_rows"], checked["invalid_rows"], checked["errors"]) == (5, 0, [])
    assert checked["already_imported"] is None and checked["sent"] == 0
    assert checked["meters"] == [
        {
            "event_name": "upl_calls",
            "rows": 5,
            "meter": {"id": meter.id, "display_name": "Upl Calls", "formula": "sum", "status": "active"},
        }
    ]
    assert checked["filename"] == "usage.csv" and checked["size"] == len(content) and checked["format"] == "csv"
    assert decoded_redis.get(keys.import_state(checked["digest"])) is None  # a dry run records nothing

    status, sent = upload(url, content, digest=checked["digest"])
    assert status == 200, sent
    assert (sent["status"], sent["sent"], sent["skipped_done"], sent["meters"]) == ("imported", 5, 0, None)
    run_processor(gw_settings)
    want = expected_hourly(rows)
    assert hourly(decoded_redis, gw_settings, meter.id, ["cus_a", "cus_b"]) == want

    # the same file again: recognised by its digest, refused unless forced
    status, again = upload(url, content, dry_run="true")
    assert status == 200
    done = again["already_imported"]
    assert done is not None and done["rows"] == 5 and now - 5 <= done["finished_at"] <= time.time() + 5
    status, refused = upload(url, content)
    assert status == 200
    assert (refused["status"], refused["sent"]) == ("already_imported", 0)

    # forced: the very same identifiers, which the processor drops as duplicates
    status, forced = upload(url, content, force="true")
    assert status == 200
    assert (forced["status"], forced["sent"]) == ("imported", 5)
    run_processor(gw_settings)
    assert hourly(decoded_redis, gw_settings, meter.id, ["cus_a", "cus_b"]) == want
    assert decoded_redis.hget(keys.stats("processor"), "event:dup") == "5"


def test_invalid_rows_are_reported_per_line_and_block_the_send(
    url: str, client: stripe.StripeClient, gw_settings: Settings, decoded_redis: SyncRedis, now: int
) -> None:
    meter = make_meter(client, "upl_bad")
    good = (now - HOUR, "upl_bad", "cus_ok", "3")
    content = csv_bytes(
        [
            good,  # line 2
            (now - HOUR, "upl_bad", "cus_x", "4,5"),  # line 3: one cell too many
            (now - HOUR, "upl_bad", "", "4"),  # line 4: no customer
            ("yesterday", "upl_bad", "cus_x", "4"),  # line 5: not a timestamp
            (now - 40 * 86_400, "upl_bad", "cus_x", "4"),  # line 6: beyond 35 days
            (now - HOUR, "nobody_meters_this", "cus_x", "4"),  # valid here; the processor says no_meter
        ]
    )
    status, checked = upload(url, content, dry_run="true")
    assert status == 200
    assert (checked["valid_rows"], checked["invalid_rows"]) == (2, 4)
    by_line = {e["line"]: e["message"] for e in checked["errors"]}
    assert sorted(by_line) == [3, 4, 5, 6]
    assert "5 cells" in by_line[3]
    assert "stripe_customer_id" in by_line[4]
    assert "yesterday" in by_line[5]
    assert "35 days" in by_line[6]
    cells = {e["line"]: (e["column"], e["cell"]) for e in checked["errors"]}
    assert cells[4] == ("payload_stripe_customer_id", "")  # the bad cell: its column and content
    assert cells[6][0] == "timestamp" and cells[6][1].endswith("Z")
    assert cells[3] == cells[5] == (None, None)  # row-level errors name no single cell
    assert checked["meters"] == [
        {"event_name": "nobody_meters_this", "rows": 1, "meter": None},
        {"event_name": "upl_bad", "rows": 1, "meter": {"id": meter.id, "display_name": "Upl Bad", "formula": "sum", "status": "active"}},
    ]  # fmt: skip

    status, refused = upload(url, content)
    assert status == 400
    assert refused["error"]["type"] == "invalid_request_error"
    assert refused["error"]["param"] == "skip_invalid"
    assert "line 3" in refused["error"]["message"]
    assert decoded_redis.get(Keys(gw_settings.redis_prefix).import_state(checked["digest"])) is None

    status, sent = upload(url, content, skip_invalid="true")
    assert status == 200
    assert (sent["status"], sent["sent"], sent["invalid_rows"]) == ("imported", 2, 4)
    run_processor(gw_settings)
    assert hourly(decoded_redis, gw_settings, meter.id, ["cus_ok"]) == expected_hourly([good])


def test_over_5_mb_is_refused_by_content_length(url: str) -> None:
    status, body = upload(url, b"x" * (MAX_FILE_BYTES + 1))
    assert status == 413
    error = body["error"]
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", "request_too_large", "file")
    assert "5 MB" in error["message"]


def test_over_5_mb_is_refused_while_streaming(url: str) -> None:
    """Without a Content-Length (chunked), the stream is cut at the limit."""
    body, ctype = multipart(b"timestamp,event_name\n" + b"1,a\n" * (MAX_FILE_BYTES // 4 + 1))
    parts = urlsplit(url)
    assert parts.hostname is not None
    conn = HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.putrequest("POST", IMPORTS + "?dry_run=true")
        for name, value in {**bearer(), "Content-Type": ctype, "Transfer-Encoding": "chunked"}.items():
            conn.putheader(name, value)
        conn.endheaders()
        try:
            for i in range(0, len(body), 1 << 16):
                chunk = body[i : i + (1 << 16)]
                conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
            conn.send(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may answer and close before the whole body is sent
        response = conn.getresponse()
        assert response.status == 413
        assert json.loads(response.read())["error"]["code"] == "request_too_large"
    finally:
        conn.close()


def test_exactly_5_mb_is_accepted(url: str, client: stripe.StripeClient, now: int) -> None:
    """A file of exactly 5 MiB is checked (few, wide rows keep the check quick)."""
    make_meter(client, "upl_big")
    header = b"timestamp,event_name,payload_stripe_customer_id,payload_value,payload_note\n"
    prefix = f"{now - HOUR},upl_big,cus_big,1,".encode()
    rows = []
    left = MAX_FILE_BYTES - len(header)
    while left:
        note = min(100_000, left - len(prefix) - 1)
        rows.append(prefix + b"n" * note + b"\n")
        left -= len(rows[-1])
    content = header + b"".join(rows)
    assert len(content) == MAX_FILE_BYTES
    status, checked = upload(url, content, dry_run="true")
    assert status == 200, checked
    assert (checked["valid_rows"], checked["invalid_rows"], checked["size"]) == (len(rows), 0, MAX_FILE_BYTES)


def test_template_has_the_meters_payload_keys(url: str, client: stripe.StripeClient) -> None:
    meter = make_meter(
        client,
        "upl_tokens",
        customer_mapping={"event_payload_key": "account", "type": "by_id"},
        value_settings={"event_payload_key": "tokens"},
    )
    status, headers, raw = http(f"{url}{IMPORTS}/template?meter={meter.id}", headers=bearer())
    assert status == 200
    assert raw.split(b"\r\n")[0] == b"timestamp,event_name,payload_account,payload_tokens"
    assert headers["Content-Type"].startswith("text/csv")
    assert 'filename="upl_tokens.csv"' in headers["Content-Disposition"]
    status, _, raw = http(f"{url}{IMPORTS}/template?meter=mtr_nope", headers=bearer())
    assert status == 404 and json.loads(raw)["error"]["code"] == "resource_missing"


def test_request_errors(url: str, now: int) -> None:
    content = csv_bytes([(now, "x", "cus", "1")])
    status, body = upload(url, content, bogus="1")
    assert (status, body["error"]["code"], body["error"]["param"]) == (400, "parameter_unknown", "bogus")
    status, body = upload(url, content, dry_run="yes")
    assert (status, body["error"]["param"]) == (400, "dry_run")
    status, body = upload(url, content, dry_run="true", digest="0" * 64)
    assert (status, body["error"]["param"]) == (400, "digest")
    status, body = upload(url, content, dry_run="true", digest="a" * 1000)
    assert (status, body["error"]["param"]) == (400, "digest")  # a field's value is read 256 bytes at most
    status, body = upload(url, content, query="?dry_run=true", dry_run="false")
    assert (status, body["error"]["param"]) == (400, "dry_run")  # given twice
    wide = b"timestamp,event_name,payload_stripe_customer_id,payload_note\n1,x,cus," + b"n" * 200_000 + b"\n"
    status, body = upload(url, wide, dry_run="true")  # the CSV reader's field limit: a line error, not a crash
    assert (status, body["valid_rows"], body["invalid_rows"]) == (200, 0, 1)
    assert body["errors"][0]["line"] == 2 and "field limit" in body["errors"][0]["message"]
    status, _, raw = http(
        f"{url}{IMPORTS}",
        "POST",
        body=b"a=b",
        headers={**bearer(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert (status, json.loads(raw)["error"]["param"]) == (400, "file")
    form, ctype = multipart(content)
    status, _, _ = http(f"{url}{IMPORTS}", "POST", body=form, headers={"Content-Type": ctype})
    assert status == 401
    cross = {**bearer(), "Content-Type": ctype, "Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
    status, _, _ = http(f"{url}{IMPORTS}", "POST", body=form, headers=cross)
    assert status == 403


def test_page_and_script_are_served(url: str) -> None:
    status, headers, raw = http(f"{url}/upload", headers=bearer())
    assert status == 200 and b"upload.js" in raw
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    status, headers, raw = http(f"{url}/static/upload.js", headers=bearer())
    assert status == 200 and headers["Content-Type"].startswith("text/javascript") and b"dashboard/api/imports" in raw
    status, _, raw = http(f"{url}/", headers=bearer())
    assert b'href="/upload"' in raw  # linked from the dashboard


# ---- pure -----------------------------------------------------------------------------------------------
def test_parse_options() -> None:
    assert parse_options({}) == UploadOptions()
    digest = "ab" * 32
    got = parse_options({"dry_run": "true", "skip_invalid": "true", "force": "false", "digest": digest})
    assert got == UploadOptions(dry_run=True, skip_invalid=True, force=False, digest=digest)
    for bad in ({"force": "1"}, {"digest": "xyz"}, {"other": "true"}):
        with pytest.raises(InvalidRequestError):
            parse_options(bad)


def test_template_csv_count_meter_has_no_value_column() -> None:
    now = 1_796_600_000
    assert template_csv(Meter("mtr_1", "C", "calls", "count"), now) == (
        "timestamp,event_name,payload_stripe_customer_id\r\n2026-12-06T23:00:00Z,calls,cus_EXAMPLE\r\n"
    )
    assert template_csv(Meter("mtr_2", "S", "by,tes", "last", value_key="n"), now) == (
        'timestamp,event_name,payload_stripe_customer_id,payload_n\r\n2026-12-06T23:00:00Z,"by,tes",cus_EXAMPLE,1\r\n'
    )


def test_skip_invalid_sends_the_rows_after_a_csv_break(
    url: str, client: stripe.StripeClient, gw_settings: Settings, decoded_redis: SyncRedis, now: int
) -> None:
    """Issue 13, item 3: a cell over the field limit / an unclosed quote ended the reading, the answer said
    `imported` counting the rows before it, and the valid rows after it were never sent."""
    meter = make_meter(client, "upl_break")
    before = (now - HOUR, "upl_break", "cus_b", "3")
    after = [(now - HOUR, "upl_break", "cus_b", str(v)) for v in (5, 7)]
    rows = [before, (now - HOUR, "upl_break", "cus_b", "9" * 200_000), *after]  # line 3: over the field limit
    status, sent = upload(url, csv_bytes(rows), skip_invalid="true")
    assert status == 200, sent
    assert (sent["status"], sent["sent"], sent["valid_rows"], sent["invalid_rows"], sent["unread_rows"]) == (
        "imported",
        3,
        3,
        1,
        1,
    )
    assert [(e["line"], e["unread"]) for e in sent["errors"]] == [(3, True)] and sent["unreadable"] is None
    quoted = csv_bytes([(now - 2 * HOUR, "upl_break", "cus_q", '"11')]) + b"%d,upl_break,cus_q,13\n" % (now - 2 * HOUR)
    status, sent = upload(url, quoted, skip_invalid="true")
    assert status == 200, sent
    assert (sent["sent"], sent["unread_rows"], [e["line"] for e in sent["errors"]]) == (1, 1, [2])
    run_processor(gw_settings)
    assert hourly(decoded_redis, gw_settings, meter.id, ["cus_b", "cus_q"]) == expected_hourly(
        [before, *after, (now - 2 * HOUR, "upl_break", "cus_q", "13")]
    )


def test_a_file_the_reader_cannot_finish_is_refused_whole(
    url: str, gw_settings: Settings, decoded_redis: SyncRedis
) -> None:
    content = (
        b'[{"event_name": "upl_whole", "payload": {"stripe_customer_id": "c", "value": 1}},\n{oops},\n'
        b'{"event_name": "upl_whole", "payload": {"stripe_customer_id": "c", "value": 2}}]'
    )
    status, checked = upload(url, content, filename="events.json", dry_run="true")
    assert status == 200 and checked["unreadable"]["line"] == 2, checked
    status, refused = upload(url, content, filename="events.json", skip_invalid="true")
    assert status == 400 and refused["error"]["param"] == "file", refused
    assert "nothing was sent" in refused["error"]["message"]
    assert decoded_redis.get(Keys(gw_settings.redis_prefix).import_state(checked["digest"])) is None


def test_deeply_nested_json_upload_is_accounted_for(url: str) -> None:
    """Issue 13, item 4 (imports): a RecursionError traceback and a 500."""
    deep = b'{"a":' * 1000 + b"1" + b"}" * 1000
    good = b'{"event_name": "upl_deep", "payload": {"stripe_customer_id": "c", "value": 1}}'
    status, checked = upload(url, deep + b"\n" + good + b"\n", filename="events.jsonl", dry_run="true")
    assert status == 200 and (checked["valid_rows"], checked["invalid_rows"]) == (1, 1), checked
    status, checked = upload(url, b"[" + deep + b"]", filename="events.json", dry_run="true")
    assert status == 200 and checked["unreadable"] is not None, checked


def test_customer_ids_over_the_cap_are_invalid_rows(url: str, now: int) -> None:
    rows = [(now - HOUR, "upl_cap", "c" * 255, "1"), (now - HOUR, "upl_cap", "c" * 256, "1")]
    status, checked = upload(url, csv_bytes(rows), dry_run="true")
    assert status == 200 and (checked["valid_rows"], checked["invalid_rows"]) == (1, 1), checked
    assert checked["errors"][0]["line"] == 3 and "255" in checked["errors"][0]["message"]
