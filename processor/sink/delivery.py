"""The delivery record: what was sent to Stripe, so a replay never sends an event Stripe may already count.

Stripe deduplicates identifiers for (at least) 24 hours after *it* received an event. Resending an
accepted record is therefore safe while it is younger than that, and a gamble afterwards — unless we can
prove Stripe never got it. This record is that proof. Per accepted record (event or cancellation):

- ``a<ms>``: a request carrying it was about to be sent at ``ms`` (written *before* the request, first
  attempt wins). Stripe may or may not have it; if it has, it received it at or after ``ms``, so a
  resend is deduplicated by Stripe until ``ms + 24 h`` at least.
- ``d<ms>``: Stripe accepted it (2xx, or 400 "already exists").
- ``r<ms>``: Stripe refused it for good (a 4xx; it went to the Stripe DLQ), so Stripe does not count it.
  A later attempt turns it back into ``a``.
- absent, for a record received after :attr:`Keys.delivery_since`: no request ever carried it.

Keys: ``<prefix>:dlv:{<meter>:<day>}`` per meter and UTC day of the record's received time, fields
``e``/``c`` + the identifier digest (16 bytes), TTL 40 days (``DELIVERY_TTL_S``), written in one
pipeline per request. The sink opts in by using :class:`RecordingStripeApi` instead of
:class:`~processor.sink.stripe_api.StripeApi` (``meterstream replay`` always does); from then on
every sink process must, or "absent" proves nothing.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from processor.config import Settings
from processor.errors import RetryableSinkError, StateError, StripeRejectedError
from processor.sink.records import AcceptedRecord
from processor.sink.stripe_api import StripeApi, is_already_exists
from processor.state.keys import DAY_S, DELIVERY_TTL_S, Keys, identifier_digest

__all__ = ["DeliveryLog", "DeliveryStatus", "RecordingStripeApi", "lookup_statuses", "record_field"]

# Mark an attempt unless the record is already attempted or delivered (a refused record may be retried).
_ATTEMPT = """
for i = 1, #ARGV - 1 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if not cur or string.sub(cur, 1, 1) == 'r' then redis.call('HSET', KEYS[1], ARGV[i], ARGV[#ARGV]) end
end
redis.call('PEXPIRE', KEYS[1], TTL_MS)
return 1
""".replace("TTL_MS", str(DELIVERY_TTL_S * 1000))


def received_ms_of(record: AcceptedRecord) -> int:
    value = record.raw.get("received_at")
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def record_key(keys: Keys, record: AcceptedRecord) -> str:
    received_s = received_ms_of(record) // 1000
    return keys.delivery(record.meter_id, received_s - received_s % DAY_S)


def record_field(record: AcceptedRecord) -> str:
    return ("c" if record.is_cancel else "e") + identifier_digest(record.identifier)


def _grouped(keys: Keys, records: Iterable[AcceptedRecord]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for record in records:
        groups.setdefault(record_key(keys, record), []).append(record_field(record))
    return groups


class DeliveryLog:
    """Writes the delivery record (asyncio Redis client, as the sink uses)."""

    def __init__(self, redis: Any, keys: Keys) -> None:
        self._redis = redis
        self._keys = keys
        self._attempt = redis.register_script(_ATTEMPT)

    async def start(self) -> None:
        """Note when recording began (kept if an earlier process began it already)."""
        try:
            await self._redis.set(self._keys.delivery_since, str(time.time_ns() // 1_000_000), nx=True)
        except Exception as exc:
            raise StateError(f"cannot start the delivery record: {exc}") from exc

    async def attempting(self, records: Sequence[AcceptedRecord]) -> None:
        """Before a request: these records may reach Stripe from now on. Raises
        :class:`RetryableSinkError` when Redis fails (the request must then not be sent yet)."""
        mark = f"a{time.time_ns() // 1_000_000}"
        try:
            for key, fields in _grouped(self._keys, records).items():
                await self._attempt(keys=[key], args=[*fields, mark])
        except Exception as exc:
            # Retryable: the request is not sent until its attempt is on record (the sink backs off).
            raise RetryableSinkError(f"cannot write the delivery record: {exc}") from exc

    async def finished(self, records: Sequence[AcceptedRecord], *, accepted: bool) -> None:
        """After Stripe's final answer: accepted (``d``) or refused for good (``r``)."""
        mark = f"{'d' if accepted else 'r'}{time.time_ns() // 1_000_000}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            for key, fields in _grouped(self._keys, records).items():
                pipe.hset(key, mapping=dict.fromkeys(fields, mark))
                pipe.pexpire(key, DELIVERY_TTL_S * 1000)
            await pipe.execute()
        except Exception as exc:
            # Retryable: the resend is answered "already exists" by Stripe, and then recorded.
            raise RetryableSinkError(f"cannot write the delivery record: {exc}") from exc


class RecordingStripeApi(StripeApi):
    """A :class:`StripeApi` that keeps the delivery record around every request that carries records."""

    def __init__(self, settings: Settings, log: DeliveryLog, **kwargs: Any) -> None:
        super().__init__(settings, **kwargs)
        self.log = log

    async def open(self) -> None:
        await super().open()
        await self.log.start()

    async def _recorded(self, records: Sequence[AcceptedRecord], send: Any) -> None:
        await self.log.attempting(records)
        try:
            await send()
        except StripeRejectedError as exc:
            await self.log.finished(records, accepted=is_already_exists(exc))
            raise
        await self.log.finished(records, accepted=True)

    async def send_v1_event(self, record: AcceptedRecord) -> None:
        await self._recorded([record], lambda: super(RecordingStripeApi, self).send_v1_event(record))

    async def send_v1_cancel(self, record: AcceptedRecord) -> None:
        await self._recorded([record], lambda: super(RecordingStripeApi, self).send_v1_cancel(record))

    async def send_v2_cancel(self, record: AcceptedRecord) -> None:
        await self._recorded([record], lambda: super(RecordingStripeApi, self).send_v2_cancel(record))

    async def send_stream(self, records: Sequence[AcceptedRecord]) -> None:
        await self._recorded(records, lambda: super(RecordingStripeApi, self).send_stream(records))


@dataclass(frozen=True)
class DeliveryStatus:
    """What the record says about one accepted record."""

    state: str  # "delivered" | "attempted" | "refused" | "never" | "unknown"
    at_ms: int | None = None


def lookup_statuses(client: Any, keys: Keys, records: Sequence[AcceptedRecord]) -> list[DeliveryStatus]:
    """The status of each record (sync client; one pipelined HMGET per key)."""
    raw_since = client.get(keys.delivery_since)
    since = int(raw_since) if raw_since is not None else None
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(record_key(keys, record), []).append(i)
    pipe = client.pipeline(transaction=False)
    order = list(groups.items())
    for key, idxs in order:
        pipe.hmget(key, [record_field(records[i]) for i in idxs])
    out: list[DeliveryStatus] = [DeliveryStatus("unknown")] * len(records)
    for (_, idxs), values in zip(order, pipe.execute() if order else [], strict=True):
        for i, raw in zip(idxs, values, strict=True):
            out[i] = _status(raw, since, received_ms_of(records[i]))
    return out


def _status(raw: Any, since: int | None, received_ms: int) -> DeliveryStatus:
    if raw is None:
        proven = since is not None and received_ms >= since
        return DeliveryStatus("never" if proven else "unknown")
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    state = {"a": "attempted", "d": "delivered", "r": "refused"}.get(text[:1], "unknown")
    return DeliveryStatus(state, int(text[1:]) if text[1:].isdigit() else None)
