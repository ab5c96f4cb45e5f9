"""Pure parts of the gateway: v2 time format, summary ids and cursors, stream param names, metric
exposition, and the processor's metrics helper. No broker, no Redis."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import generate_latest

from processor import metrics as processor_metrics
from processor.errors import EventValidationError, InvalidRequestError
from processor.gateway.api_v2 import _prefixed
from processor.gateway.metrics import GatewayMetrics, PipelineSnapshot, int_fields
from processor.gateway.summaries import _cursor_start, _tag, summary_id
from processor.wire import format_iso, parse_iso


@given(st.integers(min_value=0, max_value=253_402_300_799))  # up to 9999-12-31T23:59:59Z
def test_iso_round_trip(unix: int) -> None:
    text = format_iso(unix)
    assert text.endswith(".000Z") and len(text) == 24
    assert parse_iso(text) == unix


def test_iso_parsing_rules() -> None:
    assert parse_iso("2024-06-18T12:00:00Z") == 1718712000
    assert parse_iso("2024-06-18T12:00:00") == 1718712000  # no offset: UTC
    assert parse_iso("2024-06-18T14:00:00+02:00") == 1718712000
    assert parse_iso("2024-06-18T12:00:00.999Z") == 1718712000  # fractions truncated
    assert parse_iso("1969-12-31T23:59:59.5Z") == -1  # toward the past, also before 1970
    assert format_iso(1718712000.25) == "2024-06-18T12:00:00.250Z"
    for bad in ("yesterday", "", "2024-13-01T00:00:00Z", "9" * 100, 1718712000, None):
        with pytest.raises(ValueError):
            parse_iso(bad)


@given(
    st.text(min_size=1, max_size=30),
    st.text(min_size=1, max_size=30),
    st.sampled_from([0, 3600, 86400]),
    st.integers(min_value=0, max_value=2**40),
)
def test_summary_ids_round_trip_and_are_bound_to_their_list(meter: str, customer: str, width: int, start: int) -> None:
    sid = summary_id(meter, customer, width, start)
    assert sid.startswith("mtrusg_")
    assert _cursor_start(sid, _tag(meter, customer, width), "starting_after") == start
    other = _tag(meter, customer + "x", width)
    with pytest.raises(InvalidRequestError) as info:
        _cursor_start(sid, other, "ending_before")
    assert info.value.param == "ending_before" and info.value.code == "resource_missing"


def test_cursor_garbage() -> None:
    tag = _tag("mtr_1", "cus_1", 3600)
    for bad in ("", "mtrusg_", f"mtrusg_{tag}", f"mtrusg_{tag}zz", "mtr_1"):
        with pytest.raises(InvalidRequestError):
            _cursor_start(bad, tag, "starting_after")


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("payload[value]", "events[3][payload][value]"),
        ("event_name", "events[3][event_name]"),
        ("payload", "events[3][payload]"),
        ("events[3][timestamp]", "events[3][timestamp]"),  # already prefixed: unchanged
    ],
)
def test_stream_params_are_named_under_their_event(param: str, expected: str) -> None:
    err = _prefixed(EventValidationError("bad", param=param, code="parameter_missing"), ("events", "3"))
    assert err.param == expected and err.code == "parameter_missing"


def test_gateway_exposition_reads_the_stats_hashes() -> None:
    metrics = GatewayMetrics()
    metrics.observe_request("/v1/billing/meters/{id}", "GET", 404, 0.002)
    metrics.count_events("v2_stream", "acked", 100)
    snapshot = PipelineSnapshot(
        processor={"event:new": 7, "event:dup": 2, "cancel:cancel": 1, "rejected:no_meter": 3, "records": 13},
        sink={"delivered:v2_stream": 6, "dead_lettered:v1": 1},
        lag=[("meterstream-processor", "meter-events", 0, 42)],
    )
    text = metrics.render(snapshot).decode()
    for line in (
        'meterstream_gateway_requests_total{method="GET",route="/v1/billing/meters/{id}",status="404"} 1.0',
        'meterstream_gateway_events_total{endpoint="v2_stream",result="acked"} 100.0',
        'meterstream_pipeline_processor_records_total{kind="event",result="new"} 7.0',
        'meterstream_pipeline_processor_records_total{kind="event",result="dup"} 2.0',
        'meterstream_pipeline_processor_records_total{kind="cancel",result="cancel"} 1.0',
        'meterstream_pipeline_processor_rejected_total{code="no_meter"} 3.0',
        'meterstream_pipeline_sink_records_total{counter="delivered",mode="v2_stream"} 6.0',
        'meterstream_pipeline_sink_records_total{counter="dead_lettered",mode="v1"} 1.0',
        'meterstream_pipeline_consumer_lag{group="meterstream-processor",partition="0",topic="meter-events"} 42.0',
    ):
        assert line in text
    assert "records" not in [ln.split("{")[0] for ln in text.splitlines()]  # a field without kind is skipped
    assert GatewayMetrics().render(PipelineSnapshot()).count(b"_total{") == 0  # a second instance starts empty


def test_int_fields() -> None:
    assert int_fields({"a": "3", "b": "x", "c": "-2"}) == {"a": 3, "c": -2}


def test_processor_metrics_helper() -> None:
    def value(name: str, **labels: str) -> float:
        return processor_metrics.REGISTRY.get_sample_value(name, labels) or 0.0

    before = value("meterstream_processor_records_total", kind="event", result="new")
    rejected_before = value("meterstream_processor_rejected_total", code="timestamp_in_future")
    batches_before = value("meterstream_processor_batch_seconds_count")
    processor_metrics.observe_batch({"event:new": 5, "rejected:timestamp_in_future": 2, "event:dup": 0}, 0.01, 7)
    assert value("meterstream_processor_records_total", kind="event", result="new") == before + 5
    assert value("meterstream_processor_rejected_total", code="timestamp_in_future") == rejected_before + 2
    assert value("meterstream_processor_batch_seconds_count") == batches_before + 1
    processor_metrics.set_lag("meter-events", 2, -5)
    assert value("meterstream_processor_lag_records", topic="meter-events", partition="2") == 0
    assert b"meterstream_processor_batch_records_bucket" in generate_latest(processor_metrics.REGISTRY)
    with pytest.raises(ValueError):
        processor_metrics.start_metrics_server(0)


def test_iso_output_is_utc() -> None:
    moment = dt.datetime(2030, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert format_iso(moment.timestamp()) == "2030-01-02T03:04:05.000Z"
