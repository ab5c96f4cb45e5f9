"""``meterstream s3-connector`` (poll a bucket prefix) and ``meterstream import s3://bucket/key`` (one object).

Both run :class:`~processor.ops.s3.S3Connector`, so an object imported by hand is known to the connector
(and the reverse). docs/s3-connector.md is the user's guide.
"""

from __future__ import annotations

import signal
import sys
import threading
import time
from types import FrameType
from typing import Any

import click

from processor.config import Settings

__all__ = ["import_s3", "s3_connector"]

#: Statuses that make ``--once`` / ``import s3://`` exit 1 (cron jobs and scripts alert on them).
_FAILING = {"rejected", "failed", "held"}


def _redis(settings: Settings) -> Any:
    from processor.state.connect import sync_redis

    return sync_redis(settings, decode_responses=True)


@click.command("s3-connector")
@click.option("--bucket", required=True, help="Bucket to poll (on METERSTREAM_S3_ENDPOINT, else AWS).")
@click.option("--prefix", default="", show_default=True, help="Only keys under this prefix.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=60.0,
    show_default=True,
    help="Seconds between listings.",
)
@click.option("--once", is_flag=True, help="One pass, then exit (1 if an object was rejected, failed or held).")
@click.option("--skip-invalid", is_flag=True, help="Import the valid rows of an object with invalid rows.")
@click.option(
    "--reimport-after-window",
    is_flag=True,
    help="Re-import objects changed more than 23 h after their first import (shared rows then count twice).",
)
@click.option("--customer-key", help="Payload key of the customer (default: the meter's, else stripe_customer_id).")
@click.pass_obj
def s3_connector(
    settings: Settings,
    bucket: str,
    prefix: str,
    interval: float,
    once: bool,
    skip_invalid: bool,
    reimport_after_window: bool,
    customer_key: str | None,
) -> None:
    """Import Stripe-format usage files (.csv, .json, .jsonl/.ndjson) from an S3 bucket into meter-events,
    each object version exactly once, with a one-line report per object. Stops cleanly on SIGTERM/SIGINT
    (an object being imported resumes on the next start).

    \b
    meterstream s3-connector --bucket usage-exports --prefix stripe/ --interval 30
    METERSTREAM_S3_ENDPOINT=http://minio:9000 meterstream s3-connector --bucket usage --once
    """
    from processor.ops.s3 import S3Connector

    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        click.echo(f"signal {signum}: stopping after the current step", err=True)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    connector = S3Connector(
        settings,
        _redis(settings),
        skip_invalid=skip_invalid,
        reimport_after_window=reimport_after_window,
        customer_key=customer_key,
    )
    if once:
        done = connector.poll(bucket, prefix, stop=stop.is_set)
        for obj, record in done:
            click.echo(record.summary(obj.url))
        click.echo(f"{len(done)} object(s) acted on")
        if any(record.status in _FAILING for _, record in done):
            sys.exit(1)
        return
    click.echo(f"polling s3://{bucket}/{prefix} every {interval:g} s", err=True)
    connector.run(bucket, prefix, interval=interval, stop=stop.is_set)


def import_s3(
    settings: Settings,
    url: str,
    *,
    fmt: str | None,
    customer_key: str | None,
    skip_invalid: bool,
    force: bool,
    dry_run: bool,
) -> None:
    """``meterstream import s3://bucket/key``: one object through the connector's code and records."""
    from processor.ops.s3 import S3Connector, decide_object, parse_s3_url

    try:
        bucket, key = parse_s3_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="FILE") from None
    connector = S3Connector(
        settings, _redis(settings), skip_invalid=skip_invalid, reimport_after_window=force, customer_key=customer_key
    )
    obj = connector.head(bucket, key)
    previous = connector.load_record(obj)
    action = decide_object(previous, obj.etag, int(time.time()), reimport_after_window=force)
    # A rejected version is checked again on request (nothing of it was sent): e.g. with --skip-invalid now.
    if previous is not None and action != "import" and previous.status != "rejected" and not force and not dry_run:
        click.echo(previous.summary(obj.url))
        if action == "hold":
            click.echo("changed too long after its first import: --force imports it (shared rows count twice)")
            sys.exit(1)
        click.echo("already dealt with this version; --force imports it again")
        return
    record = connector.import_object(obj, fmt=fmt, force=force, dry_run=dry_run, previous=previous)
    if record is None:
        click.echo(f"{obj.url} changed while it was read; run the import again")
        sys.exit(1)
    click.echo(record.summary(obj.url))
    for line in record.errors[3:]:
        click.echo(f"  {line}")
    if record.status == "rejected":
        click.echo("nothing sent: fix the rows above or pass --skip-invalid")
    if record.status in _FAILING:
        sys.exit(1)
