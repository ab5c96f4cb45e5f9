"""``meterstream import`` into the real broker, through the real processor: exact aggregates, never
counted twice (re-import, forced re-import, interrupted and resumed import)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from processor.config import Settings
from processor.errors import UnreadableFileError
from processor.meters.model import Meter
from processor.ops.importer import Importer
from processor.ops.reader import RangeRead
from processor.windows import hour_start
from tests.ops.helpers import cli, run_processor
from tests.ops.test_reconcile import mirror
from tests.pipeline import put_meters, usage_snapshot
from topics import Topic

pytestmark = pytest.mark.integration

METER = Meter("mtr_imp", "Import", "imp_api", "sum", customer_key="account", created=1)


def write_csv(path: Path, rows: int, hour: int) -> int:
    """``rows`` rows in the ``hour`` starting then, spread over 3 customers (one repeated row pair, identical on purpose); their total."""
    lines = ["timestamp,event_name,payload_account,payload_value"]
    total = 0
    for i in range(rows):
        lines.append(f"{hour + i % 3600},imp_api,acct_{i % 3},{i % 7 + 1}")
        total += i % 7 + 1
    lines.append(lines[1])  # an identical row: a separate event (same content, next occurrence)
    total += 1
    path.write_text("\n".join(lines) + "\n", "utf-8")
    return total


def hour_total(client: redis.Redis, settings: Settings) -> int:
    snap = usage_snapshot(client, settings.redis_prefix)
    return sum(
        int(v) for k, h in snap.items() if k.startswith(":usage:{mtr_imp:") and k.endswith(":hour") for v in h.values()
    )


@pytest.fixture
def meter(settings: Settings, redis_client: redis.Redis) -> Meter:
    put_meters(settings, [METER], int(time.time() * 1000) - 60_000)
    mirror(redis_client, settings, METER)
    return METER


def test_import_csv_exactly_once(
    settings: Settings,
    redis_client: redis.Redis,
    meter: Meter,
    tmp_path: Path,
    read_topic: Callable[..., list[Any]],
    now: int,
) -> None:
    path = tmp_path / "usage.csv"
    total = write_csv(path, 300, hour_start(now) - 3600)
    first = cli(settings, "import", str(path), "-q")
    assert first.exit_code == 0, first.output
    assert "csv, 301 valid row(s), 0 invalid" in first.output and "imported 301 row(s)" in first.output
    records = read_topic(settings, Topic.EVENTS, expect=301)
    keys = {m.key() for m in records}
    assert keys == {b"acct_0", b"acct_1", b"acct_2"}  # keyed by the meter's customer key
    idents = [json.loads(m.value())["identifier"] for m in records]
    assert len(set(idents)) == 301 and all(i.startswith("imp_") for i in idents)
    run_processor(settings)
    assert hour_total(redis_client, settings) == total

    again = cli(settings, "import", str(path), "-q")
    assert again.exit_code == 0 and "already imported" in again.output

    (tmp_path / "usage.csv.meterstream-import").unlink()  # the state file is lost: Redis still knows
    assert "already imported" in cli(settings, "import", str(path), "-q").output

    forced = cli(settings, "import", str(path), "--force", "-q")  # sent again, same identifiers: duplicates
    assert forced.exit_code == 0 and "imported 301 row(s)" in forced.output
    run_processor(settings)
    assert hour_total(redis_client, settings) == total


def test_invalid_rows_are_reported_with_line_numbers(
    settings: Settings, meter: Meter, tmp_path: Path, read_topic: Callable[..., list[Any]], now: int
) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(
        json.dumps({"event_name": "imp_api", "payload": {"account": "a1", "value": "3"}, "timestamp": now})
        + "\n"
        + json.dumps({"event_name": "imp_api", "payload": {"value": "3"}, "timestamp": now})
        + "\n"
        + json.dumps({"event_name": "imp_api", "payload": {"account": "a1", "value": 1.5}})
        + "\n"
        + json.dumps(
            {"event_name": "imp_api", "payload": {"account": "a1", "value": 2}, "timestamp": now - 40 * 86_400}
        )
        + "\n",
        "utf-8",
    )
    refused = cli(settings, "import", str(path), "-q")
    assert refused.exit_code == 1, refused.output
    assert "line 2: Customer mapping key account not found in payload." in refused.output
    assert "line 3: Invalid payload[value]: must be a string or an integer, got float." in refused.output
    assert "line 4: Timestamp must be within the past 35 days." in refused.output
    assert "nothing sent" in refused.output
    assert sum(len(b) for b in RangeRead(settings, ["meter-events"]).messages()) == 0

    partial = cli(settings, "import", str(path), "--skip-invalid", "-q")
    assert partial.exit_code == 0 and "imported 1 row(s)" in partial.output
    assert len(read_topic(settings, Topic.EVENTS, expect=1)) == 1


def test_interrupted_import_resumes(
    settings: Settings, redis_client: redis.Redis, meter: Meter, tmp_path: Path, now: int
) -> None:
    last_hour = hour_start(now) - 3600
    path = tmp_path / "big.json"
    rows = [
        {
            "event_name": "imp_api",
            "payload": {"account": f"acct_{i % 5}", "value": i % 11},
            "timestamp": last_hour + i % 3600,
        }
        for i in range(10_000)
    ]
    path.write_text(json.dumps(rows), "utf-8")
    total = sum(r["payload"]["value"] for r in rows)  # type: ignore[index]

    class Interrupted(Exception):
        pass

    class Interrupting(Importer):
        """Stops (like Ctrl-C) after reading 5,000 rows, with records still in flight."""

        def events(self, started_at: int) -> Iterator[Any]:
            for i, item in enumerate(super().events(started_at)):
                if i == 5000:
                    raise Interrupted
                yield item

    job = Interrupting(settings, path, redis_client=redis_client)
    with pytest.raises(Interrupted):
        job.send()
    state = job.load_state()
    assert state is not None and state.finished_at is None and 0 < state.acked <= 5000

    resumed = cli(settings, "import", str(path), "-q")
    assert resumed.exit_code == 0, resumed.output
    assert f"({state.acked} acknowledged by an earlier run)" in resumed.output
    run_processor(settings)
    assert hour_total(redis_client, settings) == total


def test_values_the_processor_would_reject_are_reported_on_their_line(
    settings: Settings, redis_client: redis.Redis, meter: Meter, tmp_path: Path, now: int
) -> None:
    last_hour = hour_start(now) - 3600
    path = tmp_path / "values.csv"
    path.write_text(
        "timestamp,event_name,payload_account,payload_value\n"
        f"{last_hour},imp_api,acct_0,5\n"
        f"{last_hour},imp_api,acct_0,1.5\n"
        f"{last_hour},imp_api,acct_0,\n"
        f"{last_hour},imp_api,acct_0,1234567890123456\n"
        f"{last_hour},imp_api,acct_0,7.0\n",
        "utf-8",
    )
    report = Importer(settings, path, redis_client=redis_client).check()
    assert report.rows == 2  # 5 and 7.0 (a whole number written with a fraction, as Stripe accepts)
    assert [(e.line, e.message) for e in report.errors] == [
        (3, "Value key value is not a whole number."),
        (4, "Value key value not found in payload."),
        (5, "The value in the event payload can have at most 15 digits. Received 1234567890123456."),
    ]


def test_every_row_is_accounted_for_and_a_broken_file_is_refused_whole(
    settings: Settings, meter: Meter, tmp_path: Path, read_topic: Callable[..., list[Any]], now: int
) -> None:
    """Issue 13, item 3: rows after a CSV break are read (the break is one unread row); a JSON array the
    reader cannot finish is refused whole even with --skip-invalid, and nothing of it is sent."""
    path = tmp_path / "break.csv"
    rows = [f"{now},imp_api,a1,{v}" for v in (1, "9" * 200_000, 3, 4)]
    path.write_text("timestamp,event_name,payload_account,payload_value\n" + "\n".join(rows) + "\n", "utf-8")
    checked = Importer(settings, path, customer_key="account").check()
    assert (checked.rows, len(checked.errors), checked.unread, checked.broken) == (3, 1, 1, None)
    assert checked.errors[0].line == 3 and checked.errors[0].unread
    sent = cli(settings, "import", str(path), "--skip-invalid", "-q")
    assert sent.exit_code == 0 and "imported 3 row(s)" in sent.output, sent.output
    assert len(read_topic(settings, Topic.EVENTS, expect=3)) == 3

    broken = tmp_path / "broken.json"
    good = json.dumps({"event_name": "imp_api", "payload": {"account": "a2", "value": 1}, "timestamp": now})
    broken.write_text(f"[{good},\n{{oops}},\n{good}]", "utf-8")
    job = Importer(settings, broken, customer_key="account")
    assert job.check().broken is not None
    with pytest.raises(UnreadableFileError, match="line 2"):
        job.send()
    refused = cli(settings, "import", str(broken), "--skip-invalid", "-q")
    assert refused.exit_code != 0 and "nothing was sent" in refused.output, refused.output
    assert sum(len(b) for b in RangeRead(settings, ["meter-events"]).messages()) == 3
