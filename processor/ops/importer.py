"""``meterstream import FILE``: Stripe's bulk formats into ``meter-events``, exactly once, resumable.

Two passes over the file:

1. **Check.** Every row is parsed (:mod:`.formats`) and validated as the producer SDK validates events
   (Stripe-shaped messages), plus what would certainly be rejected later: no customer in the payload (the
   meter's customer key, looked up in the Redis meter mirror), a timestamp outside Stripe's window (35
   days back, 5 minutes ahead). Errors carry line numbers; nothing is sent while any row is invalid
   unless ``skip_invalid``.
2. **Send.** Valid rows are produced in file order (key = customer) with an idempotent producer; rows
   without an identifier get :func:`~.formats.row_identifier` (content digest + occurrence), rows without
   a timestamp the time the import first started — so a resumed or repeated import sends the very same
   events.

Exactly once, in layers: within a run the producer is idempotent; across an interruption the *state*
(``FILE.meterstream-import`` next to the input, or ``--state``, and a copy in Redis under
``Keys.import_state(digest)``) remembers how many leading rows Kafka acknowledged, and the rerun
starts there (rows acknowledged out of order beyond that point are resent with the same identifiers,
which the processor drops as duplicates within 24 h); a finished import is refused unless forced.

Callers that import the same *source* more than once (the S3 connector: a re-uploaded object) pass
``default_timestamp`` so rows without a timestamp keep one time across versions (their identifiers never
depend on it: the digest covers the row as written), and ``stop`` to end a send early with its progress saved.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message

from processor.aggregator.validate import meter_value
from processor.config import Settings
from processor.errors import EventValidationError, KafkaDeliveryError, UnreadableFileError
from processor.events.schema import check_event_shape
from processor.kafka.produce import AckedProducer, RecordTooLargeError
from processor.limits import TIMESTAMP_FUTURE_S, TIMESTAMP_PAST_S, customer_problem
from processor.meters.model import DEFAULT_CUSTOMER_KEY, Meter
from processor.ops.formats import detect_format, iter_rows, row_digest, row_identifier
from processor.state.keys import OPS_RECORD_TTL_S, Keys
from topics import Topic, topic_name

__all__ = ["ImportReport", "ImportState", "Importer", "RowError"]

#: How often the state is written while sending (and always at the end or on interruption).
SAVE_EVERY_S = 1.0


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class RowError:
    """A row that will not be sent. ``column``/``cell``: the file's column at fault and what the row holds
    there (``""`` for an empty or missing cell), when one column is at fault — so the upload page and the
    CLI can show the bad cell, not only the rule it breaks."""

    line: int
    message: str
    column: str | None = None
    cell: str | None = None
    #: The reader could not take the row (a CSV break, bytes that are not UTF-8): "unread", not "invalid".
    unread: bool = False


@dataclass
class ImportState:
    """What survives an interruption. ``acked``: leading valid rows the broker acknowledged."""

    digest: str
    started_at: int
    acked: int = 0
    rows: int = 0
    finished_at: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> ImportState:
        data = json.loads(text)
        return cls(
            str(data["digest"]),
            int(data["started_at"]),
            int(data.get("acked", 0)),
            int(data.get("rows", 0)),
            data.get("finished_at"),
        )


@dataclass
class ImportReport:
    fmt: str
    rows: int = 0
    errors: list[RowError] = field(default_factory=list)
    skipped_done: int = 0  # rows a previous run already delivered
    sent: int = 0
    already_imported: ImportState | None = None
    #: Unknown top-level JSON keys that were ignored → how many rows carried them (from :meth:`Importer.check`).
    ignored: dict[str, int] = field(default_factory=dict)
    #: ``send`` stopped early because ``stop()`` said so; the state holds the progress.
    interrupted: bool = False
    #: Where the reader could not go on (also in ``errors``): the file is refused whole, nothing is sent.
    broken: RowError | None = None

    @property
    def unread(self) -> int:
        """Rows the reader could not take (counted in ``errors`` too, each with its line and reason)."""
        return sum(1 for e in self.errors if e.unread)


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class Importer:
    """One import of one file. ``redis_client`` (optional) holds the meter mirror and a copy of the state."""

    def __init__(
        self,
        settings: Settings,
        path: Path,
        *,
        fmt: str | None = None,
        state_path: Path | None = None,
        customer_key: str | None = None,
        redis_client: Any = None,
        now: Callable[[], float] = time.time,
        default_timestamp: int | None = None,
    ) -> None:
        self.settings = settings
        self.path = path
        self.fmt = fmt or detect_format(path)
        self.state_path = state_path or path.with_name(path.name + ".meterstream-import")
        self.customer_key = customer_key
        self.redis = redis_client
        self.keys = Keys(settings.redis_prefix)
        self._now = now
        self._meters: dict[str, Meter | None] = {}
        self._ignored: Counter[str] = Counter()
        #: The timestamp of rows without one; None: the time this file's import first started (the state's).
        self.default_timestamp = default_timestamp
        self.digest = file_digest(path)
        #: Where the reader cannot go on, once a whole pass over the rows (check) has looked.
        self._break: RowError | None = None
        self._break_known = False

    def _started_at(self, state: ImportState | None) -> int:
        if self.default_timestamp is not None:
            return self.default_timestamp
        return state.started_at if state is not None else int(self._now())

    # ---- state ------------------------------------------------------------------------------------
    def load_state(self) -> ImportState | None:
        """The furthest state of this file's imports (state file or Redis), or None."""
        found: list[ImportState] = []
        if self.state_path.exists():
            state = ImportState.from_json(self.state_path.read_text("utf-8"))
            if state.digest == self.digest:
                found.append(state)
        if self.redis is not None:
            raw = self.redis.get(self.keys.import_state(self.digest))
            if raw is not None:
                found.append(ImportState.from_json(raw))
        if not found:
            return None
        return max(found, key=lambda s: (s.finished_at is not None, s.acked))

    def save_state(self, state: ImportState) -> None:
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(state.to_json(), "utf-8")
        os.replace(tmp, self.state_path)
        if self.redis is not None:
            self.redis.set(self.keys.import_state(self.digest), state.to_json(), ex=OPS_RECORD_TTL_S)

    # ---- pass 1 -----------------------------------------------------------------------------------
    def _meter(self, event_name: str) -> Meter | None:
        """The meter of ``event_name`` from the Redis mirror (cached), or None when unknown here."""
        if event_name not in self._meters:
            meter: Meter | None = None
            if self.redis is not None:
                meter_id = self.redis.hget(self.keys.meter_names, event_name)
                raw = self.redis.hget(self.keys.meters, meter_id) if meter_id is not None else None
                meter = Meter.from_json(raw) if raw is not None else None
            self._meters[event_name] = meter
        return self._meters[event_name]

    def _customer_key(self, event_name: str) -> str:
        if self.customer_key:
            return self.customer_key
        found = self._meter(event_name)
        return found.customer_key if found is not None else DEFAULT_CUSTOMER_KEY

    def _value_key(self, event_name: str) -> str:
        found = self._meter(event_name)
        return found.value_key if found is not None else "value"

    def _value_error(self, event_name: str, payload: dict[str, Any]) -> str | None:
        """What the processor would reject about the row's value, with its message, when the meter is known:
        a row the processor is certain to reject is reported on its line instead of counted as valid."""
        meter = self._meter(event_name)
        if meter is None or meter.formula == "count":
            return None
        parsed = meter_value(meter, payload)
        return parsed[1] if isinstance(parsed, tuple) else None

    def events(self, started_at: int) -> Iterator[tuple[int, str | None, dict[str, Any] | None, RowError | None]]:
        """(line, customer, the value to produce, or the error) per row, identifiers and timestamps filled."""
        occurrences: dict[str, int] = {}
        now = int(self._now())
        for row in iter_rows(self.path, self.fmt):
            if row.broken:
                self._break = RowError(row.line, row.error or "unreadable")
            if row.event is None:
                yield row.line, None, None, RowError(row.line, row.error or "invalid row", unread=row.unread)
                continue
            self._ignored.update(row.ignored)
            event = dict(row.event)
            try:
                value = check_event_shape(
                    event.get("event_name"), event.get("payload"), event.get("identifier"), event.get("timestamp")
                )
            except EventValidationError as exc:
                yield row.line, None, None, RowError(row.line, exc.message)
                continue
            if "identifier" not in value:
                digest = row_digest(value)
                n = occurrences.get(digest, 0)
                occurrences[digest] = n + 1
                value["identifier"] = row_identifier(value, n)
            value.setdefault("timestamp", started_at)
            key = self._customer_key(value["event_name"])
            customer = value["payload"].get(key)
            if customer in (None, ""):
                message = f"Customer mapping key {key} not found in payload."
                yield row.line, None, None, RowError(row.line, message, f"payload_{key}", "")
                continue
            problem = customer_problem(str(customer))
            if problem is not None:  # the gateway and the processor refuse the same (processor/limits.py)
                yield (
                    row.line,
                    None,
                    None,
                    RowError(
                        row.line,
                        f"Invalid payload[{key}]: the customer id {problem}.",
                        f"payload_{key}",
                        str(customer)[:200],
                    ),
                )
                continue
            problem = self._value_error(value["event_name"], value["payload"])
            if problem is not None:
                value_key = self._value_key(value["event_name"])
                cell = value["payload"].get(value_key)
                yield (
                    row.line,
                    None,
                    None,
                    RowError(row.line, problem, f"payload_{value_key}", "" if cell is None else str(cell)),
                )
                continue
            ts = value["timestamp"]
            late = ts < now - TIMESTAMP_PAST_S
            if late or ts > now + TIMESTAMP_FUTURE_S:
                message = (
                    "Timestamp must be within the past 35 days."
                    if late
                    else "Timestamp must not be more than 5 minutes in the future."
                )
                yield row.line, None, None, RowError(row.line, message, "timestamp", _iso(ts))
                continue
            yield row.line, str(customer), value, None

    def _find_break(self) -> RowError | None:
        """Where the reader cannot go on (the file's last row then), or None: one pass over the rows."""
        if not self._break_known:
            self._break = None
            for row in iter_rows(self.path, self.fmt):
                if row.broken:
                    self._break = RowError(row.line, row.error or "unreadable")
            self._break_known = True
        return self._break

    def check(self) -> ImportReport:
        report = ImportReport(self.fmt)
        state = self.load_state()
        self._ignored.clear()
        self._break = None
        for _, _, _value, error in self.events(self._started_at(state)):
            if error is not None:
                report.errors.append(error)
            else:
                report.rows += 1
        report.broken, self._break_known = self._break, True
        report.ignored = dict(sorted(self._ignored.items()))
        if state is not None and state.finished_at is not None:
            report.already_imported = state
        return report

    # ---- pass 2 -----------------------------------------------------------------------------------
    def send(
        self,
        *,
        force: bool = False,
        on_acked: Callable[[int], None] | None = None,
        stop: Callable[[], bool] | None = None,
    ) -> ImportReport:
        """Produce every valid row not yet acknowledged; invalid rows are skipped (call :meth:`check` first).
        When ``stop()`` turns true the send ends early (``report.interrupted``), the progress saved to resume."""
        report = ImportReport(self.fmt)
        broken = self._find_break()
        if broken is not None:
            raise UnreadableFileError(
                f"The file cannot be read past line {broken.line} ({broken.message}); nothing was sent. "
                "Fix the file and import it again."
            )
        state = self.load_state()
        if state is not None and state.finished_at is not None and not force:
            report.already_imported = state
            return report
        if state is None or state.finished_at is not None:
            state = ImportState(self.digest, self._started_at(state))
        if state.acked and on_acked is not None:
            on_acked(state.acked)  # (the progress bar counts what an earlier run delivered)
        producer = AckedProducer(self.settings, config={"allow.auto.create.topics": False})
        topic = topic_name(Topic.EVENTS, self.settings.topic_prefix)
        acked: set[int] = set()
        failures: list[str] = []
        last_save = time.monotonic()
        index = 0

        def advance() -> None:
            moved = 0
            while state.acked in acked:
                acked.discard(state.acked)
                state.acked += 1
                moved += 1
            if moved and on_acked is not None:
                on_acked(moved)

        def callback(i: int) -> Callable[[KafkaError | None, Message], None]:
            def done(err: KafkaError | None, _msg: Message) -> None:
                if err is not None:
                    failures.append(err.str())
                else:
                    acked.add(i)

            return done

        try:
            for line, customer, value, error in self.events(self._started_at(state)):
                if stop is not None and stop():
                    report.interrupted = True
                    break
                if error is not None or value is None or customer is None:
                    continue
                i, index = index, index + 1
                if i < state.acked:
                    report.skipped_done += 1
                    continue
                data = json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
                try:
                    producer.produce(topic, data, customer, on_delivery=callback(i))
                except RecordTooLargeError as exc:
                    raise KafkaDeliveryError(
                        f"line {line}: {exc}; the import stops there with its progress saved: shorten "
                        "that row and run the import again to resume"
                    ) from exc
                report.sent += 1
                producer.poll(0)
                if failures:
                    raise KafkaDeliveryError(f"the broker refused a record: {failures[0]}")
                advance()
                if time.monotonic() - last_save > SAVE_EVERY_S:
                    self.save_state(state)
                    last_save = time.monotonic()
            remaining = producer.flush(60)
            advance()
            if failures or remaining:
                raise KafkaDeliveryError(
                    f"{len(failures) or remaining} record(s) were not acknowledged"
                    f"{': ' + failures[0] if failures else ''}; run the import again to resume"
                )
            if not report.interrupted:
                state.rows = index
                state.finished_at = int(self._now())
        except KafkaException as exc:
            raise KafkaDeliveryError(f"cannot produce to {topic}: {exc}") from exc
        finally:
            producer.close(10)
            advance()
            self.save_state(state)
        report.rows = index
        return report
