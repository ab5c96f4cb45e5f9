"""``meterstream notifier``: error reports from ``meter-event-errors`` to event destinations.

Two loops in one process:

- **reports** (a consumer group of its own, ``<processor group>-notifier``, so it never disturbs the
  processor or an operator reading the topic): records are grouped per meter and window
  (:class:`~processor.notify.reports.Windows`); when a window is over, its events are stored with their
  deliveries (:func:`~processor.notify.store.store_event`, idempotent), and only then are the offsets of
  its records committed. A crash before the commit re-reads those records and rebuilds the same events,
  which are stored once: nothing is lost and nothing is reported twice.
- **deliveries**: every owed delivery whose time has come is POSTed to its endpoint as a thin event,
  signed with ``Stripe-Signature``; a 2xx answer settles it, anything else (an error status, a refused
  connection, a timeout) schedules it again with exponential backoff (1 s, 2 s, 4 s ... capped at one hour),
  for up to 3 days as Stripe retries. The deliveries live in Redis, so a restart resumes them.

A record's meter: the ``meter_id`` the gateway wrote, else the meter that owns its ``event_name`` now.
Errors with no meter (``no_meter``, or an event without a usable ``event_name``) are reported as
``v1.billing.meter.no_meter_found``; all others as ``v1.billing.meter.error_report_triggered`` of their meter.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from typing import TYPE_CHECKING, Any, cast

from confluent_kafka import KafkaException, TopicPartition

from processor.config import Settings
from processor.kafka.consume import new_consumer
from processor.notify.reports import Windows, dumps, sign
from processor.notify.store import destinations, store_event, thin_of
from processor.state.connect import SyncRedis, sync_redis
from processor.state.keys import Keys, notify_attempts, notify_deliveries, notify_event
from topics import Topic, topic_name

if TYPE_CHECKING:
    from confluent_kafka import Consumer

__all__ = ["DEFAULT_WINDOW_S", "Notifier", "notifier_group"]

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S = 60
MAX_BACKOFF_S = 3600
RETRY_SPAN_MS = 3 * 86_400_000
ERRORS = Topic.ERRORS
_USER_AGENT = "Stripe/1.0 (+https://stripe.com/docs/webhooks); meterstream"


def notifier_group(settings: Settings) -> str:
    return f"{settings.processor_group}-notifier"


class Notifier:
    def __init__(
        self,
        settings: Settings,
        *,
        window_s: float = DEFAULT_WINDOW_S,
        grace_s: float = 2.0,
        backoff_base_s: float = 1.0,
        poll_s: float = 0.5,
        http_timeout_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.prefix = settings.redis_prefix
        self.keys = Keys(settings.redis_prefix)
        self.windows = Windows(int(window_s * 1000), int(grace_s * 1000))
        self.backoff_base_s = backoff_base_s
        self.poll_s = poll_s
        self.http_timeout_s = http_timeout_s
        self.topic = topic_name(ERRORS, settings.topic_prefix)
        self.redis: SyncRedis = sync_redis(settings, decode_responses=True)
        self._consumer: Consumer | None = None
        self.stats = {"records": 0, "events": 0, "delivered": 0, "failed_attempts": 0, "abandoned": 0}

    # ---- reports ---------------------------------------------------------------------------------
    def _meter_of(self, record: dict[str, Any]) -> str | None:
        if record.get("code") == "no_meter":
            return None
        meter_id = record.get("meter_id")
        if isinstance(meter_id, str) and meter_id:
            return meter_id
        event = record.get("event")
        name = event.get("event_name") if isinstance(event, dict) else None
        if not isinstance(name, str) or not name:
            return None
        owner = cast(str | None, self.redis.hget(self.keys.meter_names, name))
        return None if owner is None or owner.startswith("pending:") else owner

    def _take(self, partition: int, offset: int, value: bytes | None, timestamp_ms: int) -> None:
        try:
            record = json.loads(value or b"")
        except ValueError:
            record = None
        if not isinstance(record, dict) or not isinstance(record.get("code"), str):
            self.windows.seen(partition, offset)
            return
        event = record.get("event")
        identifier = record.get("identifier")
        if not isinstance(identifier, str) and isinstance(event, dict):
            identifier = event.get("identifier")
        received = record.get("received_at")
        self.windows.add(
            partition=partition,
            offset=offset,
            code=record["code"],
            message=str(record.get("message", ""))[:500],
            identifier=identifier if isinstance(identifier, str) else None,
            meter_id=self._meter_of(record),
            received_ms=received if isinstance(received, int) else timestamp_ms,
        )
        self.stats["records"] += 1

    def flush(self, now_ms: int) -> int:
        """Store the events of every window that is over, then commit what they cover. Returns events stored."""
        stored = 0
        for bucket in self.windows.due(now_ms):
            if store_event(self.redis, self.prefix, bucket, now_ms):
                stored += 1
        self.stats["events"] += stored
        consumer = self._consumer
        offsets = self.windows.commit_offsets()
        if consumer is not None and offsets:
            assigned = {tp.partition for tp in consumer.assignment()}
            tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items() if p in assigned]
            if tps:
                try:
                    consumer.commit(offsets=tps, asynchronous=False)
                except KafkaException as exc:  # re-read and re-stored (idempotently) after a restart
                    log.warning("notifier offset commit failed: %s", exc)
        return stored

    def _report_loop(self, stop: threading.Event) -> None:
        consumer = new_consumer(self.settings, notifier_group(self.settings))
        self._consumer = consumer
        consumer.subscribe([self.topic])
        try:
            while not stop.is_set():
                for msg in consumer.consume(500, self.poll_s):
                    if msg.error() is not None:
                        continue
                    partition, offset = msg.partition(), msg.offset()
                    assert partition is not None and offset is not None
                    self._take(partition, offset, msg.value(), msg.timestamp()[1])
                self.flush(int(time.time() * 1000))
        finally:
            self._consumer = None
            consumer.close()

    # ---- deliveries ------------------------------------------------------------------------------
    def deliver_due(self, now_ms: int) -> int:
        """Attempt every delivery due by ``now_ms``; returns how many the endpoints acknowledged."""
        due = cast(
            list[str], self.redis.zrangebyscore(notify_deliveries(self.prefix), "-inf", now_ms, start=0, num=100)
        )
        if not due:
            return 0
        dests = {d["id"]: d for d in destinations(self.redis, self.prefix)}
        ok = 0
        for member in due:
            event_id, _, dest_id = member.partition("|")
            dest = dests.get(dest_id)
            raw = cast(str | None, self.redis.get(notify_event(self.prefix, event_id)))
            if dest is None or dest["status"] != "enabled" or raw is None:
                self._settle(member)  # the destination was deleted or disabled, or the event expired
                continue
            event = json.loads(raw)
            if self._post(dest, dumps(thin_of(event))):
                self._settle(member)
                ok += 1
            else:
                self._retry(member, event, now_ms)
        self.stats["delivered"] += ok
        return ok

    def _post(self, dest: dict[str, Any], body: str) -> bool:
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": sign(body, dest["secret"], int(time.time())),
            "User-Agent": _USER_AGENT,
        }
        request = urllib.request.Request(dest["url"], data=body.encode(), method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.http_timeout_s) as response:
                status: int = response.status
                return 200 <= status < 300
        except urllib.error.HTTPError as err:
            err.close()
            log.info("event destination %s answered %s", dest["id"], err.code)
        except (OSError, ValueError) as exc:
            log.info("event destination %s unreachable: %s", dest["id"], type(exc).__name__)
        return False

    def _settle(self, member: str) -> None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(notify_deliveries(self.prefix), member)
        pipe.hdel(notify_attempts(self.prefix), member)
        pipe.execute()

    def _retry(self, member: str, event: dict[str, Any], now_ms: int) -> None:
        self.stats["failed_attempts"] += 1
        attempts = int(self.redis.hincrby(notify_attempts(self.prefix), member, 1))
        created_ms = _iso_ms(event.get("created"))
        if created_ms is not None and now_ms - created_ms > RETRY_SPAN_MS:
            log.error("giving up delivering %s after %d attempts over 3 days", member, attempts)
            self.stats["abandoned"] += 1
            self._settle(member)
            return
        delay_s = min(self.backoff_base_s * 2 ** (attempts - 1), MAX_BACKOFF_S)
        self.redis.zadd(notify_deliveries(self.prefix), {member: now_ms + int(delay_s * 1000)}, xx=True)

    def _delivery_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                sent = self.deliver_due(int(time.time() * 1000))
            except Exception:
                log.exception("delivering error reports failed; trying again")
                sent = 0
            if not sent:
                stop.wait(self.poll_s)

    # ---- lifecycle -------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Report and deliver until ``stop`` is set."""
        deliveries = threading.Thread(target=self._delivery_loop, args=(stop,), name="notifier-deliveries", daemon=True)
        deliveries.start()
        try:
            self._report_loop(stop)
        finally:
            stop.set()
            deliveries.join(self.http_timeout_s + 5)

    def close(self) -> None:
        self.redis.close()


def _iso_ms(value: Any) -> int | None:
    if not isinstance(value, str):
        return None
    try:
        return int(dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
    except ValueError:
        return None
