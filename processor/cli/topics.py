"""``meterstream topics ensure``: create or check the catalog's topics."""

from __future__ import annotations

import click

from processor.config import Settings
from processor.kafka.admin import ensure_topics


@click.group()
def topics() -> None:
    """Manage the topics of the catalog (SPEC §2)."""


@topics.command("ensure")
@click.option("--check", is_flag=True, help="Only check; create nothing. Exit 1 on drift or missing topics.")
@click.pass_obj
def ensure(settings: Settings, check: bool) -> None:
    """Create missing topics and report drift (idempotent: safe to run any time)."""
    reports = ensure_topics(settings, check_only=check)
    for report in reports:
        click.echo(report.line())
    if check and any(r.status != "ok" for r in reports):
        raise SystemExit(1)
