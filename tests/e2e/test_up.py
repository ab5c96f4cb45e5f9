"""`meterstream up` end to end, the way a new user runs it: embedded broker, Valkey and Stripe emulator,
then the CLI to create a meter and send events, and the official stripe SDK to check what reached
"Stripe" (the emulator) and what the gateway answers."""

from __future__ import annotations

import base64
import json
import re
import time
import urllib.request
from pathlib import Path

import pytest
import stripe
from click.testing import CliRunner
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from processor.cli import main
from processor.state.connect import sync_redis_url
from tests.conftest import cluster_wanted
from tests.helpers import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_up_create_meter_send_events_and_see_them_everywhere(running_up: dict[str, str]) -> None:
    env = json.loads(running_up["exports"])  # the settings `up` printed for a second terminal
    runner = CliRunner()
    created = runner.invoke(
        main,
        ["meters", "create", "--event-name", "api_requests", "--display-name", "API requests", "--formula", "sum"],
        env=env,
    )
    assert created.exit_code == 0, created.output
    meter_id = json.loads(created.output[created.output.index("{") :])["id"]
    for value in (3, 4):
        sent = runner.invoke(
            main,
            ["events", "send", "--event-name", "api_requests", "--customer", "cus_new", "--value", str(value)],
            env=env,
        )
        assert sent.exit_code == 0, sent.output

    # the README's "see them on the meter-events topic" snippet, in miniature: a raw client on purpose,
    # the reader a user copies from the README (layering exception: it checks the README's own code)
    consumer = Consumer(
        {"bootstrap.servers": running_up["kafka bootstrap"], "group.id": "readme", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition("meter-events", p, OFFSET_BEGINNING) for p in range(12)])
    seen = []
    deadline = time.monotonic() + 30
    while len(seen) < 2 and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            seen.append(json.loads(msg.value()))
    consumer.close()
    assert sorted(e["payload"]["value"] for e in seen) == [3, 4]

    # the processor aggregated them; `meterstream usage` and the gateway's summaries agree
    now = int(time.time())
    start, end = now - now % 86400, now - now % 86400 + 86400
    usage = ["usage", "--meter", meter_id, "--customer", "cus_new", "--from", str(start), "--to", str(end), "--json"]
    wait_until(
        lambda: '"aggregated_value": 7' in runner.invoke(main, usage, env=env).output,
        "`meterstream usage` to show both events",
        interval=0.5,
    )

    client = stripe.StripeClient(
        running_up["api key"], base_addresses={"api": running_up["gateway"], "meter_events": running_up["gateway"]}
    )
    summaries = client.v1.billing.meters.event_summaries.list(
        meter_id, {"customer": "cus_new", "start_time": start, "end_time": end}
    )
    assert [s.aggregated_value for s in summaries.data] == [7]

    # and the sink forwarded both events to Stripe (the emulator), where the meter was created by event_name
    stripe_url = running_up["stripe"]
    emu = stripe.StripeClient(running_up["stripe key"], base_addresses={"api": stripe_url, "meter_events": stripe_url})

    def stripe_total() -> int | None:
        meters = [m for m in emu.v1.billing.meters.list().data if m.event_name == "api_requests"]
        if not meters:
            return None
        try:
            got = emu.v1.billing.meters.event_summaries.list(
                meters[0].id, {"customer": "cus_new", "start_time": start, "end_time": end}
            ).data
        except stripe.InvalidRequestError:  # "No such customer" until the sink delivered the first event
            return None
        return got[0].aggregated_value if got else None

    wait_until(lambda: stripe_total() == 7, "the emulator to count both events", timeout=90, interval=1.0)
    # the sink kept its delivery record (what `meterstream replay` relies on to never re-send old events)
    r = sync_redis_url(running_up["redis"], decode_responses=True)
    records = [v for key in r.scan_iter(match=f"{running_up['redis prefix']}:dlv:*") for v in r.hvals(key)]
    r.close()
    assert len(records) == 2 and all(v.startswith("d") for v in records), records

    # the dashboard's upload page `up` announced is served, to the API key as the dashboard's user name
    # (its behaviour: tests/gateway/test_upload_*.py)
    login = base64.b64encode(f"{running_up['api key']}:".encode()).decode()
    request = urllib.request.Request(running_up["upload usage"], headers={"Authorization": f"Basic {login}"})
    with urllib.request.urlopen(request, timeout=10) as page:
        assert page.status == 200 and 'type="file"' in page.read().decode()


def _listening(port: int) -> set[str]:
    """The local addresses listening on ``port`` (IPv4, from /proc/net/tcp: state 0A is LISTEN)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(addr))))
    return found


def test_up_is_on_loopback_and_valkey_wants_its_password(running_up: dict[str, str]) -> None:
    """Issue 13, item 6: the gateway listened on 0.0.0.0 while the banner said 127.0.0.1, and the embedded
    Valkey took commands from anyone local (who could forge a v2 session by writing its key)."""
    port = int(running_up["gateway"].rsplit(":", 1)[1])
    wait_until(lambda: _listening(port), "the gateway to listen", interval=0.2)  # it starts after the banner
    assert _listening(port) == {"127.0.0.1"}
    if cluster_wanted():
        return
    import redis

    url = running_up["redis"]
    open_door = redis.Redis.from_url(re.sub(r"//:[^@]*@", "//", url), socket_timeout=5)
    with pytest.raises(redis.AuthenticationError):
        open_door.set("ms:gw-session:forged", "9999999999")
    open_door.close()
    assert sync_redis_url(url).ping()
