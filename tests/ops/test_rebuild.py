"""``meterstream rebuild`` against the real broker, Redis and processor: exact aggregates after losses,
a diff that finds damage, a swap that is safe while the processor runs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis

from processor.config import Settings
from processor.ops.rebuild import Rebuild, cleanup_shadows
from processor.state.keys import Keys
from processor.windows import day_start
from tests.helpers import wait_until
from tests.ops.helpers import cli, delete_keys, live_processor, progress_lines, run_processor
from tests.pipeline import (
    event_value,
    make_workload,
    put_records,
    put_workload,
    read_all,
    reference_state,
    snapshot_diff,
    stored_progress,
    usage_snapshot,
)
from topics import Topic

pytestmark = pytest.mark.integration


@pytest.fixture
def span(now: int) -> tuple[int, int]:
    """The range the rebuilds cover: the workload's days (``make_workload``) and a day ahead."""
    return now - 10 * 86_400, now + 86_400


def _internal(client: redis.Redis, prefix: str) -> dict[str, str]:
    """Window state (best keys) under a prefix: part of what a rebuild must restore."""
    out = {}
    for key in client.scan_iter(match=f"{prefix}:best:*", count=1000):
        out[key[len(prefix) :]] = client.get(key) or ""
    return out


def test_redis_lost_then_rebuilt_gives_exact_aggregates(
    settings: Settings, redis_client: redis.Redis, now: int, span: tuple[int, int]
) -> None:
    w = make_workload(3000, seed=11)
    put_workload(settings, w, partitions=3)
    run_processor(settings)
    before = usage_snapshot(redis_client, settings.redis_prefix)
    best_before = _internal(redis_client, settings.redis_prefix)
    emitted = len(read_all(settings, [Topic.ACCEPTED], 3, idle=1.0))
    assert len(before) > 100

    assert delete_keys(redis_client, f"{settings.redis_prefix}:*") > 0  # everything: aggregates, claims, progress
    assert usage_snapshot(redis_client, settings.redis_prefix) == {}

    result = cli(settings, "rebuild", "--from", str(span[0]), "--to", str(span[1]), "--swap", "--set-progress")
    assert result.exit_code == 0, result.output
    assert "swapped" in result.output and "progress for 6 partition(s)" in result.output
    after = usage_snapshot(redis_client, settings.redis_prefix)
    assert snapshot_diff(before, after) == []
    assert after == before
    assert _internal(redis_client, settings.redis_prefix) == best_before
    # the shadow is gone
    assert list(redis_client.scan_iter(match=f"{settings.redis_prefix}-rebuild-*", count=1000)) == []

    # the processor resumes where it was (nothing re-emitted to the sink); new records, duplicates of
    # old identifiers among them, are judged with the restored claims: exactly the perfect run's state
    late = now * 1000
    fresh = [(f"cus_{i}", event_value("w_sum", f"cus_{i}", i + 1, f"late-{i}", now - 60), late) for i in range(50)]
    put_records(settings, [(key, value, late) for key, value, _r in w.events[-200:]] + fresh)
    run_processor(settings)
    ref = settings.redis_prefix + "ref"
    accepted = reference_state(settings, ref, partitions=3)
    assert snapshot_diff(usage_snapshot(redis_client, ref), usage_snapshot(redis_client, settings.redis_prefix)) == []
    records = read_all(settings, [Topic.ACCEPTED], 3, idle=1.0)
    assert len(records) == emitted + 50  # the fresh events; the duplicates were dropped
    assert len(records) == len(accepted)  # and nothing emitted twice


def test_diff_finds_damage_and_swap_repairs_it(
    settings: Settings, redis_client: redis.Redis, span: tuple[int, int]
) -> None:
    put_workload(settings, make_workload(2000, seed=12), partitions=3)
    run_processor(settings)
    good = usage_snapshot(redis_client, settings.redis_prefix)

    clean = cli(settings, "rebuild", "--from", str(span[0]), "--to", str(span[1]), "--diff")
    assert clean.exit_code == 0, clean.output
    assert "0 pair(s) differ" in clean.output
    # without a terminal the progress is plain lines with a total, ending at every record read
    steps = progress_lines(clean.stderr, "reading the topics")
    records = int(clean.stdout.split(" from ", 1)[1].split()[0])
    assert steps[0] == (0, steps[0][1]) and steps[-1][0] == steps[-1][1] >= records > 0

    hour_key = next(iter(redis_client.scan_iter(match=f"{settings.redis_prefix}:usage:{{mtr_wsum:*}}:hour")))
    field = next(iter(redis_client.hkeys(hour_key)))
    redis_client.hset(hour_key, field, "999999")  # corrupt one bucket
    redis_client.hset(hour_key, "3600", "5")  # a bucket outside the range: not the rebuild's business
    day_key = hour_key[: -len(":hour")] + ":day"
    redis_client.delete(day_key)  # lose a whole hash

    dirty = cli(settings, "rebuild", "--from", str(span[0]), "--to", str(span[1]), "--diff")
    assert dirty.exit_code == 1, dirty.output
    assert "999999" in dirty.output and "1 pair(s) differ" in dirty.output

    fixed = cli(settings, "rebuild", "--from", str(span[0]), "--to", str(span[1]), "--swap", "--meter", "w_sum")
    assert fixed.exit_code == 0, fixed.output
    after = usage_snapshot(redis_client, settings.redis_prefix)
    customer_key = hour_key[len(settings.redis_prefix) :]
    assert after[customer_key].pop("3600") == "5"  # outside the range: untouched
    assert after == good


def test_time_bounded_rebuild_only_touches_its_days(settings: Settings, redis_client: redis.Redis, now: int) -> None:
    put_workload(settings, make_workload(1500, seed=13), partitions=3)
    run_processor(settings)
    good = usage_snapshot(redis_client, settings.redis_prefix)
    day = day_start(now) - 86_400  # yesterday
    for key in redis_client.scan_iter(match=f"{settings.redis_prefix}:usage:*:day"):
        redis_client.hdel(key, str(day), str(day - 86_400))
    damaged = usage_snapshot(redis_client, settings.redis_prefix)
    with Rebuild(settings, day, day + 3600) as rb:
        rb.build()
        report = rb.swap()
    assert (report.start, report.end) == (day, day + 86_400)  # widened to the whole UTC day
    after = usage_snapshot(redis_client, settings.redis_prefix)
    diff = snapshot_diff(good, after, limit=10_000)
    assert diff and all(f" {day - 86_400}:" in line for line in diff)  # only the day before stays damaged
    assert snapshot_diff(damaged, after) != []


def test_swap_while_the_processor_runs_is_exact(
    settings: Settings, redis_client: redis.Redis, span: tuple[int, int]
) -> None:
    """The live processor keeps applying new records during the rebuild; aggregates end exactly as a
    perfect run over every record gives them."""
    w = make_workload(4000, seed=14)
    half = len(w.events) // 2
    first = type(w)(w.meters, w.events[:half], [c for c in w.cancels if c[2] <= w.events[half][2]])
    put_workload(settings, first, partitions=3)
    total = len(w.events) + len(w.cancels)

    def applied(n: int) -> Callable[[], bool]:  # the live processor stored progress past n records
        return lambda: stored_progress(redis_client, settings) >= n

    with live_processor(settings):
        wait_until(applied(len(first.events) + len(first.cancels)), "the first half applied")
        delete_keys(redis_client, f"{settings.redis_prefix}:usage:*")  # aggregates damaged, rest intact

        def more(_n: int) -> None:  # while the rebuild reads, the producers keep going
            if not sent:
                sent.append(True)
                put_records(settings, w.events[half:], [c for c in w.cancels if c[2] > w.events[half][2]])

        sent: list[bool] = []
        with Rebuild(settings, *span, on_consumed=more) as rb:
            rb.build()
            # the live processor applies the records produced during the build, after the rebuild's cut-off
            wait_until(applied(total), "every record applied by the live processor")
            report = rb.swap()
        assert report.rounds >= 1  # the race happened: pairs had moved on and the shadow caught up
        wait_until(applied(total), "every record applied by the live processor")
    ref = settings.redis_prefix + "ref"
    reference_state(settings, ref, partitions=3)
    assert snapshot_diff(usage_snapshot(redis_client, ref), usage_snapshot(redis_client, settings.redis_prefix)) == []


def test_cleanup_removes_abandoned_shadows(settings: Settings, redis_client: redis.Redis) -> None:
    shadow = Keys(settings.redis_prefix).rebuild_prefix("crashed")
    redis_client.hset(f"{shadow}:usage:{{m:c}}:hour", "0", "1")
    redis_client.set(f"{settings.redis_prefix}:keep", "1")
    assert cleanup_shadows(redis_client, settings.redis_prefix, all_runs=True) == 1
    assert redis_client.get(f"{settings.redis_prefix}:keep") == "1"
    result = cli(settings, "rebuild", "--cleanup")
    assert result.exit_code == 0 and "deleted 0 key(s)" in result.output
