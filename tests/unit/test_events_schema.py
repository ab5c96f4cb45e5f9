"""Edge validation of meter events and cancellations (processor.events.schema): examples and properties."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.errors import EventValidationError, InvalidRequestError
from processor.events.schema import (
    check_cancel_shape,
    check_event_shape,
    parse_cancel_object,
    parse_event_object,
)
from topics import load_schema

EVENT_SCHEMA = load_schema("meter-events")
CANCEL_SCHEMA = load_schema("meter-event-adjustments")


def _error(fn: Any, *args: Any) -> EventValidationError:
    with pytest.raises(EventValidationError) as info:
        fn(*args)
    return info.value


# -- examples -----------------------------------------------------------------------------------------


def test_valid_event_is_normalised_to_the_topic_shape() -> None:
    value = check_event_shape("api_requests", {"stripe_customer_id": "cus_1", "value": 25}, "id-1", 1_700_000_000)
    assert value == {
        "event_name": "api_requests",
        "payload": {"stripe_customer_id": "cus_1", "value": 25},
        "identifier": "id-1",
        "timestamp": 1_700_000_000,
    }
    jsonschema.validate(value, EVENT_SCHEMA)


def test_optional_fields_are_left_out_not_null() -> None:
    value = check_event_shape("e", {"k": "v"})
    assert value == {"event_name": "e", "payload": {"k": "v"}}
    jsonschema.validate(value, EVENT_SCHEMA)


def test_payload_is_copied() -> None:
    payload: dict[str, str | int] = {"k": "v"}
    value = check_event_shape("e", payload)
    payload["k"] = "changed"
    assert value["payload"] == {"k": "v"}


def test_missing_event_name_is_stripes_message() -> None:
    err = _error(check_event_shape, None, {"k": "v"})
    assert (err.message, err.param, err.code) == (
        "Missing required param: event_name.",
        "event_name",
        "parameter_missing",
    )
    assert isinstance(err, InvalidRequestError)
    assert err.to_stripe() == {
        "type": "invalid_request_error",
        "message": "Missing required param: event_name.",
        "param": "event_name",
        "code": "parameter_missing",
    }


def test_empty_event_name_is_invalid_empty() -> None:
    err = _error(check_event_shape, "", {"k": "v"})
    assert (err.param, err.code) == ("event_name", "parameter_invalid_empty")
    assert "empty string for 'event_name'" in err.message


@pytest.mark.parametrize("field", ["event_name", "identifier"])
def test_strings_longer_than_100_are_refused(field: str) -> None:
    args: dict[str, Any] = {"event_name": "e", "payload": {"k": "v"}, field: "x" * 101}
    check_event_shape(**{**args, field: "x" * 100})  # the limit itself is fine
    err = _error(lambda: check_event_shape(**args))
    assert err.param == field
    assert err.message == "Invalid string: xxxxxxxxxxxxxxxxxxxx...; must be at most 100 characters"


@pytest.mark.parametrize(
    ("payload", "param", "fragment"),
    [
        (None, "payload", "Missing required param: payload."),
        ({}, "payload", "Missing required param: payload."),
        ("cus_1", "payload", "got str"),
        ([("k", "v")], "payload", "got array"),
        ({"value": 1.5}, "payload[value]", "got float"),
        ({"value": True}, "payload[value]", "got boolean"),
        ({"value": None}, "payload[value]", "got null"),
        ({"nested": {"a": 1}}, "payload[nested]", "got object"),
        ({"list": [1]}, "payload[list]", "got array"),
        ({"": "v"}, "payload", "keys must be non-empty strings"),
        ({1: "v"}, "payload", "keys must be non-empty strings"),
        ({"k": "\ud800"}, "payload[k]", "UTF-8"),
    ],
)
def test_payload_must_be_a_flat_map_of_strings_and_ints(payload: Any, param: str, fragment: str) -> None:
    err = _error(check_event_shape, "e", payload)
    assert err.param == param
    assert fragment in err.message


@pytest.mark.parametrize("timestamp", [True, 1.0, "1700000000"])
def test_timestamp_must_be_an_int(timestamp: Any) -> None:
    err = _error(check_event_shape, "e", {"k": "v"}, None, timestamp)
    assert (err.param, err.code) == ("timestamp", "parameter_invalid_integer")


def test_non_string_event_name_and_identifier() -> None:
    assert _error(check_event_shape, 42, {"k": "v"}).message == "Invalid event_name: must be a string, got int."
    assert _error(check_event_shape, "e", {"k": "v"}, 7).param == "identifier"


def test_cancel_shape_and_errors() -> None:
    value = check_cancel_shape("api_requests", "id-1")
    assert value == {"event_name": "api_requests", "type": "cancel", "cancel": {"identifier": "id-1"}}
    jsonschema.validate(value, CANCEL_SCHEMA)
    err = _error(check_cancel_shape, "api_requests", None)
    assert (err.param, err.code) == ("cancel[identifier]", "parameter_missing")
    assert _error(check_cancel_shape, "api_requests", "x" * 101).param == "cancel[identifier]"
    assert _error(check_cancel_shape, "", "id").param == "event_name"


def test_parse_event_object_refuses_unknown_fields() -> None:
    assert parse_event_object({"event_name": "e", "payload": {"k": 1}, "timestamp": 5}) == {
        "event_name": "e",
        "payload": {"k": 1},
        "timestamp": 5,
    }
    err = _error(parse_event_object, {"event_name": "e", "payload": {"k": 1}, "customer": "cus_1"})
    assert (err.message, err.param, err.code) == (
        "Received unknown parameter: customer",
        "customer",
        "parameter_unknown",
    )
    assert _error(parse_event_object, ["e"]).param is None


def test_parse_cancel_object() -> None:
    good = {"event_name": "e", "type": "cancel", "cancel": {"identifier": "id"}}
    assert parse_cancel_object(good) == good
    assert _error(parse_cancel_object, {**good, "type": "void"}).param == "type"
    assert _error(parse_cancel_object, {"event_name": "e", "cancel": {"identifier": "id"}}).code == "parameter_missing"
    assert _error(parse_cancel_object, {**good, "cancel": "id"}).param == "cancel"
    assert _error(parse_cancel_object, {**good, "cancel": {"identifier": "id", "x": 1}}).param == "cancel[x]"
    assert _error(parse_cancel_object, {"event_name": "e", "type": "cancel"}).param == "cancel[identifier]"


# -- properties -----------------------------------------------------------------------------------------

# Valid text: any characters but NUL (refused everywhere, processor/limits.py) and surrogates (not UTF-8).
texts = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
names = st.text(texts, min_size=1, max_size=100)
payload_values = st.one_of(st.text(texts), st.integers())
payloads = st.dictionaries(st.text(texts, min_size=1, max_size=30), payload_values, min_size=1, max_size=8)
identifiers = st.one_of(st.none(), st.text(texts, min_size=1, max_size=100))
timestamps = st.one_of(st.none(), st.integers(min_value=-(2**63), max_value=2**63 - 1))


@given(names, payloads, identifiers, timestamps)
def test_valid_events_pass_and_round_trip_through_the_topic_schema(
    name: str, payload: dict[str, str | int], identifier: str | None, timestamp: int | None
) -> None:
    value = check_event_shape(name, payload, identifier, timestamp)
    wire = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    decoded = json.loads(wire)
    assert decoded == value
    jsonschema.validate(decoded, EVENT_SCHEMA)
    assert decoded["payload"] == payload
    assert decoded.get("identifier") == identifier
    assert decoded.get("timestamp") == timestamp


@given(names, st.text(texts, min_size=1, max_size=100))
def test_valid_cancels_pass_and_round_trip_through_the_topic_schema(name: str, identifier: str) -> None:
    value = check_cancel_shape(name, identifier)
    decoded = json.loads(json.dumps(value, ensure_ascii=False).encode("utf-8"))
    jsonschema.validate(decoded, CANCEL_SCHEMA)
    assert parse_cancel_object(decoded) == value


bad_scalars = st.one_of(
    st.none(), st.booleans(), st.floats(allow_nan=False), st.lists(st.integers(), max_size=2), st.just({"a": 1})
)

# Each mutation breaks exactly one field of a valid event: (field to replace, strategy of bad values,
# param the error must name; None = derived from the payload key).
_mutations: dict[str, tuple[str, st.SearchStrategy[Any], str | None]] = {
    "name_missing": ("event_name", st.none(), "event_name"),
    "name_empty": ("event_name", st.just(""), "event_name"),
    "name_long": ("event_name", st.text(min_size=101, max_size=300), "event_name"),
    "name_type": ("event_name", st.one_of(st.integers(), st.booleans(), st.floats()), "event_name"),
    "ident_empty": ("identifier", st.just(""), "identifier"),
    "ident_long": ("identifier", st.text(min_size=101, max_size=300), "identifier"),
    "ident_type": ("identifier", st.one_of(st.integers(), st.booleans(), st.lists(st.text())), "identifier"),
    "ts_type": ("timestamp", st.one_of(st.booleans(), st.floats(), st.text()), "timestamp"),
    "payload_type": ("payload", st.one_of(st.text(), st.integers(), st.lists(st.text())), "payload"),
    "payload_value": ("payload_value", bad_scalars, None),
    "payload_key": ("payload_key", st.one_of(st.just(""), st.integers(), st.none()), "payload"),
}


@given(
    names,
    payloads,
    identifiers,
    timestamps,
    st.sampled_from(sorted(_mutations)),
    st.data(),
)
def test_invalid_events_always_raise_naming_the_param(
    name: str,
    payload: dict[str, Any],
    identifier: str | None,
    timestamp: int | None,
    mutation: str,
    data: st.DataObject,
) -> None:
    field, strategy, param = _mutations[mutation]
    bad = data.draw(strategy)
    args: dict[str, Any] = {
        "event_name": name,
        "payload": dict(payload),
        "identifier": identifier,
        "timestamp": timestamp,
    }
    if field == "payload_value":
        key = data.draw(st.sampled_from(sorted(payload)))
        args["payload"][key] = bad
        param = f"payload[{key}]"
    elif field == "payload_key":
        args["payload"][bad] = "v"
    else:
        args[field] = bad
    with pytest.raises(EventValidationError) as info:
        check_event_shape(**args)
    assert info.value.param == param
    assert info.value.message
