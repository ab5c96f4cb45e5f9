"""The ordering planner: per-customer Kafka order, one request in flight per customer, cancellations alone
and only after their event's request finished, order-sensitive meters never twice in one batch."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from processor.sink.planner import Planner, QueuedItem, Unit


def _item(
    customer: str, seq: int, *, cancel: bool = False, key: str | None = None, partition: int = 0
) -> QueuedItem[int]:
    return QueuedItem(customer=customer, is_cancel=cancel, partition=("t", partition), order_key=key, value=seq)


def test_batches_runs_of_several_customers_round_robin() -> None:
    planner: Planner[int] = Planner(max_batch=5)
    for seq in range(3):
        planner.add(_item("a", seq))
    for seq in range(3, 6):
        planner.add(_item("b", seq))
    unit = planner.next_unit()
    assert unit is not None and unit.kind == "events"
    assert [i.value for i in unit.items] == [0, 1, 2, 3, 4]
    assert unit.customers == ["a", "b"]
    # b still has record 5, but b is in flight: nothing may be planned until the batch finishes.
    assert planner.next_unit() is None
    planner.complete(unit)
    unit2 = planner.next_unit()
    assert unit2 is not None and [i.value for i in unit2.items] == [5]


def test_cancellation_waits_for_the_batch_holding_its_event() -> None:
    planner: Planner[int] = Planner(max_batch=100)
    planner.add(_item("a", 0))
    planner.add(_item("a", 1, cancel=True))
    planner.add(_item("a", 2))
    first = planner.next_unit()
    assert first is not None and [i.value for i in first.items] == [0]  # the run stops at the cancellation
    assert planner.next_unit() is None
    planner.complete(first)
    cancel = planner.next_unit()
    assert cancel is not None and cancel.kind == "cancel" and [i.value for i in cancel.items] == [1]
    assert planner.next_unit() is None
    planner.complete(cancel)
    last = planner.next_unit()
    assert last is not None and [i.value for i in last.items] == [2]


def test_order_sensitive_meter_appears_once_per_customer_per_batch() -> None:
    planner: Planner[int] = Planner(max_batch=100)
    planner.add(_item("a", 0, key="mtr_window"))
    planner.add(_item("a", 1, key=None))
    planner.add(_item("a", 2, key="mtr_window"))
    planner.add(_item("b", 3, key="mtr_window"))
    unit = planner.next_unit()
    assert unit is not None
    assert [i.value for i in unit.items] == [0, 1, 3]  # a's second window event waits for the next request


def test_v1_mode_plans_one_record_per_request() -> None:
    planner: Planner[int] = Planner(max_batch=1)
    for seq, customer in enumerate("aab"):
        planner.add(_item(customer, seq))
    units = [planner.next_unit(), planner.next_unit(), planner.next_unit()]
    assert [u.items[0].value if u else None for u in units] == [0, 2, None]


def test_drop_forgets_queued_records_of_revoked_partitions_but_keeps_in_flight_blocking() -> None:
    planner: Planner[int] = Planner(max_batch=1)
    planner.add(_item("a", 0, partition=1))
    planner.add(_item("a", 1, partition=1))
    planner.add(_item("b", 2, partition=2))
    in_flight = planner.next_unit()
    assert in_flight is not None and in_flight.items[0].value == 0
    dropped = planner.drop({("t", 1)})
    assert [i.value for i in dropped] == [1]
    assert planner.queued == 1
    planner.add(_item("a", 5, partition=1))  # the same customer again (a new owner's generation)
    nxt = planner.next_unit()
    assert nxt is not None and nxt.items[0].value == 2  # a is still blocked by its in-flight request
    planner.complete(in_flight)
    planner.complete(nxt)
    last = planner.next_unit()
    assert last is not None and last.items[0].value == 5
    planner.complete(last)
    assert planner.idle


def test_rejects_zero_batch() -> None:
    with pytest.raises(ValueError):
        Planner(0)


records = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "d", "e"]),  # customer
        st.booleans(),  # cancellation?
        st.sampled_from([None, "m1", "m2"]),  # order key
    ),
    max_size=120,
)


@settings(max_examples=150, deadline=None)
@given(records=records, max_batch=st.integers(min_value=1, max_value=7), seed=st.integers())
def test_random_schedules_keep_every_rule(
    records: list[tuple[str, bool, str | None]], max_batch: int, seed: int
) -> None:
    """Records arrive interleaved with planning; requests finish in random order. Then every record is
    sent exactly once, each customer's in Kafka order, never two requests of a customer at once."""
    rng = random.Random(seed)
    planner: Planner[int] = Planner(max_batch)
    in_flight: list[Unit[int]] = []
    sent: dict[str, list[int]] = {}
    expected: dict[str, list[int]] = {}
    pending = list(enumerate(records))

    def check_and_launch(unit: Unit[int]) -> None:
        assert 1 <= len(unit.items) <= max_batch
        if unit.kind == "cancel":
            assert len(unit.items) == 1 and unit.items[0].is_cancel
        else:
            assert not any(i.is_cancel for i in unit.items)
        busy = {c for u in in_flight for c in u.customers}
        assert not busy & set(unit.customers)
        assert set(unit.customers) == {i.customer for i in unit.items}
        seen_keys = set()
        for item in unit.items:
            if item.order_key is not None:
                assert (item.customer, item.order_key) not in seen_keys
                seen_keys.add((item.customer, item.order_key))
            sent.setdefault(item.customer, []).append(item.value)
        in_flight.append(unit)

    while pending or in_flight or not planner.idle:
        action = rng.random()
        if pending and action < 0.5:
            seq, (customer, cancel, key) = pending.pop(0)
            planner.add(_item(customer, seq, cancel=cancel, key=None if cancel else key))
            expected.setdefault(customer, []).append(seq)
        elif in_flight and action < 0.75:
            planner.complete(in_flight.pop(rng.randrange(len(in_flight))))
        else:
            unit = planner.next_unit()
            if unit is not None:
                check_and_launch(unit)
            elif in_flight:
                planner.complete(in_flight.pop(rng.randrange(len(in_flight))))
            elif not pending:
                assert planner.idle
    assert sent == expected
