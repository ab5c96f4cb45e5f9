"""Operations commands (``rebuild``, ``replay``, ``reconcile``, ``import``, ``errors``, ``correct``).

Thin click wrappers over :mod:`processor.ops`; every command is safe to run while the pipeline is live
(docs/operations.md is the runbook). Progress bars go to stderr, results to stdout, and commands that
check something exit 1 when they found a difference (so scripts and cron jobs can alert on it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from processor.cli.errors_cmd import errors
from processor.cli.timerange import parse_time, range_options, resolve_range
from processor.config import Settings
from processor.ops.console import Progress, echo_decisions, iso
from topics import Topic, topic_name

__all__ = ["COMMANDS"]


def _time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except click.BadParameter as exc:
        raise click.BadParameter(str(exc.message), param_hint=name) from None


def _range(start: str | None, end: str | None, last: str | None, align: int = 60) -> tuple[int, int]:
    lo, hi = resolve_range(start, end, last, align=align)
    assert lo is not None and hi is not None
    return lo, hi


# ---- rebuild -----------------------------------------------------------------------------------------
@click.command("rebuild")
@range_options("Range (widened to whole UTC days)", to_help="Range end, exclusive; widened to the end of its UTC day.")
@click.option("--meter", help="Only this meter (id or event_name).")
@click.option("--customer", help="Only this customer.")
@click.option("--diff", "show_diff", is_flag=True, help="List every differing bucket; exit 1 when any differs.")
@click.option("--swap", is_flag=True, help="Replace the live buckets of the range with the rebuilt ones.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="Diff lines shown.")
@click.option(
    "--set-progress",
    is_flag=True,
    help="After a full --swap (Redis lost): store the processor's progress from its Kafka commits where missing.",
)
@click.option("--cleanup", is_flag=True, help="Only delete shadows left by interrupted rebuilds, then exit.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def rebuild(
    settings: Settings,
    start: str | None,
    end: str | None,
    last: str | None,
    meter: str | None,
    customer: str | None,
    show_diff: bool,
    swap: bool,
    limit: int,
    set_progress: bool,
    cleanup: bool,
    quiet: bool,
) -> None:
    """Recompute aggregates from the topics into a shadow prefix, compare them with the live ones and
    (with --swap) replace the live buckets atomically, pair by pair, while the processor keeps running.

    \b
    meterstream rebuild --from 2026-11-01 --to 2026-11-08 --diff
    meterstream rebuild --from 2026-11-01 --to 2026-11-08 --meter api_requests --swap
    """
    from processor.ops.rebuild import Rebuild, cleanup_shadows, summarize_pairs
    from processor.state.connect import sync_redis

    if cleanup:
        client = sync_redis(settings)
        click.echo(f"deleted {cleanup_shadows(client, settings.redis_prefix, all_runs=True)} key(s) of old shadows")
        return
    lo, hi = _range(start, end, last, align=86400)
    if set_progress and (not swap or meter is not None or customer is not None):
        raise click.UsageError("--set-progress needs --swap of every meter and customer")
    with (
        Progress("reading the topics", quiet=quiet) as progress,
        Rebuild(settings, lo, hi, meter=meter, customer=customer, on_consumed=progress, on_total=progress.total) as job,
    ):
        job.build()
        report = job.swap() if swap else job.compare()
        progress_set = job.set_progress() if set_progress else {}
    click.echo(
        f"rebuilt {iso(report.start)} .. {iso(report.end)} from {report.records} record(s)"
        f" ({report.rounds} catch-up round(s) with the live processor)"
    )
    n_pairs, n_diff, n_buckets = summarize_pairs(report.pairs)
    click.echo(f"compared {n_pairs} pair(s): {n_diff} pair(s) differ, {n_buckets} hour/day bucket(s)")
    if show_diff:
        shown = 0
        for pair in report.differing:
            for change in pair.changes:
                if shown >= limit:
                    break
                live = "-" if change.live is None else change.live
                rebuilt = "-" if change.rebuilt is None else change.rebuilt
                click.echo(
                    f"  {pair.meter_id} {pair.customer} {change.kind:<4} {iso(change.bucket)}"
                    f"  live={live} rebuilt={rebuilt}"
                )
                shown += 1
            if pair.minutes_changed and shown < limit:
                click.echo(f"  {pair.meter_id} {pair.customer} {pair.minutes_changed} minute bucket(s)")
                shown += 1
        if n_buckets + sum(p.minutes_changed for p in report.pairs) > shown:
            click.echo("  ... (raise --limit to see more)")
    if report.swapped:
        click.echo(f"swapped {n_pairs} pair(s); restored {report.claims_restored} identifier claim(s)")
    if set_progress:
        click.echo(f"stored the processor's progress for {len(progress_set)} partition(s) from its Kafka commits")
    elif show_diff and n_diff:
        sys.exit(1)


# ---- replay ------------------------------------------------------------------------------------------
@click.command("replay")
@range_options("Received time", to_help="Received time to, exclusive.")
@click.option("--meter", help="Only this meter (id or event_name).")
@click.option("--dry-run", is_flag=True, help="Only say what would and would not be sent.")
@click.option("--list", "list_items", is_flag=True, help="One line per record with its decision.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def replay(
    settings: Settings,
    start: str | None,
    end: str | None,
    last: str | None,
    meter: str | None,
    dry_run: bool,
    list_items: bool,
    quiet: bool,
) -> None:
    """Send accepted records of a time range to Stripe again (after a Stripe outage, a sink bug, a lost
    consumer group), never double-billing: records Stripe may already count and can no longer
    deduplicate (older than 24 h) are only sent when the delivery record proves Stripe never got them.

    \b
    meterstream replay --from 2026-11-20T08:00Z --to 2026-11-20T14:00Z --dry-run
    """
    from processor.ops.replay import plan_replay, run_replay
    from processor.state.connect import sync_redis

    lo, hi = _range(start, end, last)
    client = sync_redis(settings)
    with Progress("reading meter-events-accepted", quiet=quiet) as progress:
        plan = plan_replay(settings, client, lo * 1000, hi * 1000, meter=meter, on_consumed=progress)
    click.echo(f"replay of {iso(lo)} .. {iso(hi)}: {len(plan.items)} accepted record(s) in range")
    if plan.unreadable:
        click.echo(f"  {plan.unreadable} unreadable record(s) on the topic (the sink dead-letters those)")
    echo_decisions(plan.counts(), "will send", "will not send")
    if list_items:
        for item in plan.items:
            r = item.record
            click.echo(
                f"  {'send' if item.decision.send else 'skip'}  {r.kind:<6} {r.meter_id} {r.customer}"
                f" {r.identifier}  received {iso(int(r.raw.get('received_at', 0)) // 1000)}  {item.decision.reason}"
            )
    if dry_run or not plan.to_send:
        return
    with Progress("sending to Stripe", quiet=quiet) as progress:
        progress.total(len(plan.to_send))
        totals = run_replay(settings, plan, on_done=progress)
    click.echo(
        f"sent {totals.get('delivered', 0)} record(s) to Stripe ({totals.get('duplicates_ok', 0)} it already had);"
        f" {totals.get('dead_lettered', 0)} refused (see meter-events-stripe-dlq)"
    )


# ---- reconcile ---------------------------------------------------------------------------------------
@click.command("reconcile")
@click.option("--meter", required=True, help="Meter id or event_name.")
@click.option("--customer", help="One customer (default: every customer of the meter, with a summary).")
@range_options("Range (aligned to --group)", to_help="End, exclusive, aligned to --group.")
@click.option("--group", type=click.Choice(["hour", "day"]), default="day", show_default=True, help="Bucket size.")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True, help="Drift lines per customer.")
@click.option("-q", "--quiet", is_flag=True, help="No progress.")
@click.pass_obj
def reconcile(
    settings: Settings,
    meter: str,
    customer: str | None,
    start: str | None,
    end: str | None,
    last: str | None,
    group: str,
    limit: int,
    quiet: bool,
) -> None:
    """Compare the Redis aggregates with Stripe's event summaries bucket by bucket; exit 1 on drift.
    Progress (customers compared of the total) goes to stderr: one customer is one or more Stripe reads
    at METERSTREAM_STRIPE_RATE per second, so a meter with 10,000 customers takes minutes.

    \b
    meterstream reconcile --meter api_requests --customer cus_123 --last 7d
    meterstream reconcile --meter api_requests --from 2026-11-01 --to 2026-12-01   # every customer
    """
    from processor.cli.usage import find_meter
    from processor.errors import InvalidRequestError
    from processor.ops.reconcile import Reconciler
    from processor.state.connect import sync_redis
    from processor.state.keys import Keys

    lo, hi = _range(start, end, last, align=86400 if group == "day" else 3600)
    client = sync_redis(settings, decode_responses=True)
    try:
        m = find_meter(client, Keys(settings.redis_prefix), meter)
        job = Reconciler(settings, client, m)
        customers = [customer] if customer is not None else job.customers()
        click.echo(
            f"reconcile {m.id} ({m.event_name}, {m.formula}) {iso(lo)} .. {iso(hi)} by {group}"
            f" against Stripe meter {job.stripe_meter_id()}: {len(customers)} customer(s)"
        )
        drifting = buckets = 0
        with Progress("customers compared", quiet=quiet or customer is not None) as progress:
            progress.total(len(customers))
            for name in customers:
                try:
                    result = job.compare(name, lo, hi, group)
                except InvalidRequestError as exc:
                    raise click.UsageError(f"{exc.message} ({exc.param})") from None
                progress(1)
                if not result.drift:
                    if customer is not None:
                        click.echo(f"{name}: no drift in {result.windows} {group}(s)")
                    continue
                drifting += 1
                buckets += len(result.drift)
                click.echo(f"{name}: {len(result.drift)} {group}(s) drift")
                for d in result.drift[:limit]:
                    ours = "-" if d.ours is None else str(d.ours)
                    theirs = "-" if d.stripe is None else str(d.stripe)
                    click.echo(f"  {iso(d.start)}  redis={ours}  stripe={theirs}")
                if len(result.drift) > limit:
                    click.echo(f"  ... {len(result.drift) - limit} more")
    finally:
        client.close()
    click.echo(f"{drifting} of {len(customers)} customer(s) drift ({buckets} bucket(s))")
    if drifting:
        sys.exit(1)


# ---- import ------------------------------------------------------------------------------------------
@click.command("import")
@click.argument("file")
@click.option("--format", "fmt", type=click.Choice(["csv", "json", "jsonl"]), help="Default: from the extension.")
@click.option("--state", "state_path", type=click.Path(dir_okay=False, path_type=Path), help="Resume state file.")
@click.option("--customer-key", help="Payload key of the customer (default: the meter's, else stripe_customer_id).")
@click.option("--skip-invalid", is_flag=True, help="Send the valid rows even if some rows are invalid.")
@click.option("--force", is_flag=True, help="Import a file again although it was imported before.")
@click.option("--dry-run", is_flag=True, help="Only check the file.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def import_file(
    settings: Settings,
    file: str,
    fmt: str | None,
    state_path: Path | None,
    customer_key: str | None,
    skip_invalid: bool,
    force: bool,
    dry_run: bool,
    quiet: bool,
) -> None:
    """Import meter events from Stripe's bulk formats (Dashboard CSV, JSON array, JSON Lines) into
    meter-events. Rows without an identifier get a deterministic one, so importing a file twice never
    counts twice; an interrupted import resumes where Kafka's acknowledgements stopped.

    \b
    meterstream import usage-november.csv
    meterstream import s3-export.jsonl --skip-invalid
    meterstream import s3://usage-exports/2026-11/day-01.csv   # one S3 object (docs/s3-connector.md)
    """
    from processor.ops.importer import Importer
    from processor.state.connect import sync_redis

    if file.startswith("s3://"):
        from processor.cli.s3 import import_s3

        if state_path is not None:
            raise click.UsageError("--state is for local files (an S3 object's state is kept in Redis)")
        import_s3(
            settings, file, fmt=fmt, customer_key=customer_key, skip_invalid=skip_invalid, force=force, dry_run=dry_run
        )
        return
    path = Path(file)
    if not path.is_file():
        raise click.BadParameter(f"File {file!r} does not exist.", param_hint="'FILE'")
    client = sync_redis(settings, decode_responses=True)
    try:
        job = Importer(settings, path, fmt=fmt, state_path=state_path, customer_key=customer_key, redis_client=client)
        checked = job.check()
        click.echo(f"{file}: {checked.fmt}, {checked.rows} valid row(s), {len(checked.errors)} invalid")
        for name, count in checked.ignored.items():
            click.echo(f"  ignored the unknown field {name!r} in {count} row(s)")
        for error in checked.errors[:20]:
            where = "" if error.column is None else f" ({error.column} = {json.dumps(error.cell)})"
            click.echo(f"  line {error.line}: {error.message}{where}")
        if len(checked.errors) > 20:
            click.echo(f"  ... {len(checked.errors) - 20} more")
        done = checked.already_imported
        if done is not None and not force:
            when = iso(done.finished_at or 0)
            click.echo(f"already imported at {when} ({done.rows} row(s)); --force imports it again")
            return
        if checked.errors and not skip_invalid:
            click.echo("nothing sent: fix the rows above or pass --skip-invalid")
            sys.exit(1)
        if dry_run:
            return
        with Progress("importing", quiet=quiet) as progress:
            progress.total(checked.rows)
            report = job.send(force=force, on_acked=progress)
    finally:
        client.close()
    resumed = f" ({report.skipped_done} acknowledged by an earlier run)" if report.skipped_done else ""
    click.echo(f"imported {report.sent} row(s) into {topic_name(Topic.EVENTS, settings.topic_prefix)}{resumed}")


# ---- correct -----------------------------------------------------------------------------------------
@click.command("correct")
@click.option("--meter", required=True, help="Meter id or event_name (a sum meter, not pre-aggregated).")
@click.option("--customer", required=True, help="Customer id.")
@click.option("--value", type=int, required=True, help="The compensating value, e.g. -25 (whole number).")
@click.option("--reference", required=True, help="Ticket or reason; makes the correction unique and idempotent.")
@click.option("--timestamp", help="Event time of the correction (default: now; within the last 35 days).")
@click.option("--dry-run", is_flag=True, help="Only show the event that would be sent.")
@click.pass_obj
def correct(
    settings: Settings,
    meter: str,
    customer: str,
    value: int,
    reference: str,
    timestamp: str | None,
    dry_run: bool,
) -> None:
    """Correct usage beyond Stripe's 24 h cancellation window with a compensating event that flows
    through the normal pipeline (sum meters only; see docs/operations.md). Running it twice with the
    same arguments sends it once.

    \b
    meterstream correct --meter api_requests --customer cus_123 --value -250 --reference INC-4711
    """
    from processor.cli.usage import find_meter
    from processor.ops.correct import apply_correction, plan_correction
    from processor.state.connect import sync_redis
    from processor.state.keys import Keys

    client = sync_redis(settings, decode_responses=True)
    try:
        m = find_meter(client, Keys(settings.redis_prefix), meter)
        fix = plan_correction(m, customer, value, _time(timestamp, "--timestamp"), reference)
        click.echo(
            f"correction {fix.identifier}: {fix.value:+d} to {m.id} ({m.event_name}) for {customer}"
            f" at {iso(fix.timestamp)}, reference {fix.reference!r}"
        )
        if dry_run:
            return
        sent = apply_correction(settings, client, fix)
    finally:
        client.close()
    events = topic_name(Topic.EVENTS, settings.topic_prefix)
    click.echo(f"sent to {events}" if sent else "already sent before: nothing to do")


COMMANDS: list[click.Command] = [rebuild, replay, reconcile, import_file, errors, correct]
