"""Issue 13: hypothesis over the v1 form decoder and the CSV / JSON / JSON Lines readers of imports and
uploads. Whatever the input: no exception but Stripe's 400 from the decoder, and from the readers a row for
every line that holds one; valid rows among garbage are read exactly (same values, same lines)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from processor.errors import InvalidRequestError
from processor.ops.formats import iter_rows
from processor.wire.forms import decode_form

FUZZ = settings(max_examples=300, deadline=None)

_values = st.integers(-(10**12), 10**12)
_customers = st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=10)
#: Garbage that stays on its own line (no newline, and no quote: a quote may legitimately join CSV lines).
_junk_line = st.binary(max_size=60).map(lambda b: b.replace(b"\n", b"").replace(b"\r", b"").replace(b'"', b""))


@FUZZ
@given(st.text(max_size=300))
def test_decode_form_answers_a_dict_or_stripes_400(text: str) -> None:
    try:
        decoded = decode_form(text)
    except InvalidRequestError as err:
        assert err.http_status == 400 and err.message
    else:
        assert isinstance(decoded, dict)


@FUZZ
@given(st.binary(max_size=300))
def test_decode_form_of_any_bytes(raw: bytes) -> None:
    try:
        decode_form(raw.decode("utf-8", "surrogateescape"))
    except InvalidRequestError as err:
        assert err.http_status == 400


def _write(data: bytes, suffix: str) -> Path:
    with tempfile.NamedTemporaryFile(suffix=suffix, delete=False) as fh:
        fh.write(data)
    return Path(fh.name)


@FUZZ
@given(st.lists(st.one_of(st.tuples(_customers, _values), _junk_line), max_size=30), st.sampled_from(["csv", "jsonl"]))
def test_valid_rows_among_garbage_lines_are_read_exactly(lines: list[tuple[str, int] | bytes], fmt: str) -> None:
    out: list[bytes] = [b"timestamp,event_name,payload_stripe_customer_id,payload_value"] if fmt == "csv" else []
    want: dict[int, tuple[str, str]] = {}
    for item in lines:
        if isinstance(item, tuple):
            customer, value = item
            if fmt == "csv":
                out.append(f"1700000000,ev,{customer},{value}".encode())
            else:
                row = {"event_name": "ev", "payload": {"stripe_customer_id": customer, "value": str(value)}}
                out.append(json.dumps(row).encode())
            want[len(out)] = (customer, str(value))
        else:
            out.append(item)
    path = _write(b"\n".join(out) + b"\n", "." + fmt)
    try:
        rows = list(iter_rows(path, fmt))
    finally:
        path.unlink()
    got = {r.line: (r.event["payload"]["stripe_customer_id"], r.event["payload"]["value"]) for r in rows if r.event}
    assert {line: got.get(line) for line in want} == want  # every valid row, with its values, on its line
    assert not any(r.broken for r in rows)
    assert len({r.line for r in rows}) == len(rows)  # one row per line at most
    assert all(1 <= r.line <= len(out) for r in rows)


@FUZZ
@given(st.binary(max_size=400), st.sampled_from(["csv", "json", "jsonl"]))
def test_any_bytes_are_read_without_an_exception(data: bytes, fmt: str) -> None:
    path = _write(data, "." + fmt)
    try:
        rows = list(iter_rows(path, fmt))
    finally:
        path.unlink()
    broken = [r for r in rows if r.broken]
    assert len(broken) <= 1 and (not broken or rows[-1] is broken[0])  # a break is the last row
    assert all(r.event is not None or r.error for r in rows)  # every row not read says why


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.tuples(_customers, _values),
            st.recursive(
                st.none() | st.integers() | st.text(max_size=5),
                lambda x: st.lists(x, max_size=3) | st.dictionaries(st.text(max_size=3), x, max_size=3),
            ),
        ),
        max_size=20,
    )
)
def test_json_array_elements_are_counted_exactly(items: list[object]) -> None:
    elements: list[object] = []
    want = []
    for item in items:
        if isinstance(item, tuple):
            customer, value = item
            elements.append({"event_name": "ev", "payload": {"stripe_customer_id": customer, "value": value}})
            want.append((customer, value))
        else:
            elements.append(item)
    path = _write(json.dumps(elements).encode(), ".json")
    try:
        rows = list(iter_rows(path, "json"))
    finally:
        path.unlink()
    assert len(rows) == len(elements) and not any(r.broken for r in rows)
    got = [
        (r.event["payload"]["stripe_customer_id"], r.event["payload"]["value"])
        for r in rows
        if r.event
        and r.event["event_name"] == "ev"
        and isinstance(r.event["payload"], dict)
        and "value" in r.event["payload"]
    ]
    assert [g for g in got if g in want] == want
