"""The ops reader: bounded by offsets and by timestamps (never trusting the broker's seek), and meter
history put back where compaction removed it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from processor.config import Settings
from processor.meters.book import MeterBook
from processor.meters.model import Meter
from processor.ops.reader import RangeRead
from tests.pipeline import producer
from topics import Topic, topic_name

BASE = 1_700_000_000_000


@pytest.mark.integration
def test_time_filter_stops_and_ends(settings: Settings) -> None:
    p = producer(settings)
    topic = topic_name(Topic.ERRORS, settings.topic_prefix)
    # out of timestamp order on purpose: a seek by time alone would miss records
    stamps = [BASE + 5000, BASE + 1000, BASE + 9000, BASE + 3000, BASE + 7000]
    for i, ts in enumerate(stamps):
        p.produce(topic, value=str(i).encode(), partition=0, timestamp=ts)
    p.produce(topic, value=b"other", partition=1, timestamp=BASE)
    assert p.flush(30) == 0

    read = RangeRead(settings, ["meter-event-errors"], since_ms=BASE + 2000, until_ms=BASE + 8000)
    kept = [m.value() for batch in read.messages() for m in batch]
    assert sorted(kept) == [b"0", b"3", b"4"]
    assert read.ends == {"meter-event-errors/0": 5, "meter-event-errors/1": 1, "meter-event-errors/2": 0}

    totals: list[int | None] = []
    bounded = RangeRead(
        settings,
        ["meter-event-errors"],
        stops={"meter-event-errors/0": 2, "meter-event-errors/1": 0, "meter-event-errors/2": 0},
        on_total=totals.append,
    )
    assert [m.value() for batch in bounded.messages() for m in batch] == [b"0", b"1"]
    assert bounded.ends["meter-event-errors/0"] == 2 and totals == [2]

    rest = RangeRead(settings, ["meter-event-errors"], starts={"meter-event-errors/0": 2})
    assert [m.value() for batch in rest.messages() for m in batch if m.partition() == 0] == [b"2", b"3", b"4"]


def test_the_meter_book_restores_compacted_versions() -> None:
    created = Meter("mtr_a", "A", "a", "sum", created=1000, updated=1000)
    renamed = replace(created, display_name="A2", updated=2000)
    # uncompacted: the creation record is there, nothing is added
    book = MeterBook()
    book.add(1_000_000, created)
    book.add(2_000_000, renamed)
    assert book.by_event_name("a", 999_999) is None
    assert book.by_event_name("a", 1_500_000) == created and book.by_event_name("a", 2_000_000) == renamed
    # compacted: only the rename is left; the meter existed (active) from its creation
    compacted = MeterBook()
    compacted.add(2_000_000, renamed)
    assert compacted.by_event_name("a", 999_999) is None
    restored = compacted.by_event_name("a", 1_000_000)
    assert restored is not None and restored.active and restored.updated == 1000
    assert compacted.by_event_name("a", 2_000_000) == renamed
    # only the deactivation is left: active from creation until the deactivation
    deactivated = renamed.deactivated(3000)
    gone = MeterBook()
    gone.add(3_000_000, deactivated)
    first = gone.by_event_name("a", 2_500_000)
    assert first is not None and first.active and first.updated == 1000
    assert gone.by_event_name("a", 3_000_000) == deactivated and gone.latest("mtr_a") == deactivated
