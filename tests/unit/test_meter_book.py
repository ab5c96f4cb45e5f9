"""The meter book and the record's ``status_history``: the latest record alone judges every received time
exactly as the full log does (what log compaction needs), and records without the history still read."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest

from processor.meters.book import MeterBook
from processor.meters.model import Meter

T0 = 1_800_000_000_000


def _created(at_ms: int = T0) -> Meter:
    params = Meter("mtr_x", "X", "x", "sum").create_params()
    return Meter.from_create_params("mtr_h", {**params, "event_name": "h"}, at_ms // 1000, at_ms=at_ms)


def _states(book: MeterBook, name: str, times: list[int]) -> list[str | None]:
    found = [book.by_event_name(name, t) for t in times]
    return [None if m is None else m.status for m in found]


def test_the_record_carries_the_history_and_the_api_shape_does_not() -> None:
    meter = _created().deactivated(T0 // 1000 + 60, at_ms=T0 + 60_000).renamed("Y", T0 // 1000 + 90)
    record = json.loads(meter.to_json())
    assert record["status_history"] == [
        {"status": "active", "since_ms": T0},
        {"status": "inactive", "since_ms": T0 + 60_000},
    ]
    assert "status_history" not in meter.to_dict()  # Stripe's billing.meter, as the APIs answer it
    assert Meter.from_json(meter.to_json()) == meter
    old = {k: v for k, v in record.items() if k != "status_history"}  # written before the field existed
    assert Meter.from_dict(old).status_history == ()
    assert Meter.from_dict(old).deactivated(5).status_history == ()  # never a partial history
    with pytest.raises(ValueError):
        Meter.from_dict({**record, "status_history": [{"status": "gone", "since_ms": 1}]})
    with pytest.raises(ValueError):
        Meter.from_dict({**record, "status_history": list(reversed(record["status_history"]))})


def test_the_latest_record_alone_judges_like_the_full_log() -> None:
    rng = random.Random(7)
    for _ in range(200):
        meter, at = _created(), T0
        log = [(at, meter)]
        for _ in range(rng.randint(1, 6)):
            at += rng.randint(1, 5) * 1000
            change = rng.choice(["toggle", "toggle", "rename"])
            if change == "rename":
                meter = meter.renamed(f"n{at}", at // 1000)
            elif meter.active:
                meter = meter.deactivated(at // 1000, at_ms=at)
            else:
                meter = meter.reactivated(at // 1000, at_ms=at)
            log.append((at, meter))
        full, compacted = MeterBook(), MeterBook()
        for effective_ms, version in log:
            full.add(effective_ms, version)
        compacted.add(*log[-1])
        probes = sorted({t + d for t, _ in log for d in (-1, 0, 1)})
        assert _states(compacted, "h", probes) == _states(full, "h", probes)
        assert _states(full, "h", [T0 - 1]) == [None]


def test_a_deactivated_period_survives_compaction() -> None:
    paused = _created().deactivated(T0 // 1000 + 10, at_ms=T0 + 10_000)
    back = paused.reactivated(T0 // 1000 + 20, at_ms=T0 + 20_000)
    book = MeterBook()
    book.add(T0 + 20_000, back)
    assert _states(book, "h", [T0 - 1, T0, T0 + 9_999, T0 + 10_000, T0 + 19_999, T0 + 20_000]) == [
        None,
        "active",
        "active",
        "inactive",
        "inactive",
        "active",
    ]
    assert book.latest("mtr_h") == back


def test_old_records_keep_the_creation_repair() -> None:
    legacy = Meter("mtr_a", "A", "a", "sum", created=1000, updated=1000)
    book = MeterBook()
    book.add(3_000_000, legacy.deactivated(3000))  # only the deactivation is left
    first = book.by_event_name("a", 2_000_000)
    assert first is not None and first.active and first.updated == 1000
    assert _states(book, "a", [999_999, 3_000_000]) == [None, "inactive"]


def test_reading_a_record_twice_changes_nothing() -> None:
    meter = _created()
    once, twice = MeterBook(), MeterBook()
    once.add(T0, meter)
    for _ in range(2):
        twice.add(T0, meter)
        twice.add(T0 + 5, replace(meter, display_name="Z"))
    assert twice._by_id["mtr_h"].times == [T0, T0 + 5]
    assert _states(twice, "h", [T0 - 1, T0, T0 + 5]) == _states(once, "h", [T0 - 1, T0, T0 + 5])


def test_the_meter_schema_takes_both_record_formats() -> None:
    import jsonschema

    from topics import load_schema

    schema = load_schema("meters")
    meter = _created().deactivated(T0 // 1000 + 1, at_ms=T0 + 1000)
    jsonschema.validate(json.loads(meter.to_json()), schema)
    jsonschema.validate(meter.to_dict(), schema)  # written before status_history existed
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**json.loads(meter.to_json()), "status_history": [{"status": "on"}]}, schema)
