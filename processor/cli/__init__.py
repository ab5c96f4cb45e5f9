"""The ``meterstream`` console script: a thin click group.

The group callback resolves :class:`~processor.config.Settings` once, configures logging, and stores the
settings in ``ctx.obj``; each subcommand lives in its own module under ``processor/cli/`` and calls one
library function. Any :class:`~processor.errors.MeterstreamError` becomes a one-line message and its
``exit_code`` (2 for configuration errors), never a traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from processor.config import Settings, load_settings
from processor.errors import MeterstreamError
from processor.logs import configure_logging, mask_secrets

__all__ = ["main", "pass_settings"]


class _Group(click.Group):
    """Turns our errors into clean messages at the outermost layer."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except MeterstreamError as exc:
            click.echo(f"error: {mask_secrets(str(exc))}", err=True)
            sys.exit(exc.exit_code)


pass_settings = click.make_pass_decorator(Settings)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", is_flag=True, help="Log at DEBUG level.")
@click.pass_context
def main(ctx: click.Context, verbose: bool) -> None:
    """meterstream: usage metering on Kafka and Redis with Stripe Billing Meter semantics."""
    try:
        settings = load_settings()
    except MeterstreamError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    configure_logging("DEBUG" if verbose else settings.log_level)
    ctx.obj = settings


def _register() -> None:
    from processor.cli import emulator, events, gateway, meters, ops, processor_cmd, s3, sink, topics, up, usage

    main.add_command(topics.topics)
    main.add_command(meters.meters)
    main.add_command(events.events)
    main.add_command(up.up)
    main.add_command(processor_cmd.processor)
    main.add_command(usage.usage)
    main.add_command(emulator.stripe_emulator)
    main.add_command(sink.sink)
    main.add_command(gateway.gateway)
    from processor.cli.notifier import notifier  # issue 14: error reports to event destinations

    main.add_command(notifier)
    main.add_command(s3.s3_connector)
    for command in ops.COMMANDS:
        main.add_command(command)


_register()
