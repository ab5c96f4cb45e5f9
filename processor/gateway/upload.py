"""Bulk upload in the web dashboard: the page ``/upload`` and ``POST /dashboard/api/imports``.

An operator picks a file in Stripe's Dashboard CSV template (``timestamp, event_name,
payload_<key>...``; Stripe's JSON and JSON Lines bulk formats work too), checks it, then sends it. Both
steps run :class:`processor.ops.importer.Importer`, the code behind ``meterstream import``, so the page
and the CLI accept, refuse and number the same rows, and a file imported once (by either) is recognised
by its digest from the import state the importer keeps in Redis.

Why the file is posted twice (check, then send) instead of kept on the server under an upload id: the
gateway may run as several worker processes (``--workers``) or replicas, and any of them may answer the
second request; a re-post needs no shared storage, nothing to clean up and no bound on pending uploads.
The send names the ``digest`` the check reported, so what is sent is exactly what was checked. Each
request streams the file to a private temporary directory, deleted when the request ends.

Limits: the file may hold at most 5 MiB (Stripe's limit for Dashboard uploads); a larger one is refused
with 413 ``request_too_large`` from its ``Content-Length`` before any of the body is read, or as soon as
the stream passes the limit — never more than the limit is written. At most :data:`MAX_CONCURRENT`
imports wait or run per process (429 beyond), and one runs at a time: the importer is synchronous
(confluent-kafka), so it runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import BodyPartReader, web

from processor.config import Settings
from processor.errors import (
    InvalidRequestError,
    RateLimitedError,
    RequestTimeoutError,
    RequestTooLargeError,
    UnreadableFileError,
)
from processor.gateway.dashboard import _PAGE_HEADERS, STATIC_DIR
from processor.gateway.state import GATEWAY, Gateway
from processor.meters import Meter
from processor.ops.importer import Importer, ImportReport, ImportState
from processor.wire import get_str, json_response
from processor.wire.http import BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT_S

__all__ = ["IMPORTS_PATH", "MAX_CONCURRENT", "MAX_FILE_BYTES", "MAX_REPORTED_ERRORS", "install"]

T = TypeVar("T")
IMPORTS_PATH = "/dashboard/api/imports"
#: Stripe's limit for a CSV uploaded in its Dashboard ("maximum 5 MB"), read as MiB.
MAX_FILE_BYTES = 5 * 1024 * 1024
#: Room for the multipart boundaries, part headers and the small option fields around the file.
_MULTIPART_SLACK = 64 * 1024
_FIELD_MAX_BYTES = 256
_CHUNK = 64 * 1024
#: Line errors listed in an answer (the counts are always complete).
MAX_REPORTED_ERRORS = 1000
#: Imports waiting or running in one gateway process; more are answered 429.
MAX_CONCURRENT = 4
_OPTIONS = ("dry_run", "skip_invalid", "force", "digest")
_FORMATS_BY_SUFFIX = {".csv": "csv", ".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class UploadOptions:
    """What to do with the file; the same switches as ``meterstream import``."""

    dry_run: bool = False
    skip_invalid: bool = False
    force: bool = False
    digest: str | None = None


class _Imports:
    """Per-app bookkeeping: how many imports are in this process, and the lock that runs one at a time
    (two sends of one file at once would produce its rows twice; the processor would drop the second
    copy, but there is no reason to make it)."""

    def __init__(self) -> None:
        self.active = 0
        self.lock = asyncio.Lock()


_IMPORTS = web.AppKey("upload_imports", _Imports)
routes = web.RouteTableDef()


def install(app: web.Application) -> None:
    """Add the upload page, its script and the import endpoints to the gateway app."""
    app[_IMPORTS] = _Imports()
    app.add_routes(routes)


# ---- the page ------------------------------------------------------------------------------------------
@routes.get("/upload")
async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "upload.html", headers={**_PAGE_HEADERS, "Content-Type": "text/html"})


@routes.get("/static/upload.js")  # an exact path: the router prefers it to the dashboard's /static/{name}
async def script(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "upload.js", headers={**_PAGE_HEADERS, "Content-Type": "text/javascript"})


@routes.get(IMPORTS_PATH + "/template")
async def template(request: web.Request) -> web.Response:
    """Stripe's CSV template for one meter: the header row with the meter's payload keys."""
    gw: Gateway = request.app[GATEWAY]
    query = dict(request.query)
    meter_id = get_str(query, "meter", required=True, max_length=200)
    assert meter_id is not None
    meter = await gw.meter(meter_id)
    filename = _SAFE_NAME.sub("_", meter.event_name)[:100] + ".csv"
    return web.Response(
        text=template_csv(meter),
        headers={
            "Content-Type": "text/csv; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "no-cache",
        },
    )


def template_csv(meter: Meter, now: int | None = None) -> str:
    """``timestamp,event_name,payload_<customer key>[,payload_<value key>]`` (count meters read no value),
    and one example row (this hour, customer ``cus_EXAMPLE``, value 1) that shows every cell's format;
    an operator replaces it with the real rows."""
    columns = ["timestamp", "event_name", f"payload_{meter.customer_key}"]
    t = int(time.time()) if now is None else now
    example = [
        datetime.fromtimestamp(t - t % 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        meter.event_name,
        "cus_EXAMPLE",
    ]
    if meter.formula != "count":
        columns.append(f"payload_{meter.value_key}")
        example.append("1")
    return "\r\n".join(",".join(_csv_cell(c) for c in cells) for cells in (columns, example)) + "\r\n"


def _csv_cell(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\r\n') else text


# ---- the import endpoint -------------------------------------------------------------------------------
@routes.post(IMPORTS_PATH)
async def create_import(request: web.Request) -> web.Response:
    """Check (``dry_run=true``) or import one uploaded file; see the module docstring and docs/http-api.md."""
    gw: Gateway = request.app[GATEWAY]
    imports = request.app[_IMPORTS]
    if imports.active >= MAX_CONCURRENT:
        raise RateLimitedError("Too many imports at once on this gateway; retry in a moment.")
    imports.active += 1
    try:
        with tempfile.TemporaryDirectory(prefix="meterstream-upload-") as tmp:
            path, filename, size, options = await receive(request, Path(tmp))
            async with imports.lock:
                answer = await asyncio.to_thread(
                    run_import, gw.settings, gw.sync_redis, gw.registry.find_by_event_name, path, options
                )
    finally:
        imports.active -= 1
    answer["filename"] = filename
    answer["size"] = size
    return json_response(answer)


def _too_large() -> RequestTooLargeError:
    return RequestTooLargeError(
        f"The file is larger than 5 MB ({MAX_FILE_BYTES:,} bytes), the limit for uploads; split it into smaller files.",
        param="file",
    )


def _parse_bool(name: str, value: str) -> bool:
    if value in ("true", "false"):
        return value == "true"
    raise InvalidRequestError(f"Invalid boolean: {value[:40]!r} (expected true or false).", param=name)


def _refuse_unknown(name: str) -> None:
    if name not in _OPTIONS:
        shown = name[:100]
        raise InvalidRequestError(f"Received unknown parameter: {shown}", param=shown, code="parameter_unknown")


def parse_options(fields: dict[str, str]) -> UploadOptions:
    """The switches from the query string and the form fields (400 ``parameter_unknown`` for others)."""
    for name in fields:
        _refuse_unknown(name)
    digest = fields.get("digest") or None
    if digest is not None and not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InvalidRequestError("digest must be the file's SHA-256 in hex, as the check answered it.", param="digest")
    return UploadOptions(
        dry_run=_parse_bool("dry_run", fields.get("dry_run", "false")),
        skip_invalid=_parse_bool("skip_invalid", fields.get("skip_invalid", "false")),
        force=_parse_bool("force", fields.get("force", "false")),
        digest=digest,
    )


async def _within(request: web.Request, step: Awaitable[T]) -> T:
    """One read of the upload, within the app's body deadline: a client that stops sending (or sends less
    than its Content-Length) is answered 408 rather than holding an import slot."""
    timeout = request.app.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT_S)
    try:
        async with asyncio.timeout(timeout):
            return await step
    except TimeoutError:
        raise RequestTimeoutError(f"The upload stalled: nothing arrived for {timeout:g} s.") from None


async def _read_field(request: web.Request, part: BodyPartReader, name: str) -> str:
    data = b""
    while chunk := await _within(request, part.read_chunk(_FIELD_MAX_BYTES)):
        data += chunk
        if len(data) > _FIELD_MAX_BYTES:
            raise InvalidRequestError(f"The value of {name} is too long.", param=name)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequestError(f"The value of {name} is not valid UTF-8.", param=name) from None


def _check_total(request: web.Request) -> None:
    """The whole body (file, fields, multipart framing) is bounded too, also without a Content-Length."""
    if request.content.total_bytes > MAX_FILE_BYTES + _MULTIPART_SLACK:
        raise _too_large()


def _local_name(filename: str) -> str:
    """The temporary file's name: the client's name only chooses the format, by its suffix; it never
    reaches the file system."""
    suffix = Path(filename).suffix.lower()
    return "upload" + (suffix if suffix in _FORMATS_BY_SUFFIX else ".csv")


async def receive(request: web.Request, into: Path) -> tuple[Path, str, int, UploadOptions]:
    """Stream the multipart body's ``file`` part into ``into`` (never more than :data:`MAX_FILE_BYTES`),
    and read the option fields. Returns the file's path, its client-side name, its size and the options."""
    length = request.content_length
    if length is not None and length > MAX_FILE_BYTES + _MULTIPART_SLACK:
        raise _too_large()
    if request.content_type != "multipart/form-data":
        raise InvalidRequestError("Send the file as multipart/form-data in a field named file.", param="file")
    fields = dict(request.query)
    path: Path | None = None
    filename = ""
    size = 0
    reader = await request.multipart()
    while (part := await _within(request, reader.next())) is not None:
        _check_total(request)
        if not isinstance(part, BodyPartReader) or not part.name:
            raise InvalidRequestError("Every part of the form needs a name.", param="file")
        if part.name != "file":
            _refuse_unknown(part.name)  # before its value is read
            if part.name in fields:
                raise InvalidRequestError(f"{part.name} is given twice.", param=part.name)
            fields[part.name] = await _read_field(request, part, part.name)
            continue
        if path is not None:
            raise InvalidRequestError("Upload one file per request.", param="file")
        filename = (part.filename or "upload.csv")[:200]
        path = into / _local_name(filename)
        with path.open("wb") as out:
            while chunk := await _within(request, part.read_chunk(_CHUNK)):
                size += len(chunk)
                if size > MAX_FILE_BYTES:
                    raise _too_large()
                _check_total(request)
                out.write(chunk)
    if path is None:
        raise InvalidRequestError("Missing required param: file.", param="file", code="parameter_missing")
    return path, filename, size, parse_options(fields)


# ---- the work (a worker thread) ------------------------------------------------------------------------
def _state(state: ImportState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {"started_at": state.started_at, "finished_at": state.finished_at, "rows": state.rows}


def _meters(job: Importer, find_meter: Callable[[str], Meter | None]) -> list[dict[str, Any]]:
    """The valid rows per event_name, with the meter that owns it (``None``: no meter, so the processor
    will reject those rows with ``no_meter``). A second pass of the importer's own row stream."""
    state = job.load_state()
    started_at = state.started_at if state is not None else int(time.time())
    counts = Counter(
        value["event_name"] for _, _, value, error in job.events(started_at) if value is not None and error is None
    )
    found = []
    for event_name, rows in sorted(counts.items()):
        meter = find_meter(event_name)
        found.append(
            {
                "event_name": event_name,
                "rows": rows,
                "meter": None
                if meter is None
                else {
                    "id": meter.id,
                    "display_name": meter.display_name,
                    "formula": meter.formula,
                    "status": meter.status,
                },
            }
        )
    return found


def run_import(
    settings: Settings,
    redis_client: Any,
    find_meter: Callable[[str], Meter | None],
    path: Path,
    options: UploadOptions,
) -> dict[str, Any]:
    """Check the file and, unless a dry run, import it as ``meterstream import`` would (same order of
    refusals: already imported first, then invalid rows). Blocking: call it in a thread."""
    job = Importer(
        settings,
        path,
        fmt=_FORMATS_BY_SUFFIX.get(path.suffix),
        state_path=path.with_name("import-state.json"),
        redis_client=redis_client,
    )
    if options.digest is not None and options.digest != job.digest:
        raise InvalidRequestError(
            "This file differs from the one that was checked (its digest changed); check it again.", param="digest"
        )
    checked = job.check()  # an unreadable CSV (a cell over the field limit, ...) is a line error, like any row
    answer: dict[str, Any] = {
        "object": "meterstream.import",
        "digest": job.digest,
        "format": checked.fmt,
        "dry_run": options.dry_run,
        "valid_rows": checked.rows,
        # every row not valid, unread ones included: valid_rows + invalid_rows is every row of the file
        "invalid_rows": len(checked.errors),
        "unread_rows": checked.unread,
        "errors": [
            {"line": e.line, "message": e.message, "unread": e.unread, "column": e.column, "cell": e.cell}
            for e in checked.errors[:MAX_REPORTED_ERRORS]
        ],
        "unreadable": None
        if checked.broken is None
        else {"line": checked.broken.line, "message": checked.broken.message},
        "errors_truncated": len(checked.errors) > MAX_REPORTED_ERRORS,
        # a second pass over the rows, so only in the preview (the page shows it before the send)
        "meters": _meters(job, find_meter) if options.dry_run else None,
        "already_imported": _state(checked.already_imported),
        "status": "checked",
        "sent": 0,
        "skipped_done": 0,
    }
    _finish(job, checked, options, answer)
    return answer


def _finish(job: Importer, checked: ImportReport, options: UploadOptions, answer: dict[str, Any]) -> None:
    if options.dry_run:
        return
    if checked.already_imported is not None and not options.force:
        answer["status"] = "already_imported"
        return
    if checked.broken is not None:  # refused whole, whatever skip_invalid says: what follows is unknown
        raise UnreadableFileError(
            f"The file cannot be read past line {checked.broken.line} ({checked.broken.message}); nothing was "
            "sent. Fix the file and upload it again."
        )
    if checked.errors and not options.skip_invalid:
        first = checked.errors[0]
        raise InvalidRequestError(
            f"{len(checked.errors)} row(s) are invalid (line {first.line}: {first.message}); nothing was sent. "
            "Fix the file, or set skip_invalid=true to send the valid rows.",
            param="skip_invalid",
        )
    report = job.send(force=options.force)
    answer.update(status="imported", sent=report.sent, skipped_done=report.skipped_done)
