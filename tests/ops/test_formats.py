"""Stripe's bulk file formats, parsed without a broker: timestamps, columns, line numbers, identifiers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.ops.formats import MAX_LINE_CHARS, detect_format, iter_rows, parse_timestamp, row_identifier

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


def test_csv_cell_over_the_field_limit_is_an_unread_row_and_the_rows_after_it_are_read(tmp_path: Path) -> None:
    """Issue 13, item 3: the reader stopped at this row and the valid rows after it were silently dropped."""
    path = tmp_path / "huge.csv"
    path.write_text("timestamp,event_name,payload_value\n1,a,1\n1,a," + "9" * 200_000 + "\n1,a,2\n", "utf-8")
    rows = list(iter_rows(path, "csv"))
    assert rows[0].event is not None and rows[0].line == 2
    assert rows[1].event is None and rows[1].unread and rows[1].line == 3 and "field limit" in (rows[1].error or "")
    assert rows[2].event is not None and rows[2].line == 4 and rows[2].event["payload"] == {"value": "2"}
    assert len(rows) == 3 and not any(r.broken for r in rows)


def test_csv_unclosed_quote_does_not_swallow_the_rows_after_it(tmp_path: Path) -> None:
    path = tmp_path / "quote.csv"
    path.write_text('timestamp,event_name,payload_value\n1,a,1\n1,a,"2\n1,a,3\n1,a,4\n', "utf-8")
    rows = list(iter_rows(path, "csv"))
    assert [(r.line, r.event is not None, r.unread) for r in rows] == [
        (2, True, False),
        (3, False, True),
        (4, True, False),
        (5, True, False),
    ]


def test_csv_unclosed_quote_over_the_field_limit(tmp_path: Path) -> None:
    """The issue's exact case: a quote never closed, in a file whose rest passes the field limit."""
    body = "".join(f"1,a,{i}\n" for i in range(30_000))  # ~250 KB after the quote
    path = tmp_path / "quote.csv"
    path.write_text('timestamp,event_name,payload_value\n1,a,"oops\n' + body, "utf-8")
    rows = list(iter_rows(path, "csv"))
    assert rows[0].unread and rows[0].line == 2
    assert [r.event["payload"]["value"] for r in rows[1:] if r.event] == [str(i) for i in range(30_000)]
    assert len(rows) == 30_001


def test_csv_and_jsonl_lines_that_are_not_utf8_are_unread_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_bytes(b"timestamp,event_name,payload_value\n1,a,1\n1,a,\xff\xfe\n1,a,3\n")
    rows = list(iter_rows(path, "csv"))
    assert [(r.line, r.event is not None, r.unread) for r in rows] == [
        (2, True, False),
        (3, False, True),
        (4, True, False),
    ]
    assert "not UTF-8" in (rows[1].error or "")
    path = tmp_path / "x.jsonl"
    path.write_bytes(
        b'{"event_name": "a", "payload": {"k": "v"}}\n\xff\xfe\n{"event_name": "b", "payload": {"k": "v"}}\n'
    )
    rows = list(iter_rows(path, "jsonl"))
    assert [(r.line, r.event is not None, r.unread) for r in rows] == [
        (1, True, False),
        (2, False, True),
        (3, True, False),
    ]


def test_overlong_lines_are_unread_without_being_held(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    with path.open("wb") as fh:
        fh.write(b'{"event_name": "a", "payload": {"k": "' + b"v" * (MAX_LINE_CHARS * 3) + b'"}}\n')
        fh.write(b'{"event_name": "b", "payload": {"k": "v"}}\n')
    rows = list(iter_rows(path, "jsonl"))
    assert rows[0].unread and rows[0].line == 1 and rows[1].event is not None and rows[1].line == 2


DEEP_JSON = '{"a":' * 1000 + "1" + "}" * 1000


def test_deeply_nested_json_rows(tmp_path: Path) -> None:
    """Issue 13, item 4: a RecursionError traceback. A JSON Lines row is invalid; a JSON array breaks."""
    path = tmp_path / "deep.jsonl"
    path.write_text(DEEP_JSON + "\n" + '{"event_name": "a", "payload": {"k": "v"}}\n' + "[" * 5000 + "\n", "utf-8")
    rows = list(iter_rows(path, "jsonl"))
    assert [(r.line, r.event is not None) for r in rows] == [(1, False), (2, True), (3, False)]
    assert all("nested" in (r.error or "") for r in (rows[0], rows[2]))
    path = tmp_path / "deep.json"
    path.write_text('[{"event_name": "a", "payload": {"k": "v"}},\n' + DEEP_JSON + "]", "utf-8")
    rows = list(iter_rows(path, "json"))
    assert rows[0].event is not None and rows[1].broken and rows[1].line == 2


def test_a_json_array_broken_in_the_middle_is_a_break(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text(
        '[{"event_name": "a", "payload": {"k": "v"}},\n{oops},\n{"event_name": "b", "payload": {}}]', "utf-8"
    )
    rows = list(iter_rows(path, "json"))
    assert rows[0].event is not None and rows[1].broken and rows[1].line == 2 and len(rows) == 2


@pytest.mark.parametrize("text", ["\u0665", "17000000\u0660\u0660", "2024-11-19T10:32:2\u0665Z"])
def test_timestamps_are_ascii_digits_only(text: str) -> None:
    with pytest.raises(ValueError, match="ASCII"):
        parse_timestamp(text)


def test_csv_with_cr_line_endings(tmp_path: Path) -> None:
    """Old spreadsheet exports end lines with a lone CR: each is still its own row."""
    path = tmp_path / "mac.csv"
    path.write_bytes(b"timestamp,event_name,payload_value\r1,a,1\r1,a,2\r")
    rows = list(iter_rows(path, "csv"))
    assert [(r.line, r.event["payload"]["value"] if r.event else None) for r in rows] == [(2, "1"), (3, "2")]


def test_csv_bom_and_crlf(tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes(b'\xef\xbb\xbftimestamp,event_name,payload_value\r\n1,a,1\r\n1,a,"2\r\n3"\r\n1,a,4\r\n')
    rows = list(iter_rows(path, "csv"))
    assert [(r.line, r.event["payload"]["value"] if r.event else None) for r in rows] == [
        (2, "1"),
        (3, "2\r\n3"),
        (5, "4"),
    ]
