"""``meterstream events send|cancel`` through click's CliRunner against the real broker."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from processor.cli import main
from processor.config import Settings
from topics import Topic

pytestmark = pytest.mark.integration

ReadTopic = Callable[..., list[Any]]


def _run(settings: Settings, *args: str) -> Result:
    return CliRunner().invoke(main, ["events", *args], env=settings.to_env(), catch_exceptions=False)


def test_send_prints_identifier_and_delivered(settings: Settings, read_topic: ReadTopic) -> None:
    result = _run(
        settings,
        "send",
        "--event-name",
        "api_requests",
        "--customer",
        "cus_1",
        "--value",
        "25",
        "--payload",
        "region=eu",
        "--payload",
        "zip=007",
        "--payload",
        "delta=-3",
    )
    assert result.exit_code == 0, result.output
    ident, delivered = result.stdout.splitlines()
    assert uuid.UUID(ident).version == 4
    assert delivered == f"delivered 1 event(s) to {settings.topic_prefix}meter-events"

    [msg] = read_topic(settings, Topic.EVENTS, expect=1)
    assert msg.key() == b"cus_1"
    value = json.loads(msg.value())
    assert value["identifier"] == ident
    assert isinstance(value["timestamp"], int)
    # ints stay ints when they are canonical ints; "007" keeps its text
    assert value["payload"] == {"stripe_customer_id": "cus_1", "value": 25, "region": "eu", "zip": "007", "delta": -3}


def test_send_with_identifier_timestamp_and_keys(settings: Settings, read_topic: ReadTopic) -> None:
    result = _run(
        settings,
        "send",
        "--event-name",
        "e",
        "--customer",
        "acct_1",
        "--customer-key",
        "account",
        "--value",
        "1.5",
        "--value-key",
        "gb",
        "--identifier",
        "evt-1",
        "--timestamp",
        "1700000000",
    )
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "evt-1"
    [msg] = read_topic(settings, Topic.EVENTS, expect=1)
    assert msg.key() == b"acct_1"
    assert json.loads(msg.value()) == {
        "event_name": "e",
        "payload": {"gb": "1.5", "account": "acct_1"},
        "identifier": "evt-1",
        "timestamp": 1700000000,
    }


def test_send_count(settings: Settings, read_topic: ReadTopic) -> None:
    result = _run(settings, "send", "--event-name", "e", "--customer", "cus_1", "--count", "3")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1].startswith("delivered 3 event(s)")
    messages = read_topic(settings, Topic.EVENTS, expect=3)
    assert sorted(json.loads(m.value())["identifier"] for m in messages) == sorted(lines[:3])
    assert len(set(lines[:3])) == 3


def test_send_file(settings: Settings, read_topic: ReadTopic, tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    lines = [
        {"event_name": "e", "payload": {"stripe_customer_id": "cus_1", "value": 1}, "identifier": "f-1"},
        {"event_name": "e", "payload": {"stripe_customer_id": "cus_2", "value": "2"}, "timestamp": 1700000000},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n", encoding="utf-8")
    result = _run(settings, "send", "--file", str(path))
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[0] == "f-1" and out[-1].startswith("delivered 2 event(s)")
    by_key = {m.key(): json.loads(m.value()) for m in read_topic(settings, Topic.EVENTS, expect=2)}
    assert by_key[b"cus_1"]["identifier"] == "f-1"
    assert by_key[b"cus_2"]["timestamp"] == 1700000000
    assert by_key[b"cus_2"]["identifier"] == out[1]


def test_cancel(settings: Settings, read_topic: ReadTopic) -> None:
    result = _run(settings, "cancel", "--event-name", "e", "--identifier", "evt-1")
    assert result.exit_code == 0, result.output
    assert result.stdout == f"cancellation of evt-1 delivered to {settings.topic_prefix}meter-event-adjustments\n"
    [msg] = read_topic(settings, Topic.ADJUSTMENTS, expect=1)
    assert msg.key() == b"evt-1"
    assert json.loads(msg.value()) == {"event_name": "e", "type": "cancel", "cancel": {"identifier": "evt-1"}}


def test_errors_are_clean_messages_and_send_nothing(settings: Settings, read_topic: ReadTopic, tmp_path: Path) -> None:
    bad_file = tmp_path / "bad.jsonl"
    bad_file.write_text(
        json.dumps({"event_name": "e", "payload": {"stripe_customer_id": "cus_1"}})
        + "\n"
        + json.dumps({"event_name": "e", "payload": {"stripe_customer_id": "cus_1", "v": 1.5}})
        + "\n",
        encoding="utf-8",
    )
    cases: list[tuple[list[str], str]] = [
        (["send", "--event-name", "", "--customer", "cus_1"], "error: You passed an empty string for 'event_name'"),
        (["send", "--event-name", "x" * 101, "--customer", "cus_1"], "must be at most 100 characters"),
        (["send", "--event-name", "e", "--customer", "cus_1", "--payload", "novalue"], "expected key=value"),
        (["send", "--event-name", "e"], "Missing option '--customer'"),
        (["send", "--event-name", "e", "--customer", "c", "--identifier", "i", "--count", "2"], "--identifier"),
        (["send", "--file", str(bad_file)], "bad.jsonl line 2: Invalid payload[v]: must be a string or an integer"),
        (["send", "--file", str(bad_file), "--customer", "c"], "--file cannot be combined with --customer"),
        (["cancel", "--event-name", "e", "--identifier", ""], "cancel[identifier]"),
    ]
    for args, expected in cases:
        result = _run(settings, *args)
        assert result.exit_code != 0, args
        assert expected in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.output
    # The valid first line of bad.jsonl was not sent either: only this marker is on the topic.
    assert _run(settings, "send", "--event-name", "marker", "--customer", "cus_1", "--identifier", "m").exit_code == 0
    assert [json.loads(m.value())["identifier"] for m in read_topic(settings, Topic.EVENTS)] == ["m"]
