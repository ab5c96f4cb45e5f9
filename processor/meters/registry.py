"""The meter registry: the compacted ``meters`` topic is the source of truth, Redis mirrors it for readers.

Write path (every change)::

    take the registry lock  ──►  (create only) reserve event_name with HSETNX  ──►  produce + wait for ack
        ──►  HSET <prefix>:meters id → json  (and <prefix>:meter-names event_name → id)  ──►  release

- Kafka first: the mirror only ever shows what the broker acknowledged, so a crash at any instant leaves
  the mirror behind the topic, never ahead of it, and :meth:`MeterRegistry.sync` catches it up.
- One event_name, one meter, even when two clients create at once: the name is claimed with ``HSETNX`` on
  the reverse index before anything is produced; the loser gets :class:`MeterConflictError`. A failed
  produce releases the claim; a crash leaves it (value ``pending:<id>``) and ``sync`` removes it.
- The lock (``SET NX PX``, released only by its owner) serialises writers, so records reach the mirror in
  the order they reach the topic (two concurrent renames cannot leave Redis showing the older name).
  It expires after ``LOCK_TTL_MS`` if a writer dies, and the producer gives up long before that.
- No multi-key transaction: the keys live in different Redis Cluster slots, so each step is a single-key
  command and the order above keeps every intermediate state safe for readers.
"""

from __future__ import annotations

import builtins
import logging
import secrets
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar, cast

import redis

from processor.config import Settings
from processor.errors import MeterConflictError, MeterNotFoundError, StateError
from processor.logs import mask_secrets
from processor.meters.listing import paginate
from processor.meters.log import read_meters_topic
from processor.meters.model import Meter
from processor.meters.topic import DELIVERY_TIMEOUT_S, MeterTopicWriter
from processor.meters.validation import validate_create_params, validate_update_params
from processor.state.connect import SyncRedis, sync_redis
from processor.state.keys import Keys

__all__ = ["LOCK_TTL_MS", "RESERVATION_PREFIX", "MeterRegistry", "SyncReport", "new_meter_id", "read_meters_topic"]

log = logging.getLogger(__name__)

#: A writer holds the lock for one produce (≤ 20 s) or one topic read (≤ 30 s) at most.
LOCK_TTL_MS = 60_000
LOCK_WAIT_S = 70.0
#: Value of a meter-names entry whose create has not finished (or was interrupted): ``pending:<meter id>``.
RESERVATION_PREFIX = "pending:"
_ID_ALPHABET = string.ascii_letters + string.digits
_RELEASE_LOCK = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
_RELEASE_NAME = (
    "if redis.call('hget', KEYS[1], ARGV[1]) == ARGV[2] then return redis.call('hdel', KEYS[1], ARGV[1]) end return 0"
)

P = ParamSpec("P")
R = TypeVar("R")


def new_meter_id() -> str:
    """``mtr_`` + 24 random letters and digits (143 bits: collisions are not a practical concern)."""
    return "mtr_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _translate_redis(method: Callable[Concatenate[MeterRegistry, P], R]) -> Callable[Concatenate[MeterRegistry, P], R]:
    """Redis failures leave the registry as :class:`StateError` (message masked: URLs may hold passwords)."""

    def wrapper(self: MeterRegistry, /, *args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(self, *args, **kwargs)
        except redis.RedisError as exc:
            raise StateError(mask_secrets(f"meter registry: Redis failed: {exc}")) from exc

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


@dataclass
class SyncReport:
    """What :meth:`MeterRegistry.sync` found and repaired."""

    meters: int = 0
    updated: list[str] = field(default_factory=list)  # mirror entries written (new or changed)
    restored: list[str] = field(default_factory=list)  # in the mirror but not on the topic: re-produced
    removed: list[str] = field(default_factory=list)  # mirror entries not on the topic, dropped (prune)
    released: list[str] = field(default_factory=list)  # event_names whose interrupted reservation was freed
    conflicts: list[str] = field(default_factory=list)  # meters whose event_name an older meter owns

    def lines(self) -> list[str]:
        out = [f"meters on the topic: {self.meters}"]
        for label, items in (
            ("mirror entries written", self.updated),
            ("restored to the topic from the mirror", self.restored),
            ("removed from the mirror (not on the topic)", self.removed),
            ("interrupted reservations released", self.released),
            ("event_name conflicts (older meter keeps the name)", self.conflicts),
        ):
            if items:
                out.append(f"{label}: {', '.join(items)}")
        return out


class MeterRegistry:
    """Create, read and change meters. Thread-safe; connects lazily (the constructor does no I/O)."""

    def __init__(self, settings: Settings, *, delivery_timeout: float = DELIVERY_TIMEOUT_S) -> None:
        if not 0 < delivery_timeout <= DELIVERY_TIMEOUT_S:
            raise ValueError(f"delivery_timeout must be in (0, {DELIVERY_TIMEOUT_S}] to stay within the lock TTL")
        self._settings = settings
        self._keys = Keys(settings.redis_prefix)
        self._writer = MeterTopicWriter(settings, delivery_timeout)
        self._client: SyncRedis | None = None
        self._init_lock = threading.Lock()

    # ---- connections ------------------------------------------------------------------------------
    @property
    def _redis(self) -> SyncRedis:
        with self._init_lock:
            if self._client is None:
                self._client = sync_redis(self._settings, decode_responses=True)
            return self._client

    def close(self) -> None:
        with self._init_lock:
            self._writer.close()
            if self._client is not None:
                self._client.close()
                self._client = None

    def __enter__(self) -> MeterRegistry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _locked(self) -> Iterator[None]:
        client, key, token = self._redis, self._keys.meters_lock, uuid.uuid4().hex
        deadline = time.monotonic() + LOCK_WAIT_S
        while not client.set(key, token, nx=True, px=LOCK_TTL_MS):
            if time.monotonic() > deadline:
                raise StateError(f"meter registry: another writer has held {key} for over {LOCK_WAIT_S:.0f} s")
            time.sleep(0.02)
        try:
            yield
        finally:
            client.eval(_RELEASE_LOCK, 1, key, token)

    # ---- reads ------------------------------------------------------------------------------------
    def _parse(self, raw: str) -> Meter:
        try:
            return Meter.from_json(raw)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StateError(
                f"{self._keys.meters} holds a malformed meter ({exc}); run `meterstream meters sync`"
            ) from exc

    @_translate_redis
    def get(self, meter_id: str) -> Meter:
        """The meter with this id, or :class:`MeterNotFoundError`."""
        raw = cast(str | None, self._redis.hget(self._keys.meters, meter_id))
        if raw is None:
            raise MeterNotFoundError(meter_id)
        return self._parse(raw)

    @_translate_redis
    def all(self) -> builtins.list[Meter]:
        """Every meter in the mirror (any order)."""
        return [self._parse(raw) for raw in cast(list[str], self._redis.hvals(self._keys.meters))]

    def list(
        self,
        status: str | None = None,
        limit: int = 10,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> tuple[builtins.list[Meter], bool]:
        """One page of meters, newest first, and ``has_more`` (Stripe's list semantics, see listing.py)."""
        return paginate(
            self.all(), status=status, limit=limit, starting_after=starting_after, ending_before=ending_before
        )

    @_translate_redis
    def find_by_event_name(self, event_name: str) -> Meter | None:
        """The meter that owns ``event_name`` (active or inactive), or ``None``."""
        owner = cast(str | None, self._redis.hget(self._keys.meter_names, event_name))
        if owner is None or owner.startswith(RESERVATION_PREFIX):
            return None
        raw = cast(str | None, self._redis.hget(self._keys.meters, owner))
        if raw is None:
            return None
        meter = self._parse(raw)
        return meter if meter.event_name == event_name else None

    # ---- writes -----------------------------------------------------------------------------------
    @_translate_redis
    def create(self, params: Mapping[str, Any]) -> Meter:
        """Validate Stripe create params, claim the event_name, publish the meter, mirror it."""
        normalized = validate_create_params(params)
        event_name = normalized["event_name"]
        client = self._redis
        with self._locked():
            self._sync_if_mirror_empty()
            now_ms = time.time_ns() // 1_000_000
            meter = Meter.from_create_params(new_meter_id(), normalized, now_ms // 1000, at_ms=now_ms)
            reservation = RESERVATION_PREFIX + meter.id
            if not client.hsetnx(self._keys.meter_names, event_name, reservation):
                raise self._conflict(event_name)
            try:
                self._writer.write(meter, now_ms)
            except BaseException:
                client.eval(_RELEASE_NAME, 1, self._keys.meter_names, event_name, reservation)
                raise
            self._mirror(meter)
            client.hset(self._keys.meter_names, event_name, meter.id)
        log.info("created meter %s for event_name %r", meter.id, event_name)
        return meter

    def _conflict(self, event_name: str) -> MeterConflictError:
        holder = cast(str | None, self._redis.hget(self._keys.meter_names, event_name)) or "?"
        if holder.startswith(RESERVATION_PREFIX):
            detail = (
                "has an unfinished create (interrupted, or still running); "
                "`meterstream meters sync` releases an interrupted one"
            )
        else:
            detail = f"already exists ({holder}); an event_name belongs to one meter, active or inactive"
        return MeterConflictError(
            f"A meter with event_name '{event_name}' {detail}.", param="event_name", code="resource_already_exists"
        )

    def _mirror(self, meter: Meter) -> None:
        self._redis.hset(self._keys.meters, meter.id, meter.to_json())

    @_translate_redis
    def _change(self, meter_id: str, change: Callable[[Meter, int], Meter]) -> Meter:
        """Apply ``change(meter, now_ms)`` to the current meter under the lock; no record when nothing
        changes. The record is effective from ``now_ms``, the time a status change enters the history."""
        with self._locked():
            current = self.get(meter_id)
            now_ms = time.time_ns() // 1_000_000
            new = change(current, now_ms)
            if new == current:
                return current
            self._writer.write(new, now_ms)
            self._mirror(new)
        return new

    def update(self, meter_id: str, params: Mapping[str, Any]) -> Meter:
        """Stripe's update: only ``display_name`` may change (anything else is refused by name)."""
        changes = validate_update_params(params)
        if "display_name" not in changes:
            return self.get(meter_id)
        return self.rename(meter_id, changes["display_name"])

    def rename(self, meter_id: str, display_name: str) -> Meter:
        name = validate_update_params({"display_name": display_name})["display_name"]
        return self._change(meter_id, lambda m, ms: m if m.display_name == name else m.renamed(name, ms // 1000))

    def deactivate(self, meter_id: str) -> Meter:
        """Stop accepting events for the meter (already inactive: returned unchanged)."""
        return self._change(meter_id, lambda m, ms: m.deactivated(ms // 1000, at_ms=ms) if m.active else m)

    def reactivate(self, meter_id: str) -> Meter:
        """Accept events again (already active: returned unchanged)."""
        return self._change(meter_id, lambda m, ms: m if m.active else m.reactivated(ms // 1000, at_ms=ms))

    # ---- sync -------------------------------------------------------------------------------------
    @_translate_redis
    def sync(self, *, prune: bool = False, timeout: float = 30.0) -> SyncReport:
        """Rebuild the Redis mirror from the topic and repair what a crash or a lost store left behind.

        - meters on the topic are written to the mirror where missing or different;
        - reservations with no meter on the topic (a create interrupted before Kafka acknowledged) are
          released;
        - a meter in the mirror but not on the topic can only mean the topic lost it (the mirror is only
          written after an acknowledgement, e.g. an ephemeral broker restarted): it is produced again,
          or with ``prune`` dropped from the mirror instead.
        """
        with self._locked():
            return self._sync_locked(prune=prune, timeout=timeout)

    def _sync_if_mirror_empty(self) -> None:
        """Before a create on an empty mirror, read the topic: an empty mirror may be a wiped Redis in
        front of a topic that has meters, and claiming a name against it would duplicate one."""
        if not self._redis.exists(self._keys.meters, self._keys.meter_names):
            self._sync_locked(prune=False, timeout=30.0)

    def _sync_locked(self, *, prune: bool, timeout: float) -> SyncReport:
        client, keys = self._redis, self._keys
        on_topic = read_meters_topic(self._settings, timeout=timeout)
        mirror = cast(dict[str, str], client.hgetall(keys.meters))
        names = cast(dict[str, str], client.hgetall(keys.meter_names))
        report = SyncReport()

        missing = [meter_id for meter_id in mirror if meter_id not in on_topic]
        for meter_id in missing:
            try:
                meter = Meter.from_json(mirror[meter_id])
            except (ValueError, KeyError, TypeError, AttributeError):
                meter = None
            if prune or meter is None or meter.id != meter_id:
                report.removed.append(meter_id)
                continue
            self._writer.write(meter)
            on_topic[meter_id] = meter
            report.restored.append(meter_id)

        owners: dict[str, Meter] = {}
        for meter in on_topic.values():
            held = owners.get(meter.event_name)
            if held is None or (meter.created, meter.id) < (held.created, held.id):
                owners[meter.event_name] = meter
        report.conflicts = sorted(m.id for m in on_topic.values() if owners[m.event_name].id != m.id)
        for meter_id in report.conflicts:
            log.warning("meter %s shares its event_name with an older meter, which keeps it", meter_id)

        wanted = {meter_id: meter.to_json() for meter_id, meter in on_topic.items()}
        changed = {meter_id: text for meter_id, text in wanted.items() if mirror.get(meter_id) != text}
        if changed:
            client.hset(keys.meters, mapping=cast(Any, changed))
        if report.removed:
            client.hdel(keys.meters, *report.removed)
        wanted_names = {name: meter.id for name, meter in owners.items()}
        changed_names = {name: meter_id for name, meter_id in wanted_names.items() if names.get(name) != meter_id}
        if changed_names:
            client.hset(keys.meter_names, mapping=cast(Any, changed_names))
        stale = [name for name in names if name not in wanted_names]
        if stale:
            client.hdel(keys.meter_names, *stale)
        report.meters = len(on_topic)
        report.updated = sorted(changed)
        report.released = sorted(name for name in stale if names[name].startswith(RESERVATION_PREFIX))
        return report
