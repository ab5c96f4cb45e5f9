"""Which records go to Stripe next, in which request. Pure: no I/O, no clock.

The ordering rule comes from Stripe's billing: a pre-aggregated meter keeps the most recently *received*
event of a window, and a ``last`` meter breaks timestamp ties by receipt. So a customer's records must
reach Stripe in their Kafka order, and a cancellation only after the event it cancels was accepted. Two
rules give that, and everything else is free to run concurrently:

- **one request in flight per customer.** A customer's next record is only planned once the request
  carrying its previous one has finished (delivered or dead-lettered, retries included). A retried
  request can therefore never be overtaken by a later record of the same customer.
- **a request keeps each customer's records in Kafka order.** A v2 stream batch (``max_batch`` = 100)
  is filled with runs of consecutive events of several customers, round robin. Within a run, two events
  of the same *order-sensitive* meter (pre-aggregated, or ``last``) of that customer are never put in the
  same request: Stripe does not promise to apply a request's events in array order, so they go in
  consecutive requests. Events of order-free meters (raw ``sum``/``count``) may share a request.
- **a cancellation travels alone.** It is planned only when it is at the head of its customer's queue
  and the customer has nothing in flight, i.e. after the request holding its event was accepted.

Customers with a cancellation at the head are served first, then customers with events, each in the
order they became ready (round robin), so one busy customer cannot starve the others.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, Literal, TypeVar

__all__ = ["Planner", "QueuedItem", "Unit"]

T = TypeVar("T")


@dataclass(slots=True)
class QueuedItem(Generic[T]):
    """One record waiting for Stripe. ``order_key`` is set (to the meter id) when the meter is
    order-sensitive; ``partition`` lets a rebalance drop what another sink will now handle."""

    customer: str
    is_cancel: bool
    partition: tuple[str, int]
    order_key: str | None
    value: T


@dataclass(slots=True)
class Unit(Generic[T]):
    """One planned request: a batch of events (1 … max_batch), or a single cancellation."""

    kind: Literal["events", "cancel"]
    items: list[QueuedItem[T]]
    customers: list[str] = field(default_factory=list)


class Planner(Generic[T]):
    """Per-customer FIFO queues plus the set of customers with a request in flight."""

    def __init__(self, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.max_batch = max_batch
        self._queues: dict[str, deque[QueuedItem[T]]] = {}
        self._in_flight: set[str] = set()
        # Ready customers (queue non-empty, nothing in flight), split by the kind of their head record.
        # Entries may go stale when a rebalance drops records; they are re-checked when popped.
        self._ready_cancels: deque[str] = deque()
        self._ready_events: deque[str] = deque()
        self._ready: set[str] = set()
        self.queued = 0
        self.in_flight_items = 0

    # ---- state ------------------------------------------------------------------------------------
    @property
    def idle(self) -> bool:
        """Nothing queued and nothing in flight."""
        return self.queued == 0 and self.in_flight_items == 0

    def has_ready(self) -> bool:
        """Whether :meth:`next_unit` could plan something now (may be a false positive after a drop)."""
        return bool(self._ready)

    def in_flight(self, customer: str) -> bool:
        return customer in self._in_flight

    # ---- changes ----------------------------------------------------------------------------------
    def add(self, item: QueuedItem[T]) -> None:
        """Queue a record behind the customer's earlier ones."""
        queue = self._queues.get(item.customer)
        if queue is None:
            queue = self._queues[item.customer] = deque()
        queue.append(item)
        self.queued += 1
        if len(queue) == 1 and item.customer not in self._in_flight:
            self._make_ready(item.customer)

    def next_unit(self) -> Unit[T] | None:
        """Plan the next request, or ``None`` when no customer is ready."""
        while self._ready_cancels:
            customer = self._ready_cancels.popleft()
            self._ready.discard(customer)
            queue = self._queues.get(customer)
            if not queue or customer in self._in_flight:
                continue
            if not queue[0].is_cancel:  # stale after a drop: its head is an event now
                self._make_ready(customer)
                continue
            item = queue.popleft()
            return self._launch("cancel", [item], [customer])

        batch: list[QueuedItem[T]] = []
        customers: list[str] = []
        deferred: list[str] = []
        while self._ready_events and len(batch) < self.max_batch:
            customer = self._ready_events.popleft()
            self._ready.discard(customer)
            queue = self._queues.get(customer)
            if not queue or customer in self._in_flight:
                continue
            if queue[0].is_cancel:  # stale: serve it as a cancellation
                deferred.append(customer)
                continue
            seen: set[str] = set()
            while queue and len(batch) < self.max_batch and not queue[0].is_cancel:
                key = queue[0].order_key
                if key is not None:
                    if key in seen:
                        break
                    seen.add(key)
                batch.append(queue.popleft())
            customers.append(customer)
        for customer in deferred:
            self._make_ready(customer)
        if not batch:
            return None
        return self._launch("events", batch, customers)

    def complete(self, unit: Unit[T]) -> None:
        """The request finished (every record delivered or dead-lettered): release its customers."""
        self.in_flight_items -= len(unit.items)
        for customer in unit.customers:
            self._in_flight.discard(customer)
            queue = self._queues.get(customer)
            if queue:
                self._make_ready(customer)
            elif queue is not None:
                del self._queues[customer]

    def drop(self, partitions: set[tuple[str, int]]) -> list[QueuedItem[T]]:
        """Remove the queued (not in-flight) records of ``partitions`` (revoked in a rebalance).

        In-flight requests stay in flight: their customers remain blocked until they finish, so a new
        owner's resend of the same customer cannot overtake them in this process.
        """
        dropped: list[QueuedItem[T]] = []
        for customer in list(self._queues):
            queue = self._queues[customer]
            if not any(item.partition in partitions for item in queue):
                continue
            kept = deque(item for item in queue if item.partition not in partitions)
            dropped.extend(item for item in queue if item.partition in partitions)
            if kept:
                self._queues[customer] = kept
            elif customer in self._in_flight:
                self._queues[customer] = kept
            else:
                del self._queues[customer]
        self.queued -= len(dropped)
        return dropped

    # ---- internals --------------------------------------------------------------------------------
    def _make_ready(self, customer: str) -> None:
        if customer in self._ready:
            return
        self._ready.add(customer)
        queue = self._queues[customer]
        (self._ready_cancels if queue[0].is_cancel else self._ready_events).append(customer)

    def _launch(self, kind: Literal["events", "cancel"], items: list[QueuedItem[T]], customers: list[str]) -> Unit[T]:
        self._in_flight.update(customers)
        self.queued -= len(items)
        self.in_flight_items += len(items)
        return Unit(kind, items, customers)
