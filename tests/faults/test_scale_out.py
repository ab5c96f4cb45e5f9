"""Scale-out: processors and sinks as consumer-group members over the catalog's 12 partitions.

Three ``meterstream processor`` and two ``meterstream sink`` subprocesses start in their groups; the
workload (tests/pipeline.py: raw and pre-aggregated meters, sum/count/last, duplicates, cancellations
before and after their events, invalid and unknown events) is produced in three phases. During the
first, a fourth processor and a third sink join; during the second, one processor and one sink are
killed with SIGKILL; the third phase flows through the survivors. Then:

- Redis holds exactly what one clean engine run over the same topics holds (``snapshot_diff`` empty);
- on ``meter-events-accepted`` every cancellation follows its event in the same partition (what lets the
  sink send it to Stripe after the event);
- the Stripe emulator holds every accepted identifier once (never double-billed) and every resolved
  cancellation once, and ``meterstream reconcile`` finds its summaries equal to Redis for every meter;
- the work really was spread: every processor applied records (its own Prometheus counter) and both
  surviving sinks delivered records (their drain totals), so one busy member cannot make the test pass.

Nothing here is timed: waits are bounded by generous deadlines that only turn a hang into a failure.
"""

from __future__ import annotations

import ast
import json
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner

from processor.cli import main
from processor.config import Settings
from processor.embedded import free_port
from processor.emulator import EmulatorConfig, EmulatorServer
from processor.state.keys import Keys
from tests.helpers import child_env
from tests.pipeline import (
    Workload,
    make_workload,
    producer,
    put_meters,
    read_all,
    reference_state,
    snapshot_diff,
    stored_progress,
    usage_snapshot,
)
from topics import Topic, topic_name

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KEY = "sk_test_scaleout"
PARTITIONS = 12  # the catalog's default for meter-events, meter-event-adjustments and the accepted topic
EVENTS = 24_000
WAIT_S = 240.0  # a bound that turns a hang into a failure, never a performance assertion

# every record a processor judged: events and cancellations by claim result, plus rejected records
_RECORDS_LINE = re.compile(r"^meterstream_processor_(?:records|rejected)_total\{[^}]*\}\s+([0-9.e+]+)$", re.M)
_ASSIGNED = re.compile(r"runner: assigned (.+)$", re.M)
_DRAINED = re.compile(r"sink drained \(\w+\); totals (\{.*\})$", re.M)


@dataclass
class Member:
    """One subprocess of a consumer group, its stderr file and (processors) its metrics port."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int | None = None
    applied: int = 0  # the highest records counter scraped from its /metrics

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def scrape(self) -> int:
        """Refresh :attr:`applied` from the process' own Prometheus counter (kept after it dies)."""
        if self.metrics_port is None or self.proc.poll() is not None:
            return self.applied
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
                body = resp.read().decode()
        except (urllib.error.URLError, OSError):
            return self.applied  # not serving yet
        self.applied = max(self.applied, sum(int(float(v)) for v in _RECORDS_LINE.findall(body)))
        return self.applied

    def assigned(self) -> bool:
        """Whether its latest assignment (processor log) holds at least one partition."""
        found = _ASSIGNED.findall(self.text())
        return bool(found) and "[" in found[-1]


@dataclass
class Fleet:
    """Starts group members as real subprocesses (``python -m processor <command>``) and cleans up."""

    settings: Settings
    workdir: Path
    members: list[Member] = field(default_factory=list)

    def _start(self, command: str, extra: list[str], port: int | None) -> Member:
        env = child_env(self.settings)
        name = f"{command}{sum(1 for m in self.members if m.name.startswith(command))}"
        log = self.workdir / f"{name}.log"
        with log.open("wb") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "processor", command, *extra], env=env, stdout=subprocess.DEVNULL, stderr=err
            )
        member = Member(name, proc, log, port)
        self.members.append(member)
        return member

    def processor(self) -> Member:
        port = free_port()
        return self._start("processor", ["--metrics-port", str(port)], port)

    def sink(self) -> Member:
        return self._start("sink", [], None)

    def scrape(self) -> None:
        for m in self.members:
            m.scrape()

    def stop(self) -> None:
        for m in self.members:
            if m.proc.poll() is None:
                m.proc.kill()
            m.proc.wait(30)


@pytest.fixture
def emulator() -> Iterator[EmulatorServer]:
    with EmulatorServer(EmulatorConfig(port=0, api_key=KEY, seed=11)) as emu:
        yield emu


@pytest.fixture
def scaled(settings_factory: Callable[..., Settings], emulator: EmulatorServer, tmp_path: Path) -> Iterator[Fleet]:
    settings = settings_factory(
        METERSTREAM_TOPIC_PARTITIONS="",  # unset: the catalog's partition counts (12 for the data topics)
        METERSTREAM_STRIPE_API_KEY=KEY,
        METERSTREAM_STRIPE_API_BASE=emulator.url,
        METERSTREAM_STRIPE_RATE="1000",
    )
    fleet = Fleet(settings, tmp_path)
    try:
        yield fleet
    finally:
        fleet.stop()


def _wait(
    what: str, done: Callable[[], bool], fleet: Fleet, timeout: float = WAIT_S, status: Callable[[], str] = str
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        fleet.scrape()
        for m in fleet.members:
            if m.proc.poll() is not None and m.proc.returncode != -signal.SIGKILL:
                pytest.fail(f"{m.name} exited with {m.proc.returncode} while waiting for {what}:\n{m.text()[-3000:]}")
        assert time.monotonic() < deadline, f"gave up waiting for {what} {status()}"
        time.sleep(0.2)
    fleet.scrape()


def _phases(w: Workload, n: int) -> list[list[tuple[str, str, bytes, int]]]:
    """Events and cancellations merged in received-time order, cut into ``n`` consecutive phases."""
    merged = [(Topic.EVENTS, k, v, t) for k, v, t in w.events] + [(Topic.ADJUSTMENTS, k, v, t) for k, v, t in w.cancels]
    merged.sort(key=lambda r: r[3])
    size = -(-len(merged) // n)
    return [merged[i : i + size] for i in range(0, len(merged), size)]


def _produce(settings: Settings, records: list[tuple[str, str, bytes, int]], per_flush: int = 0) -> None:
    """Produce and wait for the broker's acknowledgement; ``per_flush`` > 0 paces the stream by flushing
    every that many records (so group changes happen while records are still arriving)."""
    p = producer(settings)
    for n, (base, key, value, ts) in enumerate(records, 1):
        p.produce(topic_name(base, settings.topic_prefix), key=key, value=value, timestamp=ts)
        p.poll(0)
        if per_flush and n % per_flush == 0:
            assert p.flush(60) == 0
            time.sleep(0.1)
    assert p.flush(60) == 0


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


@dataclass
class Billed:
    """What the emulator holds: event identifiers (with repeats) and cancellations by result."""

    events: list[str]
    cancelled: list[str]
    other_cancellations: list[tuple[str, str]]


def _billed(url: str, w: Workload) -> Billed:
    billed = Billed([], [], [])
    for m in w.meters:
        try:
            ledger = _get(f"{url}/_emulator/events?event_name={m.event_name}")
        except urllib.error.HTTPError:  # no sink has created this meter in Stripe yet
            continue
        billed.events += [e["identifier"] for e in ledger["events"]]
        for c in ledger["cancellations"]:
            if c["result"] == "cancelled":
                billed.cancelled.append(c["identifier"])
            else:
                billed.other_cancellations.append((c["identifier"], c["result"]))
    return billed


def _cancels_before_events(settings: Settings) -> list[tuple[int, int, str]]:
    """Cancellations on meter-events-accepted with no earlier record of their event in the same partition
    (SPEC §1: a resolved cancellation follows its event, so the sink sends it to Stripe after the event)."""
    seen: set[tuple[int, str, str]] = set()
    bad: list[tuple[int, int, str]] = []
    msgs = read_all(settings, [Topic.ACCEPTED], PARTITIONS, idle=1.0)
    for m in sorted(msgs, key=lambda m: (m.partition(), m.offset())):
        body = json.loads(m.value())
        key = (m.partition(), body["event_name"], body["identifier"])
        if body["kind"] == "event":
            seen.add(key)
        elif key not in seen:
            bad.append((m.partition(), m.offset(), body["identifier"]))
    return bad


def _drain_totals(member: Member) -> dict[str, int]:
    found = _DRAINED.findall(member.text())
    assert found, f"{member.name} logged no drain totals:\n{member.text()[-3000:]}"
    totals: dict[str, int] = ast.literal_eval(found[-1])
    return totals


def test_three_processors_two_sinks_scale_out_kill_and_stay_exact(
    scaled: Fleet, emulator: EmulatorServer, redis_client: redis.Redis
) -> None:
    settings = scaled.settings
    w = make_workload(EVENTS, seed=12)
    put_meters(settings, w.meters, effective_ms=w.events[0][2] - 60_000)
    for m in w.meters:  # the registry's Redis mirror, which the sink reads
        redis_client.hset(Keys(settings.redis_prefix).meters, m.id, m.to_json())
    phases = _phases(w, 3)
    total = len(w.events) + len(w.cancels)

    # phase 1: three processors and two sinks; the stream starts once the processor group settled, paced
    # (~1,500 records/s) so that the group changes below happen while records still arrive
    procs = [scaled.processor() for _ in range(3)]
    sinks = [scaled.sink() for _ in range(2)]
    _wait("three processors to own partitions", lambda: all(p.assigned() for p in procs), scaled)
    feeder = threading.Thread(target=_produce, args=(settings, phases[0], 150), daemon=True)
    feeder.start()
    _wait("a quarter of phase 1", lambda: stored_progress(redis_client, settings) >= len(phases[0]) // 4, scaled)

    # a fourth processor and a third sink join mid-stream
    procs.append(scaled.processor())
    sinks.append(scaled.sink())
    feeder.join(120)
    assert not feeder.is_alive()
    _wait("the fourth processor to own partitions", procs[3].assigned, scaled)
    _wait("phase 1 processed", lambda: stored_progress(redis_client, settings) >= len(phases[0]), scaled)
    _wait("some Stripe deliveries", lambda: len(_billed(emulator.url, w).events) > 500, scaled)

    # phase 2 as one burst; as soon as the four processors are working through it, kill -9 one of the
    # original processors and one of the original sinks (with the accepted topic's backlog in front of it)
    before = stored_progress(redis_client, settings)
    _produce(settings, phases[1])
    produced = len(phases[0]) + len(phases[1])
    deadline = time.monotonic() + WAIT_S
    while stored_progress(redis_client, settings) == before:
        assert time.monotonic() < deadline, "phase 2 is not being processed"
        time.sleep(0.01)
    at_kill = stored_progress(redis_client, settings)
    victim_proc, victim_sink = procs[0], sinks[0]
    for victim in (victim_proc, victim_sink):
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
    assert at_kill < produced, "phase 2 was processed before the kill: make the phase bigger"

    # phase 3 flows through the survivors only
    _produce(settings, phases[2])
    assert produced + len(phases[2]) == total
    _wait("every record processed", lambda: stored_progress(redis_client, settings) >= total, scaled)
    misordered = _cancels_before_events(settings)
    assert not misordered, f"cancellations ahead of their event on meter-events-accepted: {misordered[:10]}"

    ref_prefix = settings.redis_prefix + "ref"
    expected = reference_state(settings, ref_prefix, PARTITIONS)
    expected_events = {i for kind, i in expected if kind == "event"}
    expected_cancels = {i for kind, i in expected if kind == "cancel"}
    assert expected_cancels, "the workload resolved no cancellation: the test would not check them"

    def delivered() -> bool:
        b = _billed(emulator.url, w)
        return set(b.events) >= expected_events and set(b.cancelled) >= expected_cancels

    def missing() -> str:
        b = _billed(emulator.url, w)
        return (
            f"(events missing: {sorted(expected_events - set(b.events))[:10]}, cancellations missing: "
            f"{sorted(expected_cancels - set(b.cancelled))[:10]}, other cancellations: {b.other_cancellations[:10]})"
        )

    _wait("every accepted record in Stripe", delivered, scaled, status=missing)
    survivors = [s for s in sinks if s is not victim_sink]
    for member in scaled.members:
        if member.proc.poll() is None:
            member.proc.send_signal(signal.SIGTERM)
    for member in scaled.members:
        code = member.proc.wait(60)
        assert member in (victim_proc, victim_sink) or code == 0, (
            f"{member.name} exited {code}:\n{member.text()[-3000:]}"
        )

    # Redis: exactly one clean run's aggregates
    diff = snapshot_diff(usage_snapshot(redis_client, settings.redis_prefix), usage_snapshot(redis_client, ref_prefix))
    assert not diff, "\n".join(diff)

    # Stripe: every accepted identifier once, every resolved cancellation once, nothing else
    billed = _billed(emulator.url, w)
    twice = sorted({i for i in billed.events if billed.events.count(i) > 1})
    assert twice == []
    assert set(billed.events) == expected_events
    assert sorted(billed.cancelled) == sorted(expected_cancels)
    # a cancellation resent after a crash may come back "already_cancelled"; nothing may be lost or late
    assert {r for _, r in billed.other_cancellations} <= {"already_cancelled"}, billed.other_cancellations

    # Stripe's summaries equal Redis for every meter and customer
    now = int(time.time())
    start, end = now - now % 86400 - 4 * 86400, now - now % 86400 + 2 * 86400
    for m in w.meters:
        result = CliRunner().invoke(
            main, ["reconcile", "--meter", m.id, "--from", str(start), "--to", str(end)], env=settings.to_env()
        )
        assert result.exit_code == 0, result.output
        assert re.search(r"\n0 of \d+ customer\(s\) drift \(0 bucket\(s\)\)", result.output), result.output

    # the work was spread: every processor (the killed one and the late joiner included) applied records,
    # and both surviving sinks delivered some
    applied = {p.name: p.applied for p in procs}
    assert all(n > 0 for n in applied.values()), applied
    delivered_by = {s.name: _drain_totals(s)["delivered"] for s in survivors}
    assert all(n > 0 for n in delivered_by.values()), delivered_by


def test_a_cancellation_never_overtakes_an_event_another_processor_claimed(
    settings_factory: Callable[..., Settings], redis_client: redis.Redis
) -> None:
    """Deterministic form of the race the scale-out test found: processor A claims and applies an event,
    then dies before producing its accepted record; processor B, which owns the cancellation's partition,
    must not put the cancellation on the accepted topic ahead of the event (Stripe would refuse the
    cancellation of an event it does not know, and bill the event). Here A's event is not even on the
    topic yet when B reads the cancellation; B may only emit the cancellation once the event is out."""
    from processor.aggregator.engine import Engine, RawRecord
    from processor.aggregator.runner import Processor
    from processor.meters.book import MeterBook
    from processor.meters.model import Meter
    from processor.state.store import StateStore, connect_redis
    from tests.pipeline import cancel_value, event_value

    settings = settings_factory(partitions=3)
    now_ms = int(time.time() * 1000)
    meter = Meter("mtr_race", "Race", "race", "sum", created=1)
    put_meters(settings, [meter], now_ms - 60_000)
    events, adjustments = (topic_name(t, settings.topic_prefix) for t in (Topic.EVENTS, Topic.ADJUSTMENTS))
    target = event_value("race", "cus_x", 5, "target")
    p = producer(settings)
    for i in range(50):  # another customer's events in front of the target, in the same partition
        p.produce(events, partition=0, key="cus_f", value=event_value("race", "cus_f", 1, f"f{i}"), timestamp=now_ms)
    p.produce(adjustments, partition=1, key="target", value=cancel_value("race", "target"), timestamp=now_ms + 2)
    assert p.flush(30) == 0

    # processor A claims and applies the target at the offset it will have (50), then dies before output
    book = MeterBook()
    book.add_record(now_ms - 60_000, meter.to_json().encode())
    dying = Engine(StateStore(connect_redis(settings.require_redis_url()), settings.redis_prefix), book)
    assert dying.process([RawRecord(Topic.EVENTS, 0, 50, now_ms + 1, target)]).stats["event:new"] == 1

    proc = Processor(settings)  # processor B, which will also inherit A's partition
    try:
        deadline = time.monotonic() + 60
        while proc.stats["cancel:cancel"] + proc.stats["cancel:deferred"] == 0 or proc.stats["event:new"] < 50:
            assert time.monotonic() < deadline, f"the cancellation was not judged: {proc.stats}"
            proc.poll_batch(0.2)
        for _ in range(5):  # B keeps going while the target is still missing
            proc.poll_batch(0.2)
        delivered: list[tuple[int | None, int | None]] = []
        p.produce(
            events,
            partition=0,
            key="cus_x",
            value=target,
            timestamp=now_ms + 1,
            on_delivery=lambda err, msg: delivered.append((msg.partition(), msg.offset())),
        )
        assert p.flush(30) == 0
        assert delivered == [(0, 50)]
        proc.drain(idle=1.5, timeout=120)
    finally:
        proc.close()
    records = [
        json.loads(m.value())
        for m in sorted(read_all(settings, [Topic.ACCEPTED], 3), key=lambda m: (m.partition(), m.offset()))
    ]
    about_x = [(r["kind"], r["identifier"]) for r in records if r["customer"] == "cus_x"]
    assert about_x == [("event", "target"), ("cancel", "target")]
    usage = usage_snapshot(redis_client, settings.redis_prefix)
    assert ":usage:{mtr_race:cus_x}:day" not in usage  # cancelled: the bucket is gone
    assert sum(int(v) for v in usage[":usage:{mtr_race:cus_f}:day"].values()) == 50
