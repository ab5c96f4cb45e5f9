"""``meterstream gateway`` (with worker processes) and ``meterstream up`` as a user runs them: real child
processes, the official SDK against the address and key they print."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import stripe
from click.testing import CliRunner

from processor.cli import main
from processor.config import Settings
from processor.embedded import free_port
from tests.gateway.conftest import API_KEY, bearer, http
from tests.helpers import child_env, stop_process


@contextmanager
def _running(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "processor", *argv], env=env, stdout=out, stderr=subprocess.STDOUT
        )
        try:
            yield proc
        finally:
            stop_process(proc)


def _wait_for(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if http(url + "/healthz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not become healthy:\n{log.read_text()}")


def _acked(url: str) -> float:
    _, _, raw = http(url + "/metrics", headers=bearer())
    match = re.search(rb'meterstream_gateway_events_total\{endpoint="v1",result="acked"\} (\S+)', raw)
    return float(match.group(1)) if match else 0.0


def test_gateway_refuses_to_start_without_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("METERSTREAM_KAFKA_BOOTSTRAP", "127.0.0.1:9")
    monkeypatch.setenv("METERSTREAM_REDIS_URL", "redis://127.0.0.1:9/0")
    result = CliRunner().invoke(main, ["gateway"])
    assert result.exit_code == 2
    assert "METERSTREAM_API_KEYS" in result.output


def test_gateway_workers_share_the_port_and_the_metrics(gw_settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = child_env(gw_settings, METERSTREAM_GATEWAY_PORT=str(port))
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "gateway.log"
    with _running(["gateway", "--host", "127.0.0.1", "--workers", "2"], env, log) as proc:
        _wait_for(url, proc, log)
        stripe.StripeClient(API_KEY, base_addresses={"api": url}).v1.billing.meters.create(
            {"display_name": "CLI", "event_name": "cli", "default_aggregation": {"formula": "count"}}
        )
        for i in range(12):  # a new client (connection) each time, so both workers get some
            client = stripe.StripeClient(API_KEY, base_addresses={"api": url, "meter_events": url})
            client.v1.billing.meter_events.create({"event_name": "cli", "payload": {"stripe_customer_id": f"c{i}"}})
        # whichever worker answers the scrape, it reports the whole gateway
        assert [_acked(url) for _ in range(6)] == [12.0] * 6
        session = json.loads(http(url + "/v2/billing/meter_event_session", "POST", headers=bearer())[2])
        for _ in range(4):  # a session made by one worker is good on every worker
            body = json.dumps({"events": [{"event_name": "cli", "payload": {"stripe_customer_id": "c"}}]}).encode()
            headers = {**bearer(session["authentication_token"]), "Content-Type": "application/json"}
            assert http(url + "/v2/billing/meter_event_stream", "POST", body=body, headers=headers)[0] == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    with pytest.raises(OSError):
        http(url + "/healthz")  # no worker is left listening


@pytest.mark.integration  # `up` starts its own broker and Valkey: a whole program, not a unit
def test_up_runs_the_gateway_and_prints_the_url_and_a_key(tmp_path: Path) -> None:
    port = free_port()
    env = child_env(METERSTREAM_GATEWAY_PORT=str(port), METERSTREAM_TOPIC_PARTITIONS="1")
    out_path = tmp_path / "up.out"
    with _running(["up", "--state-dir", str(tmp_path / "state")], env, out_path) as proc:
        deadline = time.monotonic() + 120
        while "Press Ctrl-C" not in out_path.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, out_path.read_text()
            time.sleep(0.2)
        text = out_path.read_text()
        url = re.search(r"dashboard\s*: (http://\S+)/", text)
        key = re.search(r"api key\s*: (sk_test_\w+)", text)
        assert url is not None and key is not None, text
        assert url.group(1) == f"http://127.0.0.1:{port}"
        _wait_for(url.group(1), proc, out_path)
        client = stripe.StripeClient(key.group(1), base_addresses={"api": url.group(1), "meter_events": url.group(1)})
        meter = client.v1.billing.meters.create(
            {"display_name": "Up", "event_name": "up_calls", "default_aggregation": {"formula": "count"}}
        )
        assert client.v1.billing.meters.retrieve(meter.id).event_name == "up_calls"
        assert http(url.group(1) + "/", headers=bearer(key.group(1)))[0] == 200
        assert key.group(1) not in (tmp_path / "state" / "gateway.log").read_text()
