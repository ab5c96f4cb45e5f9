"""Gateway throughput and summary latency, on the embedded broker and Valkey.

    python -m bench gateway          (options: python -m bench.gateway_bench --help)

1. summaries: 30 days of hourly usage for one customer (720 events through the v2 stream, applied by the
   real processor), then sequential ``GET /v1/billing/meters/{id}/event_summaries`` with
   ``value_grouping_window=hour`` over those 30 days (``limit=100``: the first page; the gateway reads all
   720 buckets to build it): p50 / p99 latency as the client sees it, keep-alive connection;
2. v1: ``POST /v1/billing/meter_events`` (form-encoded, one event per request) for ``--duration``
   seconds over ``--connections`` keep-alive connections, 4 requests pipelined on each: events/s answered
   200, i.e. acknowledged by Kafka;
3. v2 stream: ``POST /v2/billing/meter_event_stream`` with 100 events per request: events/s.

Steps 2 and 3 run against ``meterstream gateway`` with one process and with ``--workers`` processes
(default: one per core), each a child process as in production. The load generator is a small
pipelining HTTP client (not the SDK) so that it leaves the cores to the gateway; like the SDK, it sends an
``Idempotency-Key`` with every request (each one new), and events carry an ``identifier``. Targets (SPEC §10):
≥ 5,000 events/s v1, ≥ 50,000 events/s v2 stream, p99 ≤ 10 ms. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import statistics
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
from processor.kafka.admin import ensure_topics

API_KEY = "sk_test_benchgateway0001"
HOUR = 3600
PARTITIONS = 6


def _call(
    url: str, method: str = "GET", body: bytes | None = None, content_type: str | None = None, key: str = API_KEY
) -> Any:
    headers = {"Authorization": f"Bearer {key}"}
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    """Until ``/healthz`` answers 200 (the gateway reached Kafka and Redis)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the gateway exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError("the gateway did not become healthy")


# ---- load generators (child processes) ----------------------------------------------------------
class _Pipelined(asyncio.Protocol):
    """One keep-alive connection that keeps ``window`` requests outstanding (HTTP/1.1 pipelining; the
    server still answers them one at a time, in order). Responses are split by Content-Length and only
    their status is read, so the loader costs little CPU next to the gateway it measures."""

    def __init__(
        self, requests: list[tuple[bytes, bytes, int]], window: int, deadline: float, done: asyncio.Future[None]
    ):
        self.requests, self.window, self.deadline, self.done = requests, window, deadline, done
        self.key_prefix = uuid.uuid4().hex  # every request carries its own Idempotency-Key, as the SDK's do
        self.buffer = b""
        self.next = 0
        self.outstanding: list[int] = []
        self.sent = self.errors = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        for _ in range(self.window):
            self._send()

    def _send(self) -> None:
        assert self.transport is not None
        head, body, n = self.requests[self.next % len(self.requests)]
        self.next += 1
        self.outstanding.append(n)
        self.transport.write(head + f"Idempotency-Key: {self.key_prefix}-{self.next}\r\n\r\n".encode() + body)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end]
            length_at = head.lower().find(b"content-length:")
            length = int(head[length_at + 15 : head.find(b"\r\n", length_at)]) if length_at >= 0 else 0
            if len(self.buffer) < head_end + 4 + length:
                return
            status = head[9:12]
            self.buffer = self.buffer[head_end + 4 + length :]
            n = self.outstanding.pop(0)
            if status == b"200":
                self.sent += n
            else:
                self.errors += 1
            if time.monotonic() < self.deadline:
                self._send()
            elif not self.outstanding:
                assert self.transport is not None
                self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


def _requests(url: str, kind: str, token: str, seed: int) -> list[tuple[bytes, bytes, int]]:
    """Raw HTTP requests (head without its blank line, body, events), built before the clock starts and
    reused; each send adds its own ``Idempotency-Key`` header, so the gateway does the full work for every
    request (claim the key, judge the event, check its identifier, publish, store the answer)."""
    host = url.split("//", 1)[1]
    out = []
    for i in range(2000 if kind == "v1" else 200):
        if kind == "v1":
            path, ctype, key = "/v1/billing/meter_events", "application/x-www-form-urlencoded", API_KEY
            body, n = (
                (
                    f"event_name=bench_v1&payload[stripe_customer_id]=cus_{i % 1000}&payload[value]=1"
                    f"&identifier=v1-{seed}-{i}"
                ).encode(),
                1,
            )
        else:
            path, ctype, key = "/v2/billing/meter_event_stream", "application/json", token
            events = [
                {
                    "event_name": "bench_v2",
                    "identifier": f"v2-{seed}-{i}-{j}",
                    "payload": {"stripe_customer_id": f"cus_{(i + j) % 1000}", "value": "1"},
                }
                for j in range(100)
            ]
            body, n = json.dumps({"events": events}).encode(), 100
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        ).encode()
        out.append((head, body, n))
    return out


async def _load(url: str, kind: str, token: str, duration: float, concurrency: int, seed: int) -> tuple[int, int]:
    requests = _requests(url, kind, token, seed)
    host, port = url.split("//", 1)[1].split(":")
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + duration
    protocols = []
    for _ in range(concurrency):
        done: asyncio.Future[None] = loop.create_future()
        _, proto = await loop.create_connection(
            lambda d=done: _Pipelined(requests, 4, deadline, d),
            host,
            int(port),  # type: ignore[misc]
        )
        protocols.append((proto, done))
    await asyncio.gather(*(done for _, done in protocols))
    return sum(p.sent for p, _ in protocols), sum(p.errors for p, _ in protocols)


def _loader(url: str, kind: str, token: str, duration: float, concurrency: int, seed: int, q: Any) -> None:
    started = time.monotonic()
    sent, errors = asyncio.run(_load(url, kind, token, duration, concurrency, seed))
    q.put((sent, errors, time.monotonic() - started))


def _throughput(url: str, kind: str, token: str, duration: float, concurrency: int, loaders: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q: Any = ctx.Queue()
    procs = [ctx.Process(target=_loader, args=(url, kind, token, duration, concurrency, s, q)) for s in range(loaders)]
    for p in procs:
        p.start()
    results = [q.get(timeout=duration + 120) for _ in procs]
    for p in procs:
        p.join()
    sent = sum(r[0] for r in results)
    errors = sum(r[1] for r in results)
    elapsed = max(r[2] for r in results)
    return {"events_per_s": round(sent / elapsed), "events": sent, "non_200": errors, "seconds": round(elapsed, 1)}


# ---- summaries -----------------------------------------------------------------------------------
def _summary_latency(settings: Settings, url: str, token: str, requests: int) -> dict[str, Any]:
    import http.client
    from urllib.parse import urlsplit

    from processor.aggregator.runner import Processor

    meter = _call(
        url + "/v1/billing/meters",
        "POST",
        b"display_name=Bench+summary&event_name=bench_summary&default_aggregation[formula]=sum",
        "application/x-www-form-urlencoded",
    )
    end = int(time.time()) // HOUR * HOUR
    start = end - 30 * 24 * HOUR
    events = [
        {
            "event_name": "bench_summary",
            "identifier": f"sum-{t}",
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t + 59)),
            "payload": {"stripe_customer_id": "cus_summary", "value": str(t % 1000)},
        }
        for t in range(start, end, HOUR)
    ]
    for i in range(0, len(events), 100):
        _call(
            url + "/v2/billing/meter_event_stream",
            "POST",
            json.dumps({"events": events[i : i + 100]}).encode(),
            "application/json",
            key=token,
        )
    processor = Processor(settings)
    processor.drain(idle=1.0)
    processor.close()

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    path = (
        f"/v1/billing/meters/{meter['id']}/event_summaries?customer=cus_summary&start_time={start}"
        f"&end_time={end}&value_grouping_window=hour&limit=100"
    )
    headers = {"Authorization": f"Bearer {API_KEY}"}
    timings = []
    first: Any = None
    for i in range(requests + 50):
        t0 = time.perf_counter()
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        elapsed = time.perf_counter() - t0
        if response.status != 200:
            raise RuntimeError(f"summary request failed: {response.status} {raw[:200]!r}")
        if i >= 50:  # warm-up excluded
            timings.append(elapsed * 1000)
        first = first or json.loads(raw)
    conn.close()
    timings.sort()
    windows = len(first["data"])
    return {
        "windows_in_range": len(events),
        "windows_on_first_page": windows,
        "requests": requests,
        "p50_ms": round(statistics.median(timings), 2),
        "p99_ms": round(timings[int(len(timings) * 0.99) - 1], 2),
        "max_ms": round(timings[-1], 2),
    }


class _Gateway:
    """``meterstream gateway`` as a child process, stopped (SIGTERM) on exit."""

    def __init__(self, env: dict[str, str], port: int, workers: int, log_path: Path) -> None:
        child_env = {k: v for k, v in os.environ.items() if not k.startswith("METERSTREAM_")} | env
        self.log = open(log_path, "ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "processor",
                "gateway",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
            ],
            env=child_env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.url = f"http://127.0.0.1:{port}"

    def __enter__(self) -> _Gateway:
        try:
            _wait_healthy(self.url, self.proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()


def main() -> None:
    ap = argparse.ArgumentParser(prog="bench gateway")
    ap.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", "10")))
    ap.add_argument("--connections", type=int, default=64, help="v1 connections (v2: a quarter of them)")
    ap.add_argument("--loaders", type=int, default=1, help="load generator processes")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2, help="gateway worker processes")
    ap.add_argument("--summary-requests", type=int, default=2000)
    args, _ = ap.parse_known_args()
    work = Path(tempfile.mkdtemp(prefix="bench-gw-"))
    per_loader_v1 = max(1, args.connections // args.loaders)
    per_loader_v2 = max(1, args.connections // 4 // args.loaders)
    runs: dict[str, Any] = {}
    with EmbeddedKafka(workdir=work) as kafka, EmbeddedRedis(workdir=work) as redis_srv:
        env = {
            "METERSTREAM_KAFKA_BOOTSTRAP": kafka.bootstrap,
            "METERSTREAM_REDIS_URL": redis_srv.url,
            "METERSTREAM_TOPIC_PARTITIONS": str(PARTITIONS),
            "METERSTREAM_API_KEYS": API_KEY,
            "METERSTREAM_PROCESSOR_GROUP": f"bench-{uuid.uuid4().hex[:6]}",
        }
        settings = load_settings(env)
        ensure_topics(settings)
        summary: dict[str, Any] = {}
        for workers in sorted({1, args.workers}):
            with _Gateway(env, free_port(), workers, work / "gateway.log") as gateway:
                url = gateway.url
                token = _call(url + "/v2/billing/meter_event_session", "POST", b"{}", "application/json")[
                    "authentication_token"
                ]
                if not summary:
                    for name in ("bench_v1", "bench_v2"):
                        _call(
                            url + "/v1/billing/meters",
                            "POST",
                            f"display_name={name}&event_name={name}&default_aggregation[formula]=count".encode(),
                            "application/x-www-form-urlencoded",
                        )
                    summary = _summary_latency(settings, url, token, args.summary_requests)
                v1 = _throughput(url, "v1", token, args.duration, per_loader_v1, args.loaders)
                v2 = _throughput(url, "v2", token, args.duration, per_loader_v2, args.loaders)
                runs[f"workers_{workers}"] = {
                    "v1_meter_events": {**v1, "connections": per_loader_v1 * args.loaders},
                    "v2_stream": {**v2, "connections": per_loader_v2 * args.loaders, "events_per_request": 100},
                }
    out = {
        "bench": "gateway",
        "machine": f"{platform.machine()} {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}",
        "note": "gateway, load generator, broker and Redis share the machine; requests are pipelined 4 deep",
        "targets": {"v1_events_per_s": 5000, "v2_stream_events_per_s": 50000, "summary_p99_ms": 10},
        **runs,
        "summary_30d_hourly": summary,
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
