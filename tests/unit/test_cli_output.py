"""Pure pieces of the CLI's output: relative ranges (``--last``), the progress lines without a terminal,
the ``export`` lines of ``up``, the usage table, and the guard against an emulator key going to Stripe."""

from __future__ import annotations

import io
import shlex
import sys
from collections import Counter

import click
import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.cli.timerange import UNITS, resolve_range
from processor.cli.up_exports import export_lines
from processor.cli.usage import usage_table
from processor.config import ConfigError, Secret, Settings, load_settings
from processor.logs import activity_report
from processor.meters.model import Meter
from processor.ops.console import Progress
from processor.state.summaries import Summary

DAY = 86_400


@given(
    now=st.integers(min_value=0, max_value=4_000_000_000),
    n=st.integers(min_value=1, max_value=500),
    unit=st.sampled_from(sorted(UNITS)),
    align=st.sampled_from([60, 3600, DAY]),
)
def test_last_covers_now_and_the_span_on_boundaries(now: int, n: int, unit: str, align: int) -> None:
    lo, hi = resolve_range(None, None, f"{n}{unit}", align=align, now=now)
    assert lo is not None and hi is not None
    assert lo % align == 0 and hi % align == 0  # what Stripe's summaries and the grouping demand
    assert lo <= now - n * UNITS[unit] + align and now < hi <= now + align  # the current unit included
    assert hi - lo >= n * UNITS[unit] and hi - lo < n * UNITS[unit] + align


def test_last_days_are_calendar_days_ending_today() -> None:
    now = 1_796_600_000  # 2026-12-06T...
    lo, hi = resolve_range(None, None, "7d", align=DAY, now=now)
    assert hi == now - now % DAY + DAY and lo == hi - 7 * DAY


@pytest.mark.parametrize("bad", ["7", "0d", "7y", "-1d", "d"])
def test_last_refuses_what_is_not_a_duration(bad: str) -> None:
    with pytest.raises(click.BadParameter, match="not a duration"):
        resolve_range(None, None, bad)


def test_ranges_need_both_bounds_or_last_and_not_both() -> None:
    with pytest.raises(click.UsageError, match="--last 7d"):
        resolve_range("2026-11-01", None, None)
    with pytest.raises(click.UsageError, match="cannot be combined"):
        resolve_range("2026-11-01", None, "7d")
    assert resolve_range(None, None, None, required=False) == (None, None)
    assert resolve_range("2026-11-01", "2026-11-02", None) == (1_793_491_200, 1_793_577_600)


def _progress_output(total: int | None, steps: list[int], *totals: int) -> str:
    err = io.StringIO()
    real, sys.stderr = sys.stderr, err
    try:
        with Progress("work", tty=False, interval=3600) as progress:
            progress.total(total)
            for extra in totals:
                progress.total(extra)
            for n in steps:
                progress(n)
    finally:
        sys.stderr = real
    return err.getvalue()


def test_progress_without_a_terminal_prints_plain_lines_with_the_total() -> None:
    out = _progress_output(200, [1] * 200)
    lines = out.splitlines()
    assert out.endswith("\n") and "\r" not in out and "\x1b" not in out
    assert lines[0] == "work: 0/200 (0%)" and lines[-1] == "work: 200/200 (100%)"
    assert len(lines) == 11  # every 10 %
    # totals announced again (catch-up rounds) add up; a read to EOF may find more than announced
    assert _progress_output(10, [5, 5, 5], 5).splitlines()[-1] == "work: 15/15 (100%)"
    assert _progress_output(10, [12]).splitlines()[-1] == "work: 12/12 (100%)"
    assert _progress_output(None, [3, 4]).splitlines() == ["work: 0", "work: 7"]
    assert _progress_output(0, []).splitlines() == ["work: nothing to do"]


def test_up_prints_ready_to_paste_exports() -> None:
    settings = Settings(
        kafka_bootstrap="127.0.0.1:9092",
        redis_url="redis://127.0.0.1:6380/0",
        stripe_api_key=Secret("sk_test_emuabc"),
        stripe_api_base="http://127.0.0.1:4242",
        gateway_port=8181,
    )
    lines = export_lines(settings, generated_key="sk_test_ms0123456789abcdef", emulator=True)
    env = dict(shlex.split(line)[1].split("=", 1) for line in lines)
    assert all(line.startswith("export ") for line in lines)
    assert env == {
        "METERSTREAM_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
        "METERSTREAM_REDIS_URL": "redis://127.0.0.1:6380/0",
        "METERSTREAM_API_KEYS": "sk_test_ms0123456789abcdef",
        "METERSTREAM_GATEWAY_PORT": "8181",
        "METERSTREAM_STRIPE_API_KEY": "sk_test_emuabc",
        "METERSTREAM_STRIPE_API_BASE": "http://127.0.0.1:4242",
    }
    assert load_settings(env).stripe_api_base == "http://127.0.0.1:4242"  # what a second terminal gets
    # a real Stripe key and the user's own gateway keys are not echoed back
    real = settings.replace(stripe_api_key=Secret("sk_live_real"), stripe_api_base="https://api.stripe.com")
    assert not any("sk_" in line for line in export_lines(real, generated_key=None, emulator=False))


def test_an_emulator_key_is_never_sent_to_stripe() -> None:
    with pytest.raises(ConfigError, match=r"local Stripe emulator.*METERSTREAM_STRIPE_API_BASE"):
        load_settings({"METERSTREAM_STRIPE_API_KEY": "sk_test_emu0123"})
    ok = load_settings({"METERSTREAM_STRIPE_API_KEY": "sk_test_emu0123", "METERSTREAM_STRIPE_API_BASE": "http://h:1"})
    assert ok.stripe_api_base == "http://h:1"
    assert load_settings({"METERSTREAM_STRIPE_API_KEY": "sk_test_real"}).stripe_api_base == "https://api.stripe.com"


def test_not_set_errors_point_at_the_export_lines() -> None:
    with pytest.raises(ConfigError, match="export` lines `meterstream up` printed") as exc:
        Settings().require_redis_url()
    assert "run `meterstream up`" not in str(exc.value)
    with pytest.raises(ConfigError, match="export` lines"):
        Settings().kafka_config()


def _table(lines: list[str]) -> tuple[dict[str, str], list[list[str]]]:
    head = {line.split(None, 1)[0]: line.split(None, 1)[1] for line in lines[:3]}
    assert lines[3] == "" and lines[4].split() == ["start", "end", "value"]
    return head, [line.split() for line in lines[5:]]


def test_usage_table_names_meter_and_customer_and_reads_empty_buckets() -> None:
    meter = Meter("mtr_1", "API", "api_requests", "sum", created=1)
    rows = [Summary(0, DAY, None), Summary(DAY, 2 * DAY, 25)]
    head, body = _table(usage_table(meter, "cus_1", rows, 0, 2 * DAY, "day"))
    assert head == {
        "meter": "mtr_1 (api_requests, sum)",
        "customer": "cus_1",
        "range": "1970-01-01T00:00:00Z .. 1970-01-03T00:00:00Z by day",
    }
    assert body == [
        ["1970-01-01T00:00:00Z", "1970-01-02T00:00:00Z", "0"],
        ["1970-01-02T00:00:00Z", "1970-01-03T00:00:00Z", "25"],
        ["total", "25"],
    ]
    last = Meter("mtr_2", "Seats", "seats", "last", created=1)
    _, body = _table(usage_table(last, "cus_1", rows, 0, 2 * DAY, "day"))
    assert [row[-1] for row in body] == ["(none)", "25"]  # no total: `last` values do not add up


def test_the_activity_line_counts_the_interval_and_says_idle_once() -> None:
    start = Counter({"records": 100, "accepted": 90, "duplicate": 10})
    busy = Counter({"records": 160, "accepted": 140, "duplicate": 20})
    line, idle = activity_report(start, busy, 2, 30.2, was_idle=False)
    assert line == "in the last 30 s: 60 records in 2 batch(es) (accepted 50, duplicate 10); 160 since start"
    assert not idle
    line, idle = activity_report(busy, busy, 0, 30.0, was_idle=False)
    assert line == "idle: no records in the last 30 s (160 since start)" and idle
    assert activity_report(busy, busy, 0, 30.0, was_idle=True) == (None, True)  # not every 30 s
