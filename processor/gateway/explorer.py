"""The dashboard's events explorer: the latest accepted events (``meter-events-accepted``) and rejected
events (``meter-event-errors``, with Stripe's error code and message), filtered by meter, customer or
identifier, with their payloads.

Reads are bounded: per partition only the newest :data:`TAIL` records are read, whatever the topic holds.
Where a partition ends is taken from a Fetch response (a throwaway consumer reads from the start and
keeps the high watermark librdkafka caches from the answer), because the embedded Tansu broker answers
ListOffsets wrongly (SPEC §11, processor.kafka.consume.fetched_high_watermarks); then it reads from ``high - TAIL`` to ``high``. The
consumer never joins a group or commits. An identifier older than the tail is not found here: the
explorer says how far back it looked, and ``meterstream errors list`` reads a whole topic.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

from processor.config import Settings
from processor.errors import InvalidRequestError
from processor.gateway.state import GATEWAY, Gateway
from processor.kafka.consume import fetched_high_watermarks, new_consumer
from processor.wire import get_int, get_str, json_response
from topics import Topic, topic_name

__all__ = ["TAIL", "ExplorerQuery", "install", "read_tail"]

#: Records read per partition, from the end.
TAIL = 300
_TOPICS = {"accepted": Topic.ACCEPTED, "rejected": Topic.ERRORS}
_TIMEOUT_S = 5.0

routes = web.RouteTableDef()


@dataclass(frozen=True)
class ExplorerQuery:
    kind: str
    meter: str | None = None  # meter id or event_name
    customer: str | None = None
    identifier: str | None = None  # substring
    limit: int = 50

    def matches(self, row: dict[str, Any]) -> bool:
        if self.meter is not None and self.meter not in (row.get("meter_id"), row.get("event_name")):
            return False
        if self.customer is not None and row.get("customer") != self.customer:
            return False
        return not (self.identifier is not None and self.identifier not in str(row.get("identifier") or ""))


def _row(kind: str, partition: int, offset: int, timestamp_ms: int, value: bytes | None) -> dict[str, Any] | None:
    try:
        data = json.loads(value or b"")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    # when the pipeline received the original event (both topics carry it), else the record's own time
    received = data.get("received_at")
    when = received if isinstance(received, int) and not isinstance(received, bool) else timestamp_ms
    where = {"partition": partition, "offset": offset, "time": when // 1000}
    if kind == "accepted":
        return {
            **where,
            "kind": data.get("kind"),
            "meter_id": data.get("meter_id"),
            "event_name": data.get("event_name"),
            "customer": data.get("customer"),
            "identifier": data.get("identifier"),
            "timestamp": data.get("timestamp"),
            "payload": data.get("payload"),
        }
    raw_event = data.get("event")
    event: dict[str, Any] = raw_event if isinstance(raw_event, dict) else {}
    raw_payload = event.get("payload")
    payload: dict[str, Any] | None = raw_payload if isinstance(raw_payload, dict) else None
    customer = payload.get("stripe_customer_id") if payload else None
    return {
        **where,
        "code": data.get("code"),
        "message": data.get("message"),
        "event_name": event.get("event_name"),
        "meter_id": None,
        "customer": customer if isinstance(customer, str) else None,
        "identifier": event.get("identifier") or (event.get("cancel") or {}).get("identifier"),
        "timestamp": event.get("timestamp"),
        "payload": payload,
        "source": f"{data.get('topic')}/{data.get('partition')}/{data.get('offset')}",
    }


def read_tail(settings: Settings, query: ExplorerQuery, tail: int = TAIL) -> dict[str, Any]:
    """The newest matching records (newest first) among the last ``tail`` of every partition."""
    topic = topic_name(_TOPICS[query.kind], settings.topic_prefix)
    consumer = new_consumer(
        settings,
        f"meterstream-explorer-{uuid.uuid4().hex[:8]}",
        **{"enable.partition.eof": True, "fetch.wait.max.ms": 50, "log_level": 3},
    )
    try:
        meta = consumer.list_topics(topic, timeout=_TIMEOUT_S).topics.get(topic)
        if meta is None or meta.error is not None:
            raise InvalidRequestError(f"topic {topic} does not exist", param="kind")
        parts = sorted(meta.partitions)
        found = fetched_high_watermarks(consumer, {(topic, p): OFFSET_BEGINNING for p in parts}, _TIMEOUT_S)
        highs = {p: found[(topic, p)] for p in parts if (topic, p) in found}
        starts = {p: max(0, h - tail) for p, h in highs.items() if h > 0}
        rows: list[dict[str, Any]] = []
        scanned = 0
        if starts:
            consumer.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
            open_parts = set(starts)
            deadline = time.monotonic() + _TIMEOUT_S
            while open_parts and time.monotonic() < deadline:
                for msg in consumer.consume(1000, 0.2):
                    part = msg.partition() or 0
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            open_parts.discard(part)
                        continue
                    offset = msg.offset() or 0
                    if offset >= highs[part]:
                        open_parts.discard(part)
                        continue
                    scanned += 1
                    row = _row(query.kind, part, offset, msg.timestamp()[1], msg.value())
                    if row is not None and query.matches(row):
                        rows.append(row)
                    if offset + 1 >= highs[part]:
                        open_parts.discard(part)
        rows.sort(key=lambda r: (r["time"], r["partition"], r["offset"]), reverse=True)
        return {
            "kind": query.kind,
            "topic": _TOPICS[query.kind],
            "data": rows[: query.limit],
            "has_more": len(rows) > query.limit,
            "scanned": scanned,
            "tail_per_partition": tail,
        }
    finally:
        consumer.close()


def install(app: web.Application) -> None:
    app.add_routes(routes)


@routes.get("/dashboard/api/events")
async def events(request: web.Request) -> web.Response:
    """``kind`` = accepted | rejected; optional ``meter`` (id or event_name), ``customer``, ``identifier``
    (substring), ``limit`` (1-200, default 50)."""
    gw: Gateway = request.app[GATEWAY]
    query = dict(request.query)
    kind = get_str(query, "kind", required=True, max_length=20)
    if kind not in _TOPICS:
        raise InvalidRequestError("kind must be accepted or rejected.", param="kind")
    assert kind is not None
    q = ExplorerQuery(
        kind,
        meter=get_str(query, "meter", max_length=200) or None,
        customer=get_str(query, "customer", max_length=500) or None,
        identifier=get_str(query, "identifier", max_length=500) or None,
        limit=get_int(query, "limit", minimum=1, maximum=200) or 50,
    )
    return json_response(await asyncio.to_thread(read_tail, gw.settings, q))
