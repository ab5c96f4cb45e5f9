"""``meterstream stripe-emulator`` as a real process: flags reach the server, the SDK talks to it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import stripe


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cli_runs_the_emulator_with_flags() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "processor", "stripe-emulator", "--port", str(port), "--fail-429", "1", "--seed", "7"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert f"listening on http://127.0.0.1:{port}" in banner, banner
        assert "sk_test_" in proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        client = stripe.StripeClient("sk_test_cli", base_addresses={"api": url, "meter_events": url})
        deadline = time.monotonic() + 30
        while True:  # the banner is printed on startup; the socket may lag a moment behind
            try:
                client.v1.billing.meters.list()
                raise AssertionError("--fail-429 1 should have answered 429")
            except stripe.RateLimitError:
                break
            except stripe.APIConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(30)


def test_cli_rejects_bad_probability() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "processor", "stripe-emulator", "--fail-500", "1.5"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "probability" in result.stderr
