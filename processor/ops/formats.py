"""Stripe's bulk meter-event file formats, parsed into ``meter-events`` values. Pure: no I/O beyond the file.

- **CSV** (Stripe Dashboard template): a header row; ``timestamp``, ``event_name``, optional
  ``identifier``, and one ``payload_<key>`` column per payload key (``payload_stripe_customer_id``,
  ``payload_value``...). An empty payload cell leaves the key out.
- **JSON**: an array of objects ``{event_name, payload, identifier?, timestamp?}``.
- **JSON Lines** (the S3 format): one such object per line; blank lines are skipped.

Unknown top-level keys of a JSON object are ignored and reported (:attr:`Row.ignored`): Stripe's own S3
example carries an ``"extra_key"`` beside the event, so files exported for Stripe must import as they
are. An unknown CSV column is still an error: a misspelt ``payload_`` column would lose data silently.

Timestamps (CSV cells, or JSON strings): unix seconds (``1732012345``; a fraction is floored), ISO 8601
with or without ``Z`` / an offset (``2024-11-19T10:32:25Z``, ``2024-11-19T12:32:25+02:00``,
``2024-11-19T10:32:25``), ``YYYY-MM-DD``, ``YYYY-MM-DD HH:MM[:SS]``, ``MM/DD/YYYY`` and
``MM/DD/YYYY HH:MM[:SS]``. A time without an offset is UTC.

Every row is reported with its line number (the line where the row starts), so an operator can fix the
file. :func:`row_identifier` gives rows without an identifier a deterministic one.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import IO, Any

from processor.limits import MAX_JSON_DEPTH, json_problem

__all__ = [
    "FORMATS",
    "MAX_LINE_CHARS",
    "Row",
    "detect_format",
    "iter_rows",
    "parse_timestamp",
    "row_digest",
    "row_identifier",
]

FORMATS = ("csv", "json", "jsonl")
#: A physical line longer than this (in characters) is an unread row, skipped without being held in memory;
#: it is far above any event (the processor takes records up to 256 KiB).
MAX_LINE_CHARS = 1 << 20
_UNIX = re.compile(r"^[+-]?[0-9]+(\.[0-9]+)?$")  # ASCII digits only (\d would take Arabic-Indic digits)
_DATETIME_FORMATS = (
    "%Y-%m-%d",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%m/%d/%Y",
    "%m/%d/%Y %H:%M",
    "%m/%d/%Y %H:%M:%S",
)
_EVENT_FIELDS = {"event_name", "payload", "identifier", "timestamp"}


@dataclass(frozen=True)
class Row:
    """One row of the file: its line, and either the event (``meter-events`` shape) or an error."""

    line: int
    event: dict[str, Any] | None
    error: str | None = None
    #: Unknown top-level keys of a JSON row that were ignored (sorted), for the import's report.
    ignored: tuple[str, ...] = ()
    #: The reader could not take this row (a CSV break, bytes that are not UTF-8); the rows after it are read.
    unread: bool = False
    #: The reader cannot go past this row: what follows is unknown, so the file is refused whole.
    broken: bool = False


def parse_timestamp(text: str) -> int:
    """Unix seconds from any of the supported spellings; ``ValueError`` names the text otherwise."""
    value = text.strip()
    if not value.isascii():  # datetime and Decimal would read non-ASCII digits as numbers
        raise ValueError(f"timestamp {text[:40]!r} must be written with ASCII characters")
    if _UNIX.match(value):
        try:
            return int(Decimal(value).to_integral_value(rounding="ROUND_FLOOR"))
        except InvalidOperation:
            pass
    iso = value[:-1] + "+00:00" if value.endswith(("Z", "z")) else value
    when: datetime | None = None
    try:
        when = datetime.fromisoformat(iso)
    except ValueError:
        for fmt in _DATETIME_FORMATS:
            try:
                when = datetime.strptime(value, fmt)
                break
            except ValueError:
                continue
    if when is None:
        raise ValueError(
            f"timestamp {text!r} is not unix seconds, ISO 8601, YYYY-MM-DD[ HH:MM[:SS]] or MM/DD/YYYY[ HH:MM[:SS]]"
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp())


def detect_format(path: Path) -> str:
    """By extension (.csv, .json, .jsonl/.ndjson), else by the first non-blank character."""
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix == ".json":
        return "json"
    if suffix in (".jsonl", ".ndjson"):
        return "jsonl"
    with path.open("rb") as fh:
        head = fh.read(4096).lstrip()
    if head.startswith(b"["):
        return "json"
    if head.startswith(b"{"):
        return "jsonl"
    return "csv"


def _row(line: int, obj: Any) -> Row:
    """A parsed JSON value as a row: the event with unknown keys ignored (and named), or the error."""
    problem = json_problem(obj)
    if problem is not None:  # before anything walks or prints the value
        return Row(line, None, f"{problem[0]} {problem[1]}")
    try:
        event = _normalise(obj)
    except ValueError as exc:
        return Row(line, None, str(exc))
    return Row(line, event, ignored=tuple(sorted(set(obj) - _EVENT_FIELDS)))


def _normalise(obj: Any) -> dict[str, Any]:
    """A JSON object of the file as a ``meter-events`` value (timestamps parsed, unknown keys left out);
    ``ValueError`` if it is not one."""
    if not isinstance(obj, dict):
        raise ValueError("expected an object with event_name and payload")
    event: dict[str, Any] = {"event_name": obj.get("event_name"), "payload": obj.get("payload")}
    if obj.get("identifier") not in (None, ""):
        event["identifier"] = obj["identifier"]
    ts = obj.get("timestamp")
    if isinstance(ts, str) and ts.strip():
        event["timestamp"] = parse_timestamp(ts)
    elif isinstance(ts, int) and not isinstance(ts, bool):
        event["timestamp"] = ts
    elif ts not in (None, ""):
        raise ValueError(f"timestamp must be unix seconds or a date/time string, got {ts!r}")
    return event


class _Unreadable(Exception):
    """A physical line the reader cannot take (not UTF-8, longer than :data:`MAX_LINE_CHARS`)."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(reason)
        self.line = line
        self.reason = reason


class _Lines:
    """The file's physical lines, decoded one at a time (a bad line is one unread row, not the end of the
    file), with a push-back so a CSV reader can start again right after a row it could not read.

    Lines end at ``\\n``, ``\\r\\n`` or a lone ``\\r`` and keep their ending (what the csv module wants, as
    with ``newline=""``); bytes that are not UTF-8 are decoded as surrogate escapes and make their line
    unread, never the whole file."""

    def __init__(self, fh: IO[bytes]) -> None:
        self._text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
        self.count = 0  # physical lines read from the file
        self._back: list[tuple[int, str | None]] = []
        #: the lines handed out since the current row started: (line number, text; None = too long)
        self.taken: list[tuple[int, str | None]] = []

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        number, line = self._back.pop() if self._back else self._read()
        self.taken.append((number, line))
        if line is None:
            raise _Unreadable(number, f"line {number} is longer than {MAX_LINE_CHARS:,} characters")
        try:
            line.encode("utf-8")  # surrogate escapes (bytes that were not UTF-8) cannot be encoded
        except UnicodeEncodeError:
            raise _Unreadable(number, f"line {number} is not UTF-8 text") from None
        return line

    def _read(self) -> tuple[int, str | None]:
        line = self._text.readline(MAX_LINE_CHARS + 1)
        if not line:
            raise StopIteration
        self.count += 1
        if len(line) > MAX_LINE_CHARS and not line.endswith(("\n", "\r")):
            while (more := self._text.readline(MAX_LINE_CHARS)) and not more.endswith(("\n", "\r")):
                pass  # skip the rest of the line without holding it
            return self.count, None
        return self.count, line

    def start_row(self) -> None:
        self.taken = []

    def reread_after_first(self) -> int:
        """Give back the current row's lines after its first (to be read again); its first line's number."""
        first = self.taken[0][0] if self.taken else self.count
        self._back.extend(reversed(self.taken[1:]))
        self.taken = []
        return first


def _csv_rows(lines: _Lines) -> Iterator[Row]:
    # strict: a quote that is never closed is an error at the end of the file, not a cell swallowing every
    # row after it (which would lose them silently).
    reader = csv.reader(lines, strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return
    except (csv.Error, _Unreadable) as exc:  # e.g. a cell over the csv module's field limit (131,072 characters)
        yield Row(1, None, f"unreadable CSV header: {exc}", broken=True)
        return
    columns = [h.strip() for h in header]
    for name in columns:
        if name not in ("timestamp", "event_name", "identifier") and not (
            name.startswith("payload_") and len(name) > len("payload_")
        ):
            yield Row(
                1,
                None,
                f"unknown column {name[:100]!r} (expected timestamp, event_name, identifier, payload_<key>)",
                broken=True,
            )
            return
    if "event_name" not in columns:
        yield Row(1, None, "the header has no event_name column", broken=True)
        return
    while True:
        lines.start_row()
        try:
            cells = next(reader)
        except StopIteration:
            return
        except (csv.Error, _Unreadable) as exc:
            # The row is unread; the lines after its first are read again by a fresh reader, so the rows
            # after the break are read and accounted for (a stray quote does not swallow them).
            reason = exc.reason if isinstance(exc, _Unreadable) else f"unreadable CSV ({exc})"
            yield Row(lines.reread_after_first(), None, reason, unread=True)
            reader = csv.reader(lines, strict=True)
            continue
        line = lines.taken[0][0] if lines.taken else lines.count
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(columns):
            yield Row(line, None, f"{len(cells)} cells, the header has {len(columns)}")
            continue
        obj: dict[str, Any] = {"payload": {}}
        for name, cell in zip(columns, cells, strict=True):
            if name.startswith("payload_"):
                if cell != "":
                    obj["payload"][name[len("payload_") :]] = cell
            elif cell.strip():
                obj[name] = cell.strip()
        try:
            yield Row(line, _normalise(obj))
        except ValueError as exc:
            yield Row(line, None, str(exc))


def _json_rows(fh: IO[bytes]) -> Iterator[Row]:
    data = fh.read()  # an array is read whole (use JSON Lines for very large files)
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        yield Row(line, None, f"line {line} is not UTF-8 text ({exc.reason})", broken=True)
        return
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if not text[pos : pos + 1] == "[":
        yield Row(1, None, "a JSON file must hold an array of events", broken=True)
        return
    pos += 1
    line, counted = 1, 0
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            yield Row(text.count("\n") + 1, None, "the array is not closed with ]", broken=True)
            return
        line += text.count("\n", counted, pos)
        counted = pos
        if text[pos] == "]":
            return
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            # Where the next element starts is unknown: the rows after the break cannot be read.
            yield Row(line, None, f"not valid JSON ({exc.msg}); the rest of the array cannot be read", broken=True)
            return
        except RecursionError:
            yield Row(
                line, None, f"nested more than {MAX_JSON_DEPTH} levels deep; the rest cannot be read", broken=True
            )
            return
        yield _row(line, obj)
        pos = end


def _jsonl_rows(lines: _Lines) -> Iterator[Row]:
    while True:
        try:
            raw = next(lines)
        except StopIteration:
            return
        except _Unreadable as exc:
            yield Row(exc.line, None, exc.reason, unread=True)
            continue
        number = lines.count
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            yield Row(number, None, f"not valid JSON ({exc.msg})")
            continue
        except RecursionError:
            yield Row(number, None, f"nested more than {MAX_JSON_DEPTH} levels deep")
            continue
        yield _row(number, obj)


def iter_rows(path: Path, fmt: str) -> Iterator[Row]:
    """Every row of the file, in order (UTF-8, a BOM allowed), each one accounted for: an event, an invalid
    row, an unread row (:attr:`Row.unread`: the reader could not take it, the rows after it are read), or
    a break the reader cannot get past (:attr:`Row.broken`, the last row: the file must be refused whole).
    CSV and JSON Lines are streamed."""
    with path.open("rb") as fh:
        if fmt == "json":
            yield from _json_rows(fh)
        elif fmt == "csv":
            yield from _csv_rows(_Lines(fh))
        else:
            yield from _jsonl_rows(_Lines(fh))


def row_digest(event: dict[str, Any]) -> str:
    """What a row says (event_name, payload, timestamp), as a digest: two rows are identical when equal."""
    canonical = json.dumps(
        {"event_name": event.get("event_name"), "payload": event.get("payload"), "timestamp": event.get("timestamp")},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        default=str,
    )
    return hashlib.blake2b(canonical.encode(), digest_size=15).hexdigest()


def row_identifier(event: dict[str, Any], occurrence: int) -> str:
    """A deterministic identifier for a row without one: the digest of what the row says (not of its
    position, so inserting or removing other rows changes nothing) plus how many identical rows came
    before it in the file (so identical rows stay distinct events). ``imp_`` + 30 hex characters."""
    digest = hashlib.blake2b(f"{row_digest(event)}#{occurrence}".encode(), digest_size=15).hexdigest()
    return f"imp_{digest}"
