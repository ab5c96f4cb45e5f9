"""Stripe's create/update validation of meters (pure: no broker, no Redis)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.errors import InvalidRequestError, MeterValidationError
from processor.meters.model import Meter
from processor.meters.validation import validate_create_params, validate_update_params


def base(**overrides: Any) -> dict[str, Any]:
    params: dict[str, Any] = {
        "display_name": "API calls",
        "event_name": "api_call",
        "default_aggregation": {"formula": "sum"},
    }
    params.update(overrides)
    return params


def error_of(params: Any) -> MeterValidationError:
    with pytest.raises(MeterValidationError) as info:
        validate_create_params(params)
    return info.value


def test_minimal_params_get_stripe_defaults() -> None:
    assert validate_create_params(base()) == {
        "display_name": "API calls",
        "event_name": "api_call",
        "default_aggregation": {"formula": "sum"},
        "event_time_window": None,
        "customer_mapping": {"event_payload_key": "stripe_customer_id", "type": "by_id"},
        "value_settings": {"event_payload_key": "value"},
    }


def test_full_params_are_kept() -> None:
    params = base(
        event_time_window="hour",
        customer_mapping={"event_payload_key": "account", "type": "by_id"},
        value_settings={"event_payload_key": "bytes_used"},
        default_aggregation={"formula": "last"},
        expand=["x"],
    )
    out = validate_create_params(params)
    assert out["event_time_window"] == "hour"
    assert out["customer_mapping"] == {"event_payload_key": "account", "type": "by_id"}
    assert out["value_settings"] == {"event_payload_key": "bytes_used"}
    assert out["default_aggregation"] == {"formula": "last"}
    assert "expand" not in out


@pytest.mark.parametrize("window", [None, ""])
def test_no_window_means_raw_ingestion(window: str | None) -> None:
    assert validate_create_params(base(event_time_window=window))["event_time_window"] is None


@pytest.mark.parametrize(
    ("missing", "param"),
    [
        ("display_name", "display_name"),
        ("event_name", "event_name"),
        ("default_aggregation", "default_aggregation"),
    ],
)
def test_missing_required_param(missing: str, param: str) -> None:
    params = base()
    del params[missing]
    err = error_of(params)
    assert (err.message, err.param, err.code) == (f"Missing required param: {param}.", param, "parameter_missing")
    assert err.http_status == 400
    assert err.to_stripe() == {
        "type": "invalid_request_error",
        "message": f"Missing required param: {param}.",
        "param": param,
        "code": "parameter_missing",
    }


def test_missing_nested_required_params() -> None:
    assert error_of(base(default_aggregation={})).param == "default_aggregation[formula]"
    err = error_of(base(customer_mapping={"event_payload_key": "acct"}))
    assert (err.param, err.code) == ("customer_mapping[type]", "parameter_missing")
    assert error_of(base(customer_mapping={"type": "by_id"})).param == "customer_mapping[event_payload_key]"
    assert error_of(base(value_settings={})).param == "value_settings[event_payload_key]"


def test_unknown_params_are_refused_by_name() -> None:
    err = error_of(base(status="active"))
    assert (err.message, err.param, err.code) == ("Received unknown parameter: status", "status", "parameter_unknown")
    err = error_of(base(default_aggregation={"formula": "sum", "window": "x"}))
    assert (err.param, err.code) == ("default_aggregation[window]", "parameter_unknown")
    assert error_of(base(customer_mapping={"event_payload_key": "a", "type": "by_id", "x": 1})).param == (
        "customer_mapping[x]"
    )


def test_lengths_at_and_over_stripes_limits() -> None:
    assert validate_create_params(base(event_name="e" * 100))["event_name"] == "e" * 100
    assert validate_create_params(base(display_name="d" * 250))["display_name"] == "d" * 250
    err = error_of(base(event_name="e" * 101))
    assert (err.param, err.code) == ("event_name", "string_too_long")
    assert err.message == "Invalid string: eeeeeeeeeeeeeeeeeeee...; must be at most 100 characters"
    err = error_of(base(display_name="d" * 251))
    assert (err.param, err.code) == ("display_name", "string_too_long")
    assert "at most 250 characters" in err.message
    err = error_of(base(value_settings={"event_payload_key": "v" * 101}))
    assert err.param == "value_settings[event_payload_key]"


def test_length_counts_characters_not_bytes() -> None:
    assert validate_create_params(base(event_name="é" * 100))["event_name"] == "é" * 100


@pytest.mark.parametrize(
    ("override", "param", "message"),
    [
        (
            {"default_aggregation": {"formula": "max"}},
            "default_aggregation[formula]",
            "Invalid default_aggregation[formula]: must be one of sum, count, or last",
        ),
        ({"event_time_window": "week"}, "event_time_window", "Invalid event_time_window: must be one of hour or day"),
        (
            {"customer_mapping": {"event_payload_key": "a", "type": "by_email"}},
            "customer_mapping[type]",
            "Invalid customer_mapping[type]: must be one of by_id",
        ),
        ({"default_aggregation": {"formula": "SUM"}}, "default_aggregation[formula]", None),
        ({"event_name": 42}, "event_name", "Invalid event_name: must be a string, got int"),
    ],
)
def test_invalid_values(override: dict[str, Any], param: str, message: str | None) -> None:
    err = error_of(base(**override))
    assert (err.param, err.code) == (param, "parameter_invalid_string")
    if message is not None:
        assert err.message == message


def test_empty_and_blank_strings() -> None:
    err = error_of(base(display_name=""))
    assert (err.param, err.code) == ("display_name", "parameter_invalid_string_empty")
    assert err.message.startswith("You passed an empty string for 'display_name'.")
    err = error_of(base(event_name="   "))
    assert (err.param, err.code) == ("event_name", "parameter_invalid_string_blank")


def test_wrong_shapes() -> None:
    err = error_of(base(default_aggregation="sum"))
    assert (err.param, err.code) == ("default_aggregation", "parameter_invalid_object")
    assert error_of(base(expand="x")).code == "parameter_invalid_array"
    assert error_of(["not", "a", "dict"]).code == "parameter_invalid_object"


def test_unknown_param_is_reported_before_missing_ones() -> None:
    assert error_of({"bogus": 1}).param == "bogus"


def test_update_allows_only_display_name() -> None:
    assert validate_update_params({"display_name": "New"}) == {"display_name": "New"}
    assert validate_update_params({}) == {}
    assert validate_update_params({"expand": []}) == {}
    for key, value in (("event_name", "x"), ("default_aggregation", {"formula": "sum"}), ("status", "inactive")):
        with pytest.raises(MeterValidationError) as info:
            validate_update_params({"display_name": "ok", key: value})
        assert (info.value.param, info.value.code) == (key, "parameter_unknown")
        assert "only display_name can be updated" in info.value.message
    with pytest.raises(MeterValidationError) as info:
        validate_update_params({"display_name": "x" * 251})
    assert info.value.code == "string_too_long"


def test_validation_errors_are_invalid_request_errors() -> None:
    assert isinstance(error_of({}), InvalidRequestError)


# ---- properties ------------------------------------------------------------------------------------

# Valid text: anything but NUL and lone surrogates (refused everywhere: processor/limits.py).
_chars = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")
names = st.text(_chars, min_size=1, max_size=100).filter(lambda s: s.strip() != "")
keys = st.text(_chars, min_size=1, max_size=100).filter(lambda s: s.strip() != "")


@st.composite
def valid_params(draw: st.DrawFn) -> dict[str, Any]:
    params: dict[str, Any] = {
        "display_name": draw(st.text(_chars, min_size=1, max_size=250).filter(lambda s: s.strip() != "")),
        "event_name": draw(names),
        "default_aggregation": {"formula": draw(st.sampled_from(["sum", "count", "last"]))},
    }
    window = draw(st.sampled_from([None, "hour", "day", "absent"]))
    if window != "absent":
        params["event_time_window"] = window
    if draw(st.booleans()):
        params["customer_mapping"] = {"event_payload_key": draw(keys), "type": "by_id"}
    if draw(st.booleans()):
        params["value_settings"] = {"event_payload_key": draw(keys)}
    return params


@given(valid_params())
def test_valid_params_normalise_idempotently_and_round_trip(params: dict[str, Any]) -> None:
    normalized = validate_create_params(params)
    assert validate_create_params(dict(normalized)) == normalized
    assert normalized["event_name"] == params["event_name"]
    meter = Meter.from_create_params("mtr_x", normalized, 1_700_000_000)
    assert meter.create_params() == normalized
    assert Meter.from_json(meter.to_json()) == meter
    assert meter.to_dict()["customer_mapping"] == normalized["customer_mapping"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
param_names = st.sampled_from(
    ["display_name", "event_name", "default_aggregation", "event_time_window", "customer_mapping", "value_settings"]
)


@given(st.dictionaries(param_names | st.text(max_size=6), json_values, max_size=7))
def test_arbitrary_input_either_validates_or_raises_a_stripe_error(params: dict[str, Any]) -> None:
    try:
        out = validate_create_params(params)
    except MeterValidationError as err:
        assert err.code is not None and err.message
        return
    assert set(out) == {
        "display_name",
        "event_name",
        "default_aggregation",
        "event_time_window",
        "customer_mapping",
        "value_settings",
    }


@pytest.mark.parametrize("field", ["display_name", "event_name"])
@pytest.mark.parametrize("bad", ["a\x00b", "a\ud800"])
def test_nul_and_surrogates_in_meter_names_are_refused(field: str, bad: str) -> None:
    """Issue 13: NUL bytes were stored in meter names (through the CLI as well as the API)."""
    params = {"display_name": "D", "event_name": "e", "default_aggregation": {"formula": "sum"}, field: bad}
    with pytest.raises(MeterValidationError) as info:
        validate_create_params(params)
    assert info.value.param == field
