"""Error-report windows: grouping per meter and window, samples, and the offsets safe to commit."""

from __future__ import annotations

import stripe

from processor.notify.destinations import include_of
from processor.notify.reports import ERROR_REPORT, MAX_SAMPLES, NO_METER, Windows, full_event, sign, thin_event


def _add(w: Windows, partition: int, offset: int, meter: str | None, at_ms: int, code: str = "c") -> None:
    w.add(
        partition=partition,
        offset=offset,
        code=code,
        message=f"m{offset}",
        identifier=f"i{offset}",
        meter_id=meter,
        received_ms=at_ms,
    )


def test_windows_group_per_meter_and_commit_only_reported_records() -> None:
    w = Windows(10_000, grace_ms=1_000)
    _add(w, 0, 5, "mtr_a", 1_000)
    _add(w, 0, 6, "mtr_b", 2_000)
    _add(w, 1, 3, None, 3_000, "no_meter")
    _add(w, 0, 7, "mtr_a", 12_000)  # next window
    for i in range(MAX_SAMPLES + 2):
        _add(w, 1, 10 + i, "mtr_a", 4_000, "x")
    assert w.commit_offsets() == {0: 5, 1: 3}  # nothing reported yet
    assert w.due(10_999) == []
    due = w.due(11_000)
    assert sorted((b.type, b.meter_id) for b in due) == [
        (ERROR_REPORT, "mtr_a"),
        (ERROR_REPORT, "mtr_b"),
        (NO_METER, None),
    ]
    a = next(b for b in due if b.meter_id == "mtr_a")
    assert a.count == 1 + MAX_SAMPLES + 2 and len(a.codes["x"].samples) == MAX_SAMPLES
    assert w.commit_offsets() == {0: 7, 1: 17}  # partition 0 waits for the open window of offset 7
    assert [b.start_ms for b in w.due(21_000)] == [10_000]
    assert w.commit_offsets() == {0: 8, 1: 17} and len(w) == 0


def test_event_shapes_and_signature() -> None:
    w = Windows(60_000)
    _add(w, 0, 1, "mtr_a", 60_500, "meter_event_invalid_value")
    (bucket,) = w.due(200_000)
    thin = thin_event(bucket, 130_000)
    assert thin["object"] == "v2.core.event" and thin["related_object"]["url"] == "/v1/billing/meters/mtr_a"
    full = full_event(bucket, 130_000)
    assert full["data"]["validation_start"] == "1970-01-01T00:01:00.000Z"
    assert full["data"]["validation_end"] == "1970-01-01T00:02:00.000Z"
    assert full["data"]["reason"]["error_types"][0]["sample_errors"] == [
        {"error_message": "m1", "request": {"identifier": "i1"}}
    ]
    assert bucket.event_id == w_event_id_again()
    header = sign('{"a":1}', "whsec_x", 1_700_000_000)
    stripe.WebhookSignature.verify_header('{"a":1}', header, "whsec_x", tolerance=None)


def w_event_id_again() -> str:
    """The same record read again (a restarted notifier) gives the same event id."""
    w = Windows(60_000)
    _add(w, 0, 1, "mtr_a", 60_900, "meter_event_invalid_value")
    (bucket,) = w.due(200_000)
    return bucket.event_id


def test_include_is_read_in_both_query_encodings() -> None:
    """The ``stripe`` SDK encodes a GET's ``include`` array as ``include[0]=...``; plain ``include=`` works too;
    unknown values and other keys are ignored."""
    sdk = [("include[0]", "webhook_endpoint.signing_secret"), ("include[1]", "webhook_endpoint.url")]
    assert include_of(sdk) == {"webhook_endpoint.signing_secret", "webhook_endpoint.url"}
    assert include_of([("include", "webhook_endpoint.url"), ("include", "nope")]) == {"webhook_endpoint.url"}
    assert include_of([("includes", "webhook_endpoint.url"), ("include[x]", "webhook_endpoint.url")]) == set()
