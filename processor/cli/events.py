"""``meterstream events send|cancel``: publish meter events and cancellations.

A thin layer over :class:`~processor.events.producer.MeterEventProducer`: options become one event (or
``--count`` of them), or each line of ``--file`` becomes one; everything is validated before anything is
sent, and the command only reports success after the broker acknowledged every record. Bulk loads of
Stripe's CSV/JSON formats belong to ``meterstream import``.
"""

from __future__ import annotations

import json
from typing import IO, Any

import click

from processor.config import Settings
from processor.errors import EventValidationError

__all__ = ["events"]


def _scalar(text: str) -> str | int:
    """An int when ``text`` is the canonical spelling of one ("25", "-3"), else the string itself, so
    "007" or "+1" (zip codes, phone numbers) keep their exact text."""
    try:
        number = int(text)
    except ValueError:
        return text
    return number if str(number) == text else text


def _pairs(items: tuple[str, ...]) -> dict[str, str | int]:
    out: dict[str, str | int] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {item!r}", param_hint="--payload")
        out[key] = _scalar(value)
    return out


def _read_file(fh: IO[str], customer_key: str) -> list[dict[str, Any]]:
    """Every line of a JSONL file in the ``meter-events`` shape, validated (blank lines skipped)."""
    from processor.events.schema import parse_event_object

    records: list[dict[str, Any]] = []
    try:
        lines = list(fh)
    except UnicodeDecodeError:
        raise EventValidationError(f"{fh.name}: not UTF-8 text") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EventValidationError(f"{fh.name} line {number}: not valid JSON ({exc.msg})") from None
        try:
            record = parse_event_object(obj)
            if record["payload"].get(customer_key) in (None, ""):
                raise EventValidationError(
                    f"Customer mapping key {customer_key} not found in payload.",
                    param=f"payload[{customer_key}]",
                    code="parameter_missing",
                )
        except EventValidationError as exc:
            raise EventValidationError(
                f"{fh.name} line {number}: {exc.message}", param=exc.param, code=exc.code
            ) from None
        records.append(record)
    return records


@click.group()
def events() -> None:
    """Publish meter events and cancellations to Kafka."""


@events.command("send")
@click.option("--event-name", "event_name", help="The meter's event_name.")
@click.option("--customer", help="Customer id: the record key, and payload[<customer-key>].")
@click.option("--value", help="Usage value, stored as payload[<value-key>] (an integer when it is one).")
@click.option("--payload", "payload_items", multiple=True, metavar="KEY=VALUE", help="Extra payload entries.")
@click.option("--identifier", help="Event identifier (default: a new UUID per event).")
@click.option("--timestamp", type=int, help="Event time, Unix seconds (default: now).")
@click.option("--count", type=click.IntRange(min=1), default=1, show_default=True, help="Send this many events.")
@click.option("--customer-key", default="stripe_customer_id", show_default=True, help="Payload key of the customer.")
@click.option("--value-key", default="value", show_default=True, help="Payload key of the value.")
@click.option(
    "--file",
    "file",
    type=click.File("r", encoding="utf-8"),
    help="JSONL: one meter-events value per line (event_name, payload, identifier?, timestamp?).",
)
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for acknowledgement.")
@click.option("-q", "--quiet", is_flag=True, help="Do not print the identifiers.")
@click.pass_obj
def send(
    settings: Settings,
    event_name: str | None,
    customer: str | None,
    value: str | None,
    payload_items: tuple[str, ...],
    identifier: str | None,
    timestamp: int | None,
    count: int,
    customer_key: str,
    value_key: str,
    file: IO[str] | None,
    timeout: float,
    quiet: bool,
) -> None:
    """Send meter events and wait until the broker acknowledged them.

    \b
    meterstream events send --event-name api_requests --customer cus_123 --value 25
    meterstream events send --file events.jsonl
    """
    from processor.events.producer import MeterEventProducer

    if file is not None:
        given = {
            "--event-name": event_name,
            "--customer": customer,
            "--value": value,
            "--identifier": identifier,
            "--timestamp": timestamp,
        }
        clash = [flag for flag, v in given.items() if v is not None] + (["--payload"] if payload_items else [])
        if clash or count != 1:
            raise click.UsageError(f"--file cannot be combined with {', '.join(clash) or '--count'}")
        records = _read_file(file, customer_key)
        producer = MeterEventProducer(settings, customer_key=customer_key)
        sent = [
            producer.send(r["event_name"], r["payload"], identifier=r.get("identifier"), timestamp=r.get("timestamp"))
            for r in records
        ]
    else:
        if event_name is None:
            raise click.UsageError("Missing option '--event-name' (or use --file).")
        if customer is None:
            raise click.UsageError("Missing option '--customer' (or use --file).")
        if identifier is not None and count > 1:
            raise click.UsageError("--identifier cannot be combined with --count > 1: every event needs its own.")
        payload = _pairs(payload_items)
        if value is not None:
            payload[value_key] = _scalar(value)
        producer = MeterEventProducer(settings, customer_key=customer_key)
        sent = [
            producer.send(event_name, payload, identifier=identifier, timestamp=timestamp, customer=customer)
            for _ in range(count)
        ]
    producer.close(timeout)
    if not quiet:
        for ident in sent:
            click.echo(ident)
    click.echo(f"delivered {len(sent)} event(s) to {producer.events_topic}")


@events.command("cancel")
@click.option("--event-name", "event_name", required=True, help="The meter's event_name.")
@click.option("--identifier", required=True, help="Identifier of the event to cancel.")
@click.option("--timeout", type=float, default=30.0, show_default=True, help="Seconds to wait for acknowledgement.")
@click.pass_obj
def cancel(settings: Settings, event_name: str, identifier: str, timeout: float) -> None:
    """Cancel a meter event by identifier (Stripe's meter event adjustment; within 24 hours of it)."""
    from processor.events.producer import MeterEventProducer

    producer = MeterEventProducer(settings)
    producer.cancel(event_name, identifier)
    producer.close(timeout)
    click.echo(f"cancellation of {identifier} delivered to {producer.adjustments_topic}")
