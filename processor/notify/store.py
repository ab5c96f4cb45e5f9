"""Where error reports live: event destinations, events (30 days), and the deliveries still owed (Redis,
keys in :mod:`processor.state.keys`, all under the ``{notify}`` hash tag).

A delivery is a member ``<event id>|<destination id>`` of a sorted set scored by its next attempt time; it
leaves the set only when the endpoint answered 2xx (or the event is older than Stripe's 3 days of
retries). So a notifier that stops, crashes or restarts resumes exactly the deliveries still owed.
"""

from __future__ import annotations

import json
from typing import Any, cast

from processor.notify.reports import Bucket, dumps, full_event
from processor.state.connect import SyncRedis
from processor.state.keys import NOTIFY_EVENT_TTL_S, notify_deliveries, notify_destinations, notify_event

__all__ = ["THIN_FIELDS", "store_event", "thin_of"]

THIN_FIELDS = ("id", "object", "type", "created", "livemode", "context", "related_object")

# Store an event and schedule its deliveries, once: a second run (the notifier re-reading records after a
# restart) finds the event and changes nothing. KEYS: event, deliveries. ARGV: event JSON, ttl s, now ms,
# destination ids...
_STORE = """
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
for i = 4, #ARGV do redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[i]) end
return 1
"""


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
