"""The Amazon S3 connector: Stripe's bulk files (CSV, JSON, JSON Lines) from a bucket into ``meter-events``.

Stripe's S3 ingestion (public preview) polls a bucket for usage files; this is the self-hosted equivalent
for AWS, MinIO or any S3-compatible endpoint (``METERSTREAM_S3_ENDPOINT``), with boto3's standard
credential chain (``AWS_ACCESS_KEY_ID``..., instance roles). Each object goes through the very importer
``meterstream import FILE`` uses (:class:`~processor.ops.importer.Importer`: same parser, same checks, same
deterministic identifiers, same resumable state), so the two can never disagree on what a file means.

Exactly once, per object *version*, in three layers:

1. **The object record** (``Keys.s3_object``: ETag, outcome, counts) says whether this ETag was already
   dealt with. An unchanged object is never downloaded again, across restarts too.
2. **Deterministic identifiers.** A changed object (new ETag) is imported again; rows it shares with the
   earlier version get the same identifiers, so the processor drops them as duplicates — as long as the
   earlier rows are inside the 24 h dedup window. Rows without a timestamp get the time the *key* was first
   seen (pinned in the record), not the time of this version: their identifiers never depend on the default
   time, but an event's timestamp (its bucket, what Stripe is told) must not move with each re-upload, and
   new rows belong beside the old ones. A change later than :data:`REIMPORT_WINDOW_S` after the key's first
   send is *held* (reported, not imported) unless ``reimport_after_window``: past the window the shared
   rows would count twice.
3. **The importer's state** (keyed by the content digest) remembers how many rows Kafka acknowledged, so
   a connector killed mid-object resumes there; anything resent carries the same identifiers.

A malformed object (any invalid row) is rejected whole by default, like ``import`` without
``--skip-invalid``; the record keeps the line errors and the object is not retried until it changes.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from processor.config import Settings
from processor.errors import MeterstreamError, S3Error
from processor.ops.importer import Importer
from processor.state.keys import OPS_RECORD_TTL_S, Keys

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = [
    "REIMPORT_WINDOW_S",
    "SUFFIXES",
    "ObjectRecord",
    "S3Connector",
    "S3Object",
    "decide_object",
    "object_format",
    "parse_s3_url",
    "s3_client",
]

log = logging.getLogger(__name__)

SUFFIXES = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
#: A changed object is re-imported automatically only this long after the key's first rows were sent: the
#: processor drops a repeated identifier for 24 h of received time; one hour of margin covers the imports'
#: own duration and the processor's lag.
REIMPORT_WINDOW_S = 23 * 3600
#: Line errors kept in a record (the count is always exact).
MAX_ERRORS_KEPT = 20
#: Outcomes that are final for an ETag; ``importing`` (interrupted) and ``failed`` (transient) are retried.
FINAL = frozenset({"imported", "rejected", "held"})


def object_format(key: str) -> str | None:
    """The bulk format of an object by its key's extension (case-insensitive), or None: not a usage file."""
    dot = key.rfind(".")
    return SUFFIXES.get(key[dot:].lower()) if dot > key.rfind("/") else None


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key); ``ValueError`` for anything else."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, key = url[len("s3://") :].partition("/")
    if not bucket or not key:
        raise ValueError(f"expected s3://bucket/key, got {url!r}")
    return bucket, key


def s3_client(settings: Settings) -> S3Client:
    """A boto3 S3 client: ``METERSTREAM_S3_ENDPOINT`` (path-style addressing, as MinIO and most S3-compatible
    servers need) or AWS; region and credentials from settings / boto3's standard chain."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"} if settings.s3_endpoint else {},
        retries={"max_attempts": 5, "mode": "standard"},
    )
    client: S3Client = boto3.client(
        "s3", endpoint_url=settings.s3_endpoint, region_name=settings.s3_region, config=config
    )
    return client


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    etag: str
    size: int = 0

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass
class ObjectRecord:
    """What the connector knows of one object key: the ETag it last dealt with and the outcome."""

    etag: str
    #: The timestamp of rows without one, pinned when the key was first seen (kept across versions).
    first_seen: int
    #: importing | imported | rejected | failed | held
    status: str
    at: int
    fmt: str = ""
    rows: int = 0  # valid rows
    rejected: int = 0  # invalid rows
    sent: int = 0
    resumed: int = 0  # rows an interrupted earlier run had delivered
    #: When rows of this key were first sent (the start of the dedup window that re-imports rely on).
    first_sent_at: int | None = None
    errors: list[str] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    message: str = ""
    #: The newer ETag that was held (status ``held``; ``etag`` stays the version last dealt with).
    held_etag: str = ""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> ObjectRecord:
        data = json.loads(text)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})

    def summary(self, url: str) -> str:
        """The one-line report of this object (logged by the connector, printed by ``import s3://``)."""
        etag = self.held_etag if self.status == "held" else self.etag
        head = f"{url} [{self.fmt or '?'}, etag {etag.strip(chr(34))[:12]}]: {self.status}"
        counts = f"{self.rows} valid row(s), {self.rejected} rejected"
        if self.status == "held":
            return f"{head} ({self.message})"
        if self.status == "imported":
            again = f" ({self.resumed} by an earlier run)" if self.resumed else ""
            line = f"{head}: {counts}, {self.sent} sent{again}"
        elif self.status == "rejected":
            line = f"{head}: {counts}; nothing sent"
        else:
            line = f"{head}: {counts}"
        if self.ignored:
            line += "; ignored field(s) " + ", ".join(f"{k!r} in {n} row(s)" for k, n in self.ignored.items())
        if self.errors:
            line += "; " + "; ".join(self.errors[:3]) + (" ..." if self.rejected > 3 else "")
        return line + (f" ({self.message})" if self.message else "")


def decide_object(record: ObjectRecord | None, etag: str, now: int, *, reimport_after_window: bool = False) -> str:
    """What to do with a listed object: ``import``, ``skip`` (this ETag is done) or ``hold`` (changed after
    the dedup window of its first rows: re-importing would count the rows it shares twice)."""
    if record is None:
        return "import"
    if record.etag == etag:
        return "skip" if record.status in FINAL else "import"
    if _after_window(record, now) and not reimport_after_window:
        return "skip" if record.status == "held" and record.held_etag == etag else "hold"
    return "import"


def _after_window(record: ObjectRecord, now: int) -> bool:
    return record.first_sent_at is not None and now - record.first_sent_at > REIMPORT_WINDOW_S


class S3Connector:
    """Imports the usage files of a bucket prefix, each object version once. One connector per prefix."""

    def __init__(
        self,
        settings: Settings,
        redis_client: Any,
        *,
        s3: S3Client | None = None,
        skip_invalid: bool = False,
        reimport_after_window: bool = False,
        customer_key: str | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.redis = redis_client
        self.s3 = s3 if s3 is not None else s3_client(settings)
        self.skip_invalid = skip_invalid
        self.reimport_after_window = reimport_after_window
        self.customer_key = customer_key
        self.keys = Keys(settings.redis_prefix)
        self._now = now

    # ---- S3 -----------------------------------------------------------------------------------------
    def _s3_error(self, what: str, exc: Exception) -> S3Error:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            return S3Error(f"{what}: {err.get('Code', '?')} {err.get('Message', '')}".rstrip())
        return S3Error(f"{what}: {type(exc).__name__}: {exc}")

    def list_pages(self, bucket: str, prefix: str) -> Iterator[list[S3Object]]:
        """The usage files under ``prefix``, one page (≤ 1,000 keys) at a time; other keys are skipped."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
                yield [
                    S3Object(bucket, item["Key"], item["ETag"], int(item.get("Size", 0)))
                    for item in page.get("Contents", [])
                    if object_format(item["Key"]) is not None
                ]
        except (BotoCoreError, ClientError) as exc:
            raise self._s3_error(f"listing s3://{bucket}/{prefix}", exc) from exc

    def head(self, bucket: str, key: str) -> S3Object:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            found = self.s3.head_object(Bucket=bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise self._s3_error(f"s3://{bucket}/{key}", exc) from exc
        return S3Object(bucket, key, found["ETag"], int(found.get("ContentLength", 0)))

    def download(self, obj: S3Object, path: Path) -> bool:
        """Stream this very version (``IfMatch``) to ``path``; False when the object changed or vanished
        since it was listed (the next pass sees the new version)."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            body = self.s3.get_object(Bucket=obj.bucket, Key=obj.key, IfMatch=obj.etag)["Body"]
            with path.open("wb") as fh:
                for chunk in body.iter_chunks(1 << 20):
                    fh.write(chunk)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("PreconditionFailed", "NoSuchKey", "412", "404"):
                return False
            raise self._s3_error(obj.url, exc) from exc
        except BotoCoreError as exc:
            raise self._s3_error(obj.url, exc) from exc
        return True

    # ---- records ------------------------------------------------------------------------------------
    def load_record(self, obj: S3Object) -> ObjectRecord | None:
        raw = self.redis.get(self.keys.s3_object(obj.bucket, obj.key))
        return ObjectRecord.from_json(raw) if raw is not None else None

    def save_record(self, obj: S3Object, record: ObjectRecord) -> None:
        record.at = int(self._now())
        self.redis.set(self.keys.s3_object(obj.bucket, obj.key), record.to_json(), ex=OPS_RECORD_TTL_S)

    def _records(self, page: list[S3Object]) -> list[ObjectRecord | None]:
        """The records of a listed page in one round trip, their TTLs renewed (a record outlives its object:
        a lost record would re-import the object with a new pinned time)."""
        names = [self.keys.s3_object(o.bucket, o.key) for o in page]
        pipe = self.redis.pipeline(transaction=False)
        for name in names:
            pipe.get(name)
            pipe.expire(name, OPS_RECORD_TTL_S)
        answers = pipe.execute()
        return [ObjectRecord.from_json(raw) if raw is not None else None for raw in answers[0::2]]

    # ---- one object ---------------------------------------------------------------------------------
    def import_object(
        self,
        obj: S3Object,
        *,
        fmt: str | None = None,
        force: bool = False,
        dry_run: bool = False,
        stop: Callable[[], bool] | None = None,
        previous: ObjectRecord | None = None,
    ) -> ObjectRecord | None:
        """Download, check and import one object version; the record (saved unless ``dry_run``) is the
        report. None when the object changed or vanished before it could be read."""
        previous = previous if previous is not None else self.load_record(obj)
        now = int(self._now())
        fmt = fmt or object_format(obj.key) or "csv"
        with tempfile.TemporaryDirectory(prefix="meterstream-s3-") as tmp:
            path = Path(tmp) / f"object.{fmt}"
            try:
                if not self.download(obj, path):
                    return None
            except S3Error as exc:  # this object only: the pass goes on, the next one retries it
                return ObjectRecord(obj.etag, now, "failed", now, fmt, message=str(exc))
            first_sent_at = previous.first_sent_at if previous is not None else None
            if previous is not None and previous.etag != obj.etag and _after_window(previous, now):
                first_sent_at = None  # imported past the window on purpose: a new window starts with it
            record = ObjectRecord(
                obj.etag,
                previous.first_seen if previous is not None else now,
                "importing",
                now,
                fmt,
                first_sent_at=first_sent_at,
            )
            try:
                self._import(obj, path, record, force=force, dry_run=dry_run, stop=stop)
            except MeterstreamError as exc:
                record.status, record.message = "failed", str(exc)
        if not dry_run:
            self.save_record(obj, record)
        return record

    def _import(
        self,
        obj: S3Object,
        path: Path,
        record: ObjectRecord,
        *,
        force: bool,
        dry_run: bool,
        stop: Callable[[], bool] | None,
    ) -> None:
        job = Importer(
            self.settings,
            path,
            fmt=record.fmt,
            state_path=path.with_name("object.meterstream-import"),
            customer_key=self.customer_key,
            redis_client=self.redis,
            now=self._now,
            default_timestamp=record.first_seen,
        )
        checked = job.check()
        record.rows, record.rejected, record.ignored = checked.rows, len(checked.errors), checked.ignored
        record.errors = [f"line {e.line}: {e.message}" for e in checked.errors[:MAX_ERRORS_KEPT]]
        if dry_run:
            record.status = "checked"
            return
        if checked.broken is not None or (checked.errors and not self.skip_invalid):
            record.status = "rejected"  # a file the reader cannot finish is refused whole (issue 13)
            return
        if checked.already_imported is not None and not force:
            record.status, record.message = "imported", "this content was imported before: nothing sent"
            return
        if record.first_sent_at is None:
            record.first_sent_at = int(self._now())
        self.save_record(obj, record)  # pins first_seen / first_sent_at before the first row goes out
        report = job.send(force=force, stop=stop)
        record.sent, record.resumed = report.sent, report.skipped_done
        if report.interrupted:
            record.message = "interrupted: resumes on the next pass"
            return
        record.status = "imported"

    def hold(self, obj: S3Object, previous: ObjectRecord) -> ObjectRecord:
        """Record (and report) a change that came too late to be re-imported without double counting."""
        record = ObjectRecord(
            previous.etag,
            previous.first_seen,
            "held",
            0,
            previous.fmt,
            first_sent_at=previous.first_sent_at,
            held_etag=obj.etag,
            message=f"changed more than {REIMPORT_WINDOW_S // 3600} h after its first import: not re-imported, "
            "rows it shares with the imported version would count twice (see docs/s3-connector.md)",
        )
        self.save_record(obj, record)
        return record

    # ---- the loop -----------------------------------------------------------------------------------
    def poll(
        self, bucket: str, prefix: str, *, stop: Callable[[], bool] | None = None
    ) -> list[tuple[S3Object, ObjectRecord]]:
        """One pass over the prefix: every new or changed object imported (or held, or rejected) and
        logged; returns what was acted on. Objects already done cost one Redis read per page."""
        done: list[tuple[S3Object, ObjectRecord]] = []
        for page in self.list_pages(bucket, prefix):
            for obj, previous in zip(page, self._records(page), strict=True):
                if stop is not None and stop():
                    return done
                action = decide_object(
                    previous, obj.etag, int(self._now()), reimport_after_window=self.reimport_after_window
                )
                if action == "skip":
                    continue
                if action == "hold":
                    assert previous is not None
                    record = self.hold(obj, previous)
                else:
                    found = self.import_object(obj, stop=stop, previous=previous)
                    if found is None:
                        continue
                    record = found
                level = logging.INFO if record.status == "imported" else logging.WARNING
                log.log(level, "%s", record.summary(obj.url))
                done.append((obj, record))
        return done

    def run(self, bucket: str, prefix: str, *, interval: float, stop: Callable[[], bool]) -> None:
        """Poll until ``stop()``; a failing pass (S3 or Kafka down) is logged and retried after ``interval``."""
        while not stop():
            try:
                self.poll(bucket, prefix, stop=stop)
            except MeterstreamError as exc:
                log.warning("pass over s3://%s/%s failed: %s; retrying in %g s", bucket, prefix, exc, interval)
            deadline = time.monotonic() + interval
            while not stop() and time.monotonic() < deadline:
                time.sleep(min(0.2, interval))
