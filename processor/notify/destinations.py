"""Stripe's event destinations, the pure part: checking ``POST /v2/core/event_destinations`` parameters,
the stored form of a destination and its ``v2.core.event_destination`` object. No I/O, so the gateway
(destinations in Redis, processor/gateway/destinations.py) and the Stripe emulator (destinations in
memory, processor/emulator/notifications.py) accept and answer exactly the same way: one implementation,
one set of error codes.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Iterable
from typing import Any, cast
from urllib.parse import urlsplit

from processor.errors import InvalidRequestError
from processor.notify.reports import EVENT_TYPES
from processor.wire import get_str, reject_unknown

__all__ = ["INCLUDES", "checked_create", "destination_object", "include_of", "new_destination"]

_FIELDS = (
    "name",
    "description",
    "type",
    "event_payload",
    "enabled_events",
    "webhook_endpoint",
    "include",
    "metadata",
    "events_from",
)
INCLUDES = frozenset({"webhook_endpoint.signing_secret", "webhook_endpoint.url"})
_INCLUDE_KEY = re.compile(r"include(\[\d+\])?")


def _invalid(message: str, param: str, code: str = "parameter_invalid_string") -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def _string_list(params: dict[str, Any], name: str, allowed: frozenset[str] | tuple[str, ...]) -> list[str]:
    raw = params.get(name)
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise _invalid(f"Invalid {name}: must be an array of strings.", name, "parameter_invalid_array")
    for i, item in enumerate(raw):
        if item not in allowed:
            raise _invalid(f"Invalid {name}[{i}]: must be one of {', '.join(sorted(allowed))}.", f"{name}[{i}]")
    return cast(list[str], raw)


def checked_create(params: dict[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """The create request's parameters, checked (else :class:`InvalidRequestError`), and its ``include``."""
    reject_unknown(params, _FIELDS)
    get_str(params, "name", required=True, max_length=5000)
    get_str(params, "description", max_length=5000)
    if get_str(params, "type", required=True) != "webhook_endpoint":
        raise _invalid("Invalid type: meterstream delivers to webhook_endpoint destinations only.", "type")
    if get_str(params, "event_payload", required=True) != "thin":
        raise _invalid("Invalid event_payload: these events are thin events; use thin.", "event_payload")
    if "enabled_events" not in params:
        raise InvalidRequestError(
            "Missing required param: enabled_events.", param="enabled_events", code="parameter_missing"
        )
    enabled = _string_list(params, "enabled_events", EVENT_TYPES)
    if not enabled:
        raise _invalid(
            "Invalid enabled_events: name at least one event type.", "enabled_events", "parameter_invalid_array"
        )
    if params.get("events_from") not in (None, ["@self"]):
        raise _invalid("Invalid events_from: only @self is supported.", "events_from")
    endpoint = params.get("webhook_endpoint")
    url = endpoint.get("url") if isinstance(endpoint, dict) else None
    if not isinstance(endpoint, dict) or set(endpoint) - {"url"} or not isinstance(url, str):
        raise InvalidRequestError(
            "Missing required param: webhook_endpoint[url].", param="webhook_endpoint[url]", code="parameter_missing"
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or len(url) > 2048:
        raise _invalid("Invalid webhook_endpoint[url]: must be an http or https URL.", "webhook_endpoint[url]")
    metadata = params.get("metadata")
    if metadata is not None and (
        not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values())
    ):
        raise _invalid("Invalid metadata: must be an object of strings.", "metadata", "parameter_invalid_object")
    include = frozenset(_string_list(params, "include", INCLUDES))
    return params, include


def include_of(query: Iterable[tuple[str, str]]) -> frozenset[str]:
    """The known ``include`` values of a GET's query items (unknown ones are ignored), written
    ``include=...`` or, as the ``stripe`` SDK encodes arrays, ``include[0]=...&include[1]=...``."""
    return frozenset(v for k, v in query if _INCLUDE_KEY.fullmatch(k) and v in INCLUDES)


def new_destination(params: dict[str, Any], now_iso: str) -> dict[str, Any]:
    """The stored form of a destination created with (already checked) ``params``."""
    return {
        "id": "ed_test_" + secrets.token_hex(12),
        "name": params["name"],
        "description": params.get("description", ""),
        "enabled_events": list(params["enabled_events"]),
        "event_payload": "thin",
        "type": "webhook_endpoint",
        "metadata": params.get("metadata") or {},
        "created": now_iso,
        "updated": now_iso,
        "status": "enabled",
        "url": params["webhook_endpoint"]["url"],
        "secret": "whsec_" + secrets.token_hex(24),
    }


def destination_object(stored: dict[str, Any], include: frozenset[str] = frozenset()) -> dict[str, Any]:
    """Stripe's ``v2.core.event_destination``; the URL and the secret only when ``include`` asks."""
    endpoint = {
        "signing_secret": stored["secret"] if "webhook_endpoint.signing_secret" in include else None,
        "url": stored["url"] if "webhook_endpoint.url" in include else None,
    }
    return {
        "id": stored["id"],
        "object": "v2.core.event_destination",
        "created": stored["created"],
        "description": stored["description"],
        "enabled_events": stored["enabled_events"],
        "event_payload": stored["event_payload"],
        "events_from": ["@self"],
        "livemode": False,
        "metadata": stored["metadata"],
        "name": stored["name"],
        "snapshot_api_version": None,
        "status": stored["status"],
        "status_details": None,
        "type": stored["type"],
        "updated": stored["updated"],
        "webhook_endpoint": endpoint,
    }
