"""Stripe's HTTP wire protocol, shared by the Stripe emulator and the Stripe-compatible gateway.

Semantics-free on purpose: bracket form decoding (:mod:`.forms`), typed parameter reads with Stripe's
error codes (:mod:`.params`), error bodies, ``Request-Id`` and the aiohttp middleware stack (:mod:`.http`),
API-key checks (:mod:`.auth`), list pagination (:mod:`.pagination`) and v2's ISO 8601 times
(:mod:`.times`). What an endpoint *does* belongs to the server that uses this layer.
"""

from processor.wire.auth import KeyChecker, presented_key, require_key
from processor.wire.forms import as_mapping, decode_form, decode_pairs
from processor.wire.http import (
    DEFAULT_MAX_BODY,
    REQUEST_ID,
    api_error_response,
    create_app,
    error_response,
    is_v2,
    json_response,
    read_body,
    read_params,
    request_id,
)
from processor.wire.pagination import PageParams, list_object, page_bounds, paginate_by_id
from processor.wire.params import get_enum, get_int, get_map, get_str, param_name, reject_unknown
from processor.wire.times import format_iso, meter_event_session, parse_iso

__all__ = [
    "DEFAULT_MAX_BODY",
    "REQUEST_ID",
    "KeyChecker",
    "PageParams",
    "api_error_response",
    "as_mapping",
    "create_app",
    "decode_form",
    "decode_pairs",
    "error_response",
    "format_iso",
    "get_enum",
    "get_int",
    "get_map",
    "get_str",
    "is_v2",
    "json_response",
    "list_object",
    "meter_event_session",
    "page_bounds",
    "paginate_by_id",
    "param_name",
    "parse_iso",
    "presented_key",
    "read_body",
    "read_params",
    "reject_unknown",
    "request_id",
    "require_key",
]
