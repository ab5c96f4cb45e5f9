"""Requests Stripe refuses, with the parameter and code it names: one table that the emulator's tests and
the gateway's tests both run, since both answer Stripe's API and must refuse alike."""

from __future__ import annotations

from typing import Any

#: ``POST /v1/billing/meters`` bodies Stripe refuses: (params, error param, error code).
METER_CREATE_ERRORS: list[tuple[dict[str, Any], str, str]] = [
    ({"event_name": "x", "default_aggregation": {"formula": "sum"}}, "display_name", "parameter_missing"),
    ({"display_name": "X", "default_aggregation": {"formula": "sum"}}, "event_name", "parameter_missing"),
    ({"display_name": "X", "event_name": "x"}, "default_aggregation", "parameter_missing"),
    (
        {"display_name": "X", "event_name": "x", "default_aggregation": {"formula": "max"}},
        "default_aggregation[formula]",
        "parameter_invalid_string",
    ),
    (
        {"display_name": "X", "event_name": "x" * 101, "default_aggregation": {"formula": "sum"}},
        "event_name",
        "string_too_long",
    ),
    (
        {
            "display_name": "X",
            "event_name": "x",
            "default_aggregation": {"formula": "sum"},
            "event_time_window": "week",
        },
        "event_time_window",
        "parameter_invalid_string",
    ),
    (
        {
            "display_name": "X",
            "event_name": "x",
            "default_aggregation": {"formula": "sum"},
            "customer_mapping": {"type": "by_email", "event_payload_key": "c"},
        },
        "customer_mapping[type]",
        "parameter_invalid_string",
    ),
    (
        {"display_name": "X", "event_name": "x", "default_aggregation": {"formula": "sum"}, "colour": "red"},
        "colour",
        "parameter_unknown",
    ),
]
