"""Operations commands (``rebuild``, ``replay``, ``reconcile``, ``import``, ``errors``, ``correct``).

Thin click wrappers over :mod:`processor.ops`; every command is safe to run while the pipeline is live
(docs/operations.md is the runbook). Progress bars go to stderr, results to stdout, and commands that
check something exit 1 when they found a difference (so scripts and cron jobs can alert on it).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import click

from processor.cli.usage import parse_time
from processor.config import Settings

__all__ = ["COMMANDS", "Progress", "iso"]


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Progress:
    """A click progress bar on stderr, opened once the total is known (``None``: a running count)."""

    def __init__(self, label: str, *, quiet: bool = False) -> None:
        self.label = label
        self.quiet = quiet
        self._bar: Any = None

    def total(self, length: int | None) -> None:
        if self.quiet or self._bar is not None:
            return
        if length is None:
            self._bar = click.progressbar(
                iterable=(x for x in ()), label=self.label, file=sys.stderr, show_pos=True, show_eta=False
            )
        else:
            self._bar = click.progressbar(length=length, label=self.label, file=sys.stderr, show_pos=True)
        self._bar.__enter__()

    def __call__(self, n: int) -> None:
        if self._bar is None:
            self.total(None)
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
            self._bar = None


def _time(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    try:
        return parse_time(value)
    except click.BadParameter as exc:
        raise click.BadParameter(str(exc.message), param_hint=name) from None


def _required_time(value: str | None, name: str) -> int:
    parsed = _time(value, name)
    if parsed is None:
        raise click.UsageError(f"Missing option '{name}'.")
    return parsed


# ---- rebuild -----------------------------------------------------------------------------------------
@click.command("rebuild")
@click.option("--from", "start", help="Range start (unix seconds or ISO 8601); widened to the UTC day.")
@click.option("--to", "end", help="Range end, exclusive; widened to the end of its UTC day.")
@click.option("--meter", help="Only this meter (id or event_name).")
@click.option("--customer", help="Only this customer.")
@click.option("--diff", "show_diff", is_flag=True, help="List every differing bucket; exit 1 when any differs.")
@click.option("--swap", is_flag=True, help="Replace the live buckets of the range with the rebuilt ones.")
@click.option("--limit", type=click.IntRange(min=0), default=50, show_default=True, help="Diff lines shown.")
@click.option("--cleanup", is_flag=True, help="Only delete shadows left by interrupted rebuilds, then exit.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar.")
@click.pass_obj
def rebuild(
    settings: Settings,
    start: str | None,
    end: str | None,
    meter: str | None,
    customer: str | None,
    show_diff: bool,
    swap: bool,
    limit: int,
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
    from processor.state.store import connect_redis

    if cleanup:
        client = connect_redis(settings.require_redis_url())
        click.echo(f"deleted {cleanup_shadows(client, settings.redis_prefix, all_runs=True)} key(s) of old shadows")
        return
    lo, hi = _required_time(start, "--from"), _required_time(end, "--to")
    if hi <= lo:
        raise click.UsageError("--to must be after --from")
    with (
        Progress("reading the topics", quiet=quiet) as progress,
        Rebuild(settings, lo, hi, meter=meter, customer=customer, on_consumed=progress, on_total=progress.total) as job,
    ):
        job.build()
        report = job.swap() if swap else job.compare()
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
    elif show_diff and n_diff:
        sys.exit(1)


COMMANDS: list[click.Command] = [rebuild]
