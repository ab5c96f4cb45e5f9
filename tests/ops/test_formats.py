"""Stripe's bulk file formats, parsed without a broker: timestamps, columns, line numbers, identifiers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.ops.formats import detect_format, iter_rows, parse_timestamp, row_identifier

T = 1_732_012_345  # 2024-11-19T10:32:25Z


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1732012345", T),
        (" 1732012345 ", T),
        ("1732012345.9", T),  # a fraction is floored
        ("2024-11-19T10:32:25Z", T),
        ("2024-11-19T10:32:25z", T),
        ("2024-11-19T10:32:25", T),  # no offset: UTC
        ("2024-11-19T12:32:25+02:00", T),
        ("2024-11-19T10:32:25.500Z", T),
        ("2024-11-19 10:32:25", T),
        ("2024-11-19 10:32", T - 25),
        ("2024-11-19", T - 10 * 3600 - 32 * 60 - 25),
        ("11/19/2024", T - 10 * 3600 - 32 * 60 - 25),
        ("11/19/2024 10:32:25", T),
        ("11/19/2024 10:32", T - 25),
    ],
)
def test_timestamp_formats(text: str, expected: int) -> None:
    assert parse_timestamp(text) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "2024-13-01", "19/11/2024", "1e9", "12:00"])
def test_bad_timestamps_name_the_text(text: str) -> None:
    with pytest.raises(ValueError, match="timestamp"):
        parse_timestamp(text)


def test_dashboard_csv(tmp_path: Path) -> None:
    path = tmp_path / "usage.csv"
    path.write_text(
        "\ufefftimestamp,event_name,payload_stripe_customer_id,payload_value,payload_region\n"
        "2024-09-25,ai_search_api,cus_1,400,\n"
        "\n"
        '09/26/2024,ai_search_api,cus_2,600,"eu\nwest"\n'  # a quoted cell spanning two lines
        "2024-09-27T00:00:00Z,cpu,cus_3,600,us\n"
        "not a time,cpu,cus_3,1,us\n"
        "2024-09-27,cpu,cus_3\n",
        "utf-8",
    )
    assert detect_format(path) == "csv"
    rows = list(iter_rows(path, "csv"))
    assert [r.line for r in rows] == [2, 4, 6, 7, 8]
    assert rows[0].event == {
        "event_name": "ai_search_api",
        "payload": {"stripe_customer_id": "cus_1", "value": "400"},
        "timestamp": 1727222400,
    }
    assert rows[1].event is not None and rows[1].event["payload"]["region"] == "eu\nwest"
    assert rows[2].event is not None and rows[2].event["timestamp"] == 1727395200
    assert rows[3].error is not None and "not a time" in rows[3].error
    assert rows[4].error == "3 cells, the header has 5"


def test_csv_unknown_column(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("timestamp,event_name,customer\n1,a,b\n", "utf-8")
    rows = list(iter_rows(path, "csv"))
    assert rows[0].line == 1 and "unknown column 'customer'" in (rows[0].error or "")


def test_json_array_line_numbers(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    path.write_text(
        '[\n  {"event_name": "a", "payload": {"stripe_customer_id": "c", "value": 3}, "timestamp": 1732012345},\n'
        '  {"event_name": "a", "payload": {"stripe_customer_id": "c"},\n   "identifier": "x1", "timestamp": "2024-11-19"},\n'
        '  {"event_name": "a", "payload": {}, "extra": 1},\n'
        "  [1]\n]\n",
        "utf-8",
    )
    rows = list(iter_rows(path, detect_format(path)))
    assert [r.line for r in rows] == [2, 3, 5, 6]
    assert rows[1].event == {
        "event_name": "a",
        "payload": {"stripe_customer_id": "c"},
        "identifier": "x1",
        "timestamp": 1731974400,
    }
    # Unknown top-level keys are ignored and named (Stripe's S3 example carries an "extra_key").
    assert rows[2].error is None and rows[2].event == {"event_name": "a", "payload": {}}
    assert rows[2].ignored == ("extra",) and rows[1].ignored == ()
    assert "expected an object" in (rows[3].error or "")


def test_jsonl_and_sniffing(tmp_path: Path) -> None:
    path = tmp_path / "export"
    path.write_text('{"event_name": "a", "payload": {"k": "v"}}\n\n{broken\n', "utf-8")
    assert detect_format(path) == "jsonl"
    rows = list(iter_rows(path, "jsonl"))
    assert [(r.line, r.error is None) for r in rows] == [(1, True), (3, False)]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"event_name": "a", "payload": {"k": "v"}}\n\xff\xfe\n')
    rows = list(iter_rows(path, "jsonl"))
    assert rows[-1].error is not None and "UTF-8" in rows[-1].error


events = st.fixed_dictionaries(
    {
        "event_name": st.sampled_from(["a", "b"]),
        "payload": st.fixed_dictionaries(
            {"stripe_customer_id": st.sampled_from(["c1", "c2"]), "value": st.integers(0, 3)}
        ),
        "timestamp": st.integers(1_700_000_000, 1_700_000_003),
    }
)


def ids(rows: list[dict[str, object]]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for row in rows:
        key = json.dumps(row, sort_keys=True)
        out.append(row_identifier(row, seen.get(key, 0)))
        seen[key] = seen.get(key, 0) + 1
    return out


@given(st.lists(events, max_size=30), events, st.integers(0, 30))
def test_identifiers_survive_inserted_rows(rows: list[dict[str, object]], new: dict[str, object], at: int) -> None:
    """Inserting a row keeps every identifier of the original file (as a set: identical rows share their
    numbering), and adds exactly one new identifier; identical rows never share an identifier."""
    before = ids(rows)
    after = ids([*rows[:at], new, *rows[at:]])
    assert len(set(before)) == len(before)
    assert set(before) <= set(after) and len(set(after) - set(before)) == 1


@given(st.lists(events, max_size=20))
def test_identifiers_do_not_depend_on_order(rows: list[dict[str, object]]) -> None:
    assert set(ids(rows)) == set(ids(list(reversed(rows))))


def test_csv_cell_over_the_field_limit_is_a_row_error_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "huge.csv"
    path.write_text("timestamp,event_name,payload_value\n1,a,1\n1,a," + "9" * 200_000 + "\n1,a,2\n", "utf-8")
    rows = list(iter_rows(path, "csv"))
    assert rows[0].event is not None and rows[0].line == 2
    assert rows[1].event is None and rows[1].line == 3 and "unreadable CSV" in (rows[1].error or "")
    assert len(rows) == 2  # the reader stops: where the next row starts is unknown
