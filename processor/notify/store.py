"""Where error reports live: event destinations, events (30 days), and the deliveries still owed (Redis,
keys in :mod:`processor.state.keys`, all under the ``{notify}`` hash tag).

A delivery is a member ``<event id>|<destination id>`` of a sorted set scored by its next attempt time; it
leaves the set only when the endpoint answered 2xx (or the event is older than Stripe's 3 days of
retries). So a notifier that stops, crashes or restarts resumes exactly the deliveries still owed.
"""

from __future__ import annotations

import json
import secrets
from typing import Any, cast

from processor.notify.reports import Bucket, dumps, full_event
from processor.state.connect import SyncRedis
from processor.state.keys import NOTIFY_EVENT_TTL_S, notify_deliveries, notify_destinations, notify_event

__all__ = ["THIN_FIELDS", "destination_object", "new_destination", "store_event", "thin_of"]

THIN_FIELDS = ("id", "object", "type", "created", "livemode", "context", "related_object")

# Store an event and schedule its deliveries, once: a second run (the notifier re-reading records after a
# restart) finds the event and changes nothing. KEYS: event, deliveries. ARGV: event JSON, ttl s, now ms,
# destination ids...
_STORE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
for i = 4, #ARGV do redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[i]) end
return 1
"""


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


def thin_of(event: dict[str, Any]) -> dict[str, Any]:
    """The thin notification of a stored full event."""
    return {k: event[k] for k in THIN_FIELDS if k in event}


def destinations(client: SyncRedis, prefix: str) -> list[dict[str, Any]]:
    raw = cast(dict[str, str], client.hgetall(notify_destinations(prefix)))
    return [json.loads(v) for v in raw.values()]


def store_event(client: SyncRedis, prefix: str, bucket: Bucket, now_ms: int) -> bool:
    """Store the bucket's event and owe it to every enabled destination that wants its type. ``False``
    when it was stored before (nothing changed)."""
    event = full_event(bucket, now_ms)
    targets = [
        d["id"] for d in destinations(client, prefix) if d["status"] == "enabled" and bucket.type in d["enabled_events"]
    ]
    members = [f"{event['id']}|{t}" for t in targets]
    keys = [notify_event(prefix, event["id"]), notify_deliveries(prefix)]
    stored = client.eval(_STORE, len(keys), *keys, dumps(event), NOTIFY_EVENT_TTL_S, now_ms, *members)
    return bool(int(cast(int, stored)))
