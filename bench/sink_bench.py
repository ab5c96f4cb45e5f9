"""Sink throughput into a local Stripe-compatible server, and how closely the rate limit holds.

    python -m bench sink [--v2-events N] [--v1-events N] [--window S]

Everything is real and local: the embedded broker and Valkey, the Stripe emulator in its own process
(``meterstream stripe-emulator``), and ``meterstream sink`` in its own process, exactly as deployed.
For each run the accepted topic of a fresh prefix is filled first, then the sink is started, and the
emulator's own counters are sampled (``GET /_emulator/stats``):

1. throughput, v2 stream and v1, with the rate limit set far above what the machine can do:
   events accepted by the emulator per second, from the first accepted event to the last;
2. scaling: the v2 throughput run again with ``--v2-processes`` sink processes in one consumer group;
3. the rate limit, v2 stream and v1, with a backlog much larger than the limit allows: HTTP requests
   the emulator received per second over a steady window of ``--window`` seconds (starting one second
   after the first event, past the start-up burst), against the configured ``METERSTREAM_STRIPE_RATE``.
   The sampling (every 0.1 s over HTTP) limits the resolution to about ±0.1 s / window.

CPU use of the sink process(es) and of the emulator over each window is reported too (Linux), which
shows where the limit is: one sink process is CPU-bound on one core (see docs/sink.md).

Prints one JSON object. Runs take well under a minute with the defaults.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from processor.config import Settings, load_settings
from processor.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from processor.kafka import AckedProducer
from processor.kafka.admin import ensure_topics
from processor.meters.model import Meter
from processor.state.keys import Keys
from topics import Topic, topic_name

PARTITIONS = 6
CUSTOMERS = 1000
API_KEY = "sk_test_bench"
WARMUP_S = 1.0
METER = Meter("mtr_bench_sink", "Bench sink", "bench_sink", "sum", created=1)


def _stats(url: str) -> dict[str, int]:
    with urllib.request.urlopen(url + "/_emulator/stats", timeout=10) as response:
        stats: dict[str, int] = json.loads(response.read())["stats"]
        return stats


def _start_emulator(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = open(work / "emulator.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "stripe-emulator", "--port", str(port), "--api-key", API_KEY],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=_clean_env(),
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/_emulator/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the Stripe emulator did not start")


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux ``/proc``; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("METERSTREAM_")}


def _settings(kafka: str, redis_url: str, emulator_url: str, mode: str, rate: float) -> Settings:
    run = uuid.uuid4().hex[:8]
    settings = load_settings(
        {
            "METERSTREAM_KAFKA_BOOTSTRAP": kafka,
            "METERSTREAM_REDIS_URL": redis_url,
            "METERSTREAM_TOPIC_PREFIX": f"bench{run}.",
            "METERSTREAM_REDIS_PREFIX": f"bench{run}",
            "METERSTREAM_SINK_GROUP": f"bench-sink-{run}",
            "METERSTREAM_TOPIC_PARTITIONS": str(PARTITIONS),
            "METERSTREAM_STRIPE_API_BASE": emulator_url,
            "METERSTREAM_STRIPE_API_KEY": API_KEY,
            "METERSTREAM_STRIPE_MODE": mode,
            "METERSTREAM_STRIPE_RATE": str(rate),
            "METERSTREAM_LOG_LEVEL": "WARNING",
        }
    )
    ensure_topics(settings)
    return settings


def _fill(settings: Settings, n: int) -> None:
    import redis

    client = redis.Redis.from_url(settings.require_redis_url())
    client.hset(Keys(settings.redis_prefix).meters, METER.id, METER.to_json())
    client.close()
    producer = AckedProducer(settings, config={"linger.ms": 20})
    topic = topic_name(Topic.ACCEPTED, settings.topic_prefix)
    now = int(time.time()) - 60
    run = settings.redis_prefix
    for i in range(n):
        customer = f"cus_{i % CUSTOMERS}"
        value = {
            "kind": "event",
            "meter_id": METER.id,
            "event_name": METER.event_name,
            "identifier": f"{run}-{i}",
            "customer": customer,
            "timestamp": now,
            "payload": {"stripe_customer_id": customer, "value": str(i % 97)},
            "received_at": now * 1000,
            "source": f"{Topic.EVENTS}/0/{i}",
        }
        producer.produce(topic, key=customer.encode(), value=json.dumps(value).encode())
        if i % 10_000 == 0:
            producer.poll(0)
    if producer.flush(60):
        raise RuntimeError("the broker did not acknowledge every benchmark record")


def _run(
    settings: Settings,
    emulator: subprocess.Popen[bytes],
    emulator_url: str,
    n: int,
    work: Path,
    *,
    window: float | None,
    processes: int = 1,
) -> dict[str, Any]:
    """Start the sink on a filled topic; sample the emulator until ``n`` events arrived (or, with
    ``window``, for that many seconds of steady state)."""
    base = _stats(emulator_url)
    env = _clean_env() | settings.to_env()
    log = open(work / f"sink-{settings.stripe_mode}-{window}-{processes}.log", "wb")
    sinks = [
        subprocess.Popen([sys.executable, "-m", "processor", "sink"], env=env, stdout=log, stderr=subprocess.STDOUT)
        for _ in range(processes)
    ]

    def sinks_cpu() -> float | None:
        seconds = [_cpu_seconds(p.pid) for p in sinks]
        return None if None in seconds else sum(s for s in seconds if s is not None)

    try:
        started: float | None = None
        first: tuple[float, dict[str, int]] | None = None
        cpu_first: tuple[float | None, float | None] = (None, None)
        last: tuple[float, dict[str, int]] | None = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.1)
            now, stats = time.monotonic(), _stats(emulator_url)
            accepted = stats.get("events_accepted", 0) - base.get("events_accepted", 0)
            if started is None and accepted > 0:
                started = now
            # Measure from the first accepted event (throughput), or from one second later (the rate
            # limit: past the start-up burst and the meter set-up).
            if first is None and started is not None and (window is None or now - started >= WARMUP_S):
                first = (now, stats)
                cpu_first = (sinks_cpu(), _cpu_seconds(emulator.pid))
            if first is not None:
                last = (now, stats)
                if window is not None and now - first[0] >= window:
                    break
                if accepted >= n:
                    break
            if any(p.poll() is not None for p in sinks):
                raise RuntimeError(f"a sink exited early; see {log.name}")
        if first is None or last is None or last[0] <= first[0]:
            raise RuntimeError("no events reached the emulator")
        span = last[0] - first[0]
        events = last[1]["events_accepted"] - first[1]["events_accepted"]
        requests = last[1]["requests"] - first[1]["requests"]
        cpu_last = (sinks_cpu(), _cpu_seconds(emulator.pid))
        cpu = {
            name: None if a is None or b is None else round(100 * (b - a) / span, 1)
            for name, a, b in zip(("sink_cpu_pct", "emulator_cpu_pct"), cpu_first, cpu_last, strict=True)
        }
        return {
            "events": last[1]["events_accepted"] - base.get("events_accepted", 0),
            "seconds": round(span, 3),
            "events_per_s": round(events / span, 1),
            "requests_per_s": round(requests / span, 1),
            "events_per_request": round(events / requests, 1) if requests else None,
            **cpu,
        }
    finally:
        for p in sinks:
            p.terminate()
        for p in sinks:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser(prog="bench sink")
    ap.add_argument("--v2-events", type=int, default=40_000, help="events for the v2 stream throughput run")
    ap.add_argument("--v1-events", type=int, default=3_000, help="events for the v1 throughput run")
    ap.add_argument("--v2-processes", type=int, default=2, help="sink processes (one group) for a scaling run")
    ap.add_argument("--window", type=float, default=6.0, help="seconds of steady state for the rate-limit runs")
    ap.add_argument("--v2-rate", type=float, default=40.0, help="configured requests/s for the v2 rate-limit run")
    ap.add_argument("--v1-rate", type=float, default=200.0, help="configured requests/s for the v1 rate-limit run")
    args = ap.parse_args(sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1] == "sink" else sys.argv[1:])

    result: dict[str, Any] = {"bench": "sink", "machine": {"cpus": os.cpu_count(), "python": platform.python_version()}}
    with tempfile.TemporaryDirectory(prefix="bench-sink-") as tmp:
        work = Path(tmp)
        with EmbeddedKafka(workdir=work) as kafka, EmbeddedRedis(workdir=work) as redis_srv:
            emulator, url = _start_emulator(work)
            try:
                for mode, n in (("v2_stream", args.v2_events), ("v1", args.v1_events)):
                    settings = _settings(kafka.bootstrap, redis_srv.url, url, mode, rate=100_000)
                    _fill(settings, n)
                    result[f"throughput_{mode}"] = _run(settings, emulator, url, n, work, window=None)
                if args.v2_processes > 1:
                    settings = _settings(kafka.bootstrap, redis_srv.url, url, "v2_stream", rate=100_000)
                    _fill(settings, args.v2_events)
                    result[f"throughput_v2_stream_{args.v2_processes}_processes"] = _run(
                        settings, emulator, url, args.v2_events, work, window=None, processes=args.v2_processes
                    )
                for mode, rate in (("v2_stream", args.v2_rate), ("v1", args.v1_rate)):
                    settings = _settings(kafka.bootstrap, redis_srv.url, url, mode, rate=rate)
                    backlog = int(rate * args.window * (100 if mode == "v2_stream" else 1) * 3)
                    _fill(settings, min(backlog, 200_000))
                    run = _run(settings, emulator, url, backlog, work, window=args.window)
                    run["configured_requests_per_s"] = rate
                    run["deviation_pct"] = round(100 * (run["requests_per_s"] - rate) / rate, 2)
                    result[f"rate_limit_{mode}"] = run
            finally:
                emulator.terminate()
                emulator.wait(10)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
