"""The one ``meters`` reader against a real broker: caught up means every record acknowledged before the
read began, whatever ListOffsets answers (Tansu's is a lower bound); following picks up new records
without waiting when nothing is new; a missing topic is a clear error."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from processor.config import Settings
from processor.errors import TopicError
from processor.meters.log import MetersLog
from processor.meters.model import Meter
from tests.pipeline import producer
from topics import Topic, topic_name

pytestmark = pytest.mark.integration


def _meter(i: int) -> Meter:
    return Meter(f"mtr_{i:03d}", f"M{i}", f"m{i}", "sum", created=1, updated=1)


def _put(settings: Settings, meters: list[Meter], flush_each: bool = False) -> None:
    p = producer(settings)
    for m in meters:
        p.produce(topic_name(Topic.METERS, settings.topic_prefix), key=m.id, value=m.to_json())
        if flush_each:
            assert p.flush(30) == 0
    assert p.flush(30) == 0


def test_catch_up_reads_every_acknowledged_record(settings: Settings) -> None:
    # One record alone, then 29 in one batch: Tansu's ListOffsets then answers 2 (the last batch's base
    # offset + 1) for a partition ending at 30; the rule must not stop there.
    _put(settings, [_meter(0)], flush_each=True)
    _put(settings, [_meter(i) for i in range(1, 30)])
    with MetersLog(settings) as meters:
        assert meters.catch_up(30) == 30
        assert list(meters.latest) == [f"mtr_{i:03d}" for i in range(30)]
        assert meters.caught_up() and len(meters.book) == 30


def test_an_empty_topic_is_caught_up_at_once(settings: Settings) -> None:
    with MetersLog(settings) as meters:
        assert meters.catch_up(30) == 0 and meters.caught_up() and meters.latest == {}


def test_follow_takes_new_records_and_returns_at_once_when_idle(settings: Settings) -> None:
    _put(settings, [_meter(0)])
    with MetersLog(settings) as meters:
        meters.catch_up(30)
        assert meters.follow(wait=5) == 0  # idle: nothing to wait for
        renamed = _meter(0).renamed("renamed", 2)
        _put(settings, [renamed, _meter(1)])
        deadline = time.monotonic() + 30
        while len(meters.latest) < 2 or meters.latest["mtr_000"] != renamed:
            assert time.monotonic() < deadline, meters.latest
            meters.follow(wait=1)
        assert meters.caught_up()
        assert meters.book.by_event_name("m0", 10**15) == renamed


def test_a_missing_topic_is_an_error(settings_factory: Callable[..., Settings]) -> None:
    bare = settings_factory(ensure=False, METERSTREAM_TOPIC_PREFIX="no-such-prefix.")
    with MetersLog(bare) as meters, pytest.raises(TopicError, match="does not exist"):
        meters.catch_up(15)
