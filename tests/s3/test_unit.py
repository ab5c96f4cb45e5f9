"""Pure parts of the S3 connector: which keys are usage files, s3:// URLs, the per-version decision."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from processor.ops.s3 import FINAL, REIMPORT_WINDOW_S, ObjectRecord, decide_object, object_format, parse_s3_url

T0 = 1_790_000_000


@pytest.mark.parametrize(
    ("key", "fmt"),
    [
        ("a.csv", "csv"),
        ("in/2026/usage.CSV", "csv"),
        ("x.json", "json"),
        ("x.jsonl", "jsonl"),
        ("x.ndjson", "jsonl"),
        ("x.txt", None),
        ("x.csv.gz", None),
        ("dir.csv/readme", None),
        ("in/", None),
        ("noext", None),
    ],
)
def test_object_format(key: str, fmt: str | None) -> None:
    assert object_format(key) == fmt


def test_parse_s3_url() -> None:
    assert parse_s3_url("s3://bucket/a/b c.csv") == ("bucket", "a/b c.csv")
    for bad in ("bucket/key", "s3://bucket", "s3://bucket/", "s3:///key", "http://b/k"):
        with pytest.raises(ValueError):
            parse_s3_url(bad)


def rec(etag: str = '"e1"', status: str = "imported", first_sent_at: int | None = T0, **kw: object) -> ObjectRecord:
    return ObjectRecord(etag, T0, status, T0, "csv", first_sent_at=first_sent_at, **kw)  # type: ignore[arg-type]


def test_decide_table() -> None:
    assert decide_object(None, '"e1"', T0) == "import"
    assert decide_object(rec(), '"e1"', T0 + 10 * REIMPORT_WINDOW_S) == "skip"  # same version: never again
    assert decide_object(rec(status="rejected", first_sent_at=None), '"e1"', T0) == "skip"  # not retried unchanged
    assert decide_object(rec(status="importing"), '"e1"', T0) == "import"  # interrupted: resume
    assert decide_object(rec(status="failed"), '"e1"', T0) == "import"  # transient: retry
    assert decide_object(rec(), '"e2"', T0 + REIMPORT_WINDOW_S) == "import"  # changed within the window
    assert decide_object(rec(), '"e2"', T0 + REIMPORT_WINDOW_S + 1) == "hold"
    assert decide_object(rec(), '"e2"', T0 + REIMPORT_WINDOW_S + 1, reimport_after_window=True) == "import"
    held = rec(status="held", held_etag='"e2"')
    assert decide_object(held, '"e2"', T0 + 2 * REIMPORT_WINDOW_S) == "skip"  # held once, reported once
    assert decide_object(held, '"e3"', T0 + 2 * REIMPORT_WINDOW_S) == "hold"  # a newer change is reported again
    assert decide_object(held, '"e1"', T0 + 2 * REIMPORT_WINDOW_S) == "skip"  # back to the imported version
    # Never sent anything (rejected versions only): any change may be imported, however late.
    assert decide_object(rec(status="rejected", first_sent_at=None), '"e2"', T0 + 9 * REIMPORT_WINDOW_S) == "import"


@given(
    status=st.sampled_from(["importing", "imported", "rejected", "failed", "held"]),
    sent_at=st.none() | st.integers(T0 - 10 * REIMPORT_WINDOW_S, T0),
    now=st.integers(T0, T0 + 10 * REIMPORT_WINDOW_S),
    same=st.booleans(),
    force=st.booleans(),
)
def test_decide_properties(status: str, sent_at: int | None, now: int, same: bool, force: bool) -> None:
    record = rec(status=status, first_sent_at=sent_at)
    action = decide_object(record, '"e1"' if same else '"e2"', now, reimport_after_window=force)
    if same:  # one version is imported at most once, whatever the clock or the flag
        assert action == ("skip" if status in FINAL else "import")
    elif sent_at is not None and now - sent_at > REIMPORT_WINDOW_S and not force:
        assert action == "hold"  # past the dedup window shared rows would count twice
    else:
        assert action == "import"


def test_record_round_trip_and_summary() -> None:
    record = rec(rows=3, rejected=2, errors=["line 2: bad", "line 5: worse"], ignored={"extra_key": 3})
    assert ObjectRecord.from_json(record.to_json()) == record
    assert ObjectRecord.from_json(record.to_json().replace('"at"', '"unknown": 1, "at"')) == record
    record.status, record.sent, record.resumed = "imported", 3, 1
    line = record.summary("s3://b/k.csv")
    assert line.startswith("s3://b/k.csv [csv, etag e1]: imported: 3 valid row(s), 2 rejected, 3 sent")
    assert "(1 by an earlier run)" in line and "'extra_key' in 3 row(s)" in line and "line 2: bad" in line
