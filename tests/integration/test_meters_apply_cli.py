"""``meters apply`` and the ``meterstream meters`` commands, end to end on the real broker and Redis."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from processor.cli import main
from processor.config import Settings
from processor.meters import MeterRegistry
from processor.meters.apply import apply_file

pytestmark = pytest.mark.integration

METERS_YAML = """
- display_name: API calls
  event_name: api_call
  default_aggregation: {formula: count}
- display_name: Tokens
  event_name: tokens
  default_aggregation: {formula: sum}
  event_time_window: hour
  customer_mapping: {event_payload_key: account, type: by_id}
  value_settings: {event_payload_key: n}
- display_name: Legacy
  event_name: legacy
  default_aggregation: {formula: last}
  status: inactive
"""


def actions(changes: list[Any]) -> list[tuple[str | None, str]]:
    return [(c.event_name, c.action) for c in changes]


def test_apply_creates_then_changes_nothing(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "meters.yaml"
    path.write_text(METERS_YAML)
    with MeterRegistry(settings) as registry:
        first = apply_file(registry, path)
        assert actions(first) == [
            ("api_call", "create"),
            ("tokens", "create"),
            ("legacy", "create"),
            ("legacy", "deactivate"),
        ]
        tokens = registry.find_by_event_name("tokens")
        assert tokens is not None and tokens.event_time_window == "hour" and tokens.customer_key == "account"
        legacy = registry.find_by_event_name("legacy")
        assert legacy is not None and legacy.status == "inactive"
        second = apply_file(registry, path)
        assert actions(second) == [("api_call", "unchanged"), ("tokens", "unchanged"), ("legacy", "unchanged")]
        assert len(registry.list()[0]) == 3


def test_apply_dry_run_changes_nothing(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "meters.json"
    entries = yaml.safe_load(METERS_YAML)
    path.write_text(json.dumps(entries))
    with MeterRegistry(settings) as registry:
        planned = apply_file(registry, path, dry_run=True)
        assert actions(planned) == [
            ("api_call", "create"),
            ("tokens", "create"),
            ("legacy", "create"),
            ("legacy", "deactivate"),
        ]
        assert registry.list()[0] == []
        apply_file(registry, path)
        entries[0]["display_name"] = "Calls"
        entries[2]["status"] = "active"
        path.write_text(json.dumps(entries))
        planned = apply_file(registry, path, dry_run=True)
        assert actions(planned) == [("api_call", "rename"), ("tokens", "unchanged"), ("legacy", "reactivate")]
        assert "'API calls' -> 'Calls'" in planned[0].detail
        calls = registry.find_by_event_name("api_call")
        assert calls is not None and calls.display_name == "API calls"  # the dry run left it alone
        applied = apply_file(registry, path)
        assert actions(applied) == actions(planned)
        calls = registry.find_by_event_name("api_call")
        legacy = registry.find_by_event_name("legacy")
        assert calls is not None and calls.display_name == "Calls"
        assert legacy is not None and legacy.status == "active"


def test_apply_reports_immutable_changes_and_continues(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "meters.yml"
    path.write_text(METERS_YAML)
    with MeterRegistry(settings) as registry:
        apply_file(registry, path)
        entries = yaml.safe_load(METERS_YAML)
        entries[0]["default_aggregation"] = {"formula": "sum"}
        entries[1]["display_name"] = "Tokens!"
        entries[1]["value_settings"] = {"event_payload_key": "m"}
        entries.append({"display_name": "New", "event_name": "new", "default_aggregation": {"formula": "sum"}})
        entries.append({"display_name": "Bad", "event_name": "bad", "default_aggregation": {"formula": "max"}})
        entries.append({"display_name": "Again", "event_name": "new", "default_aggregation": {"formula": "sum"}})
        path.write_text(yaml.safe_dump(entries))
        changes = apply_file(registry, path)
        assert actions(changes) == [
            ("api_call", "error"),
            ("tokens", "error"),
            ("legacy", "unchanged"),
            ("new", "create"),
            ("bad", "error"),
            ("new", "error"),
        ]
        assert 'default_aggregation[formula] is "count" on the meter, "sum" in the file' in changes[0].detail
        assert "immutable" in changes[0].detail
        assert 'value_settings[event_payload_key] is "n" on the meter, "m" in the file' in changes[1].detail
        assert "must be one of sum, count, or last" in changes[4].detail
        assert "appears twice" in changes[5].detail
        tokens = registry.find_by_event_name("tokens")
        assert tokens is not None and tokens.display_name == "Tokens"  # an entry in error changes nothing


def test_apply_refuses_a_file_that_is_not_a_list(tmp_path: Path, settings: Settings) -> None:
    from processor.errors import InvalidRequestError

    path = tmp_path / "meters.yaml"
    path.write_text("display_name: x\n")
    with MeterRegistry(settings) as registry, pytest.raises(InvalidRequestError) as err:
        apply_file(registry, path)
    assert "must hold a list" in err.value.message


# ---- CLI --------------------------------------------------------------------------------------------


@pytest.fixture
def cli(settings: Settings) -> Callable[..., Result]:
    runner = CliRunner(env=settings.to_env())

    def run(*args: str) -> Result:
        return runner.invoke(main, ["meters", *args], catch_exceptions=False)

    return run


def test_cli_lifecycle(cli: Callable[..., Result]) -> None:
    created = cli(
        "create", "--event-name", "cli_calls", "--display-name", "CLI calls", "--formula", "sum", "--window", "day"
    )
    assert created.exit_code == 0, created.output
    meter = json.loads(created.stdout)
    assert meter["object"] == "billing.meter" and meter["event_time_window"] == "day"
    assert meter["customer_mapping"] == {"event_payload_key": "stripe_customer_id", "type": "by_id"}
    meter_id = meter["id"]

    shown = cli("show", meter_id)
    assert shown.exit_code == 0 and json.loads(shown.stdout) == meter

    listed = cli("list")
    assert listed.exit_code == 0
    header, row = listed.stdout.splitlines()[:2]
    assert header.split() == ["ID", "EVENT_NAME", "FORMULA", "WINDOW", "STATUS", "DISPLAY_NAME"]
    assert row.split()[:5] == [meter_id, "cli_calls", "sum", "day", "active"] and row.endswith("CLI calls")

    renamed = cli("rename", meter_id, "Calls via CLI")
    assert renamed.exit_code == 0 and json.loads(renamed.stdout)["display_name"] == "Calls via CLI"
    off = cli("deactivate", meter_id)
    assert off.exit_code == 0 and json.loads(off.stdout)["status"] == "inactive"
    listed = cli("list", "--status", "active", "--json")
    assert json.loads(listed.stdout) == {"object": "list", "data": [], "has_more": False, "url": "/v1/billing/meters"}
    on = cli("reactivate", meter_id)
    assert on.exit_code == 0 and json.loads(on.stdout)["status_transitions"] == {"deactivated_at": None}

    taken = cli("create", "--event-name", "cli_calls", "--display-name", "Again", "--formula", "count")
    assert taken.exit_code == 1 and "error: A meter with event_name 'cli_calls' already exists" in taken.stderr
    missing = cli("show", "mtr_nope")
    assert missing.exit_code == 1 and "No such billing meter: 'mtr_nope'" in missing.stderr
    too_long = cli("rename", meter_id, "x" * 251)
    assert too_long.exit_code == 1 and "at most 250 characters" in too_long.stderr

    synced = cli("sync")
    assert synced.exit_code == 0 and "meters on the topic: 1" in synced.stdout


def test_cli_list_pages(cli: Callable[..., Result]) -> None:
    for i in range(3):
        assert cli("create", "--event-name", f"p{i}", "--display-name", f"P{i}", "--formula", "count").exit_code == 0
    page = json.loads(cli("list", "--limit", "2", "--json").stdout)
    assert len(page["data"]) == 2 and page["has_more"] is True
    table = cli("list", "--limit", "2").stdout
    assert f"(more: --starting-after {page['data'][1]['id']})" in table
    rest = json.loads(cli("list", "--limit", "2", "--starting-after", page["data"][1]["id"], "--json").stdout)
    assert len(rest["data"]) == 1 and rest["has_more"] is False


def test_cli_apply(cli: Callable[..., Result], tmp_path: Path) -> None:
    path = tmp_path / "meters.yaml"
    path.write_text(METERS_YAML)
    dry = cli("apply", str(path), "--dry-run")
    assert dry.exit_code == 0
    assert dry.stdout.splitlines()[0].startswith("(dry run) create")
    assert json.loads(cli("list", "--json").stdout)["data"] == []

    first = cli("apply", str(path))
    assert first.exit_code == 0 and first.stdout.count("create") == 3
    second = cli("apply", str(path))
    assert second.exit_code == 0
    assert [line.split()[0] for line in second.stdout.splitlines()] == ["unchanged"] * 3

    entries = yaml.safe_load(METERS_YAML)
    entries[1]["event_time_window"] = "day"
    path.write_text(yaml.safe_dump(entries))
    bad = cli("apply", str(path))
    assert bad.exit_code == 1
    assert (
        "error      tokens" in bad.stdout
        and 'event_time_window is "hour" on the meter, "day" in the file' in bad.stdout
    )
    assert "1 entry failed" in bad.stderr
