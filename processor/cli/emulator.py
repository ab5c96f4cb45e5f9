"""``meterstream stripe-emulator``: the local Stripe billing emulator (see docs/stripe-emulator.md)."""

from __future__ import annotations

import click

from processor.emulator import EmulatorConfig, FaultConfig, serve
from processor.errors import InvalidRequestError


def _probability(ctx: click.Context, param: click.Parameter, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise click.BadParameter("must be a probability between 0 and 1")
    return value


@click.command("stripe-emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=12111, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on.")
@click.option(
    "--api-key",
    default=None,
    help="The only API key accepted. Without it, any key that starts with sk_test_ is accepted.",
)
@click.option("--fail-429", default=0.0, callback=_probability, help="Probability of an injected 429.")
@click.option("--fail-500", default=0.0, callback=_probability, help="Probability of an injected 500.")
@click.option(
    "--fail-after-commit",
    default=0.0,
    callback=_probability,
    help="Probability of answering 500 AFTER a successful POST was carried out.",
)
@click.option("--latency-ms", default=0.0, type=click.FloatRange(0, 60_000), help="Latency added to every request.")
@click.option(
    "--rps", default=None, type=click.FloatRange(0, None, min_open=True), help="Requests/s limit (429 above)."
)
@click.option("--seed", default=None, type=int, help="Seed of the fault dice (repeatable fault sequences).")
@click.option(
    "--strict-customers",
    is_flag=True,
    help="Events for unknown customers are not counted (meter_event_customer_not_found), as in real Stripe.",
)
@click.option(
    "--report-window",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0.1, 86_400),
    help="Seconds of asynchronous errors grouped into one error report (event destinations).",
)
def stripe_emulator(
    host: str,
    port: int,
    api_key: str | None,
    fail_429: float,
    fail_500: float,
    fail_after_commit: float,
    latency_ms: float,
    rps: float | None,
    seed: int | None,
    strict_customers: bool,
    report_window: float,
) -> None:
    """Run a local Stripe billing-meter API emulator (meters, meter events, v2 stream, summaries,
    error reports to event destinations)."""
    try:
        faults = FaultConfig(
            fail_429=fail_429,
            fail_500=fail_500,
            latency_ms=latency_ms,
            rps=rps,
            fail_after_commit=fail_after_commit,
        )
    except InvalidRequestError as exc:
        raise click.BadParameter(exc.message) from None
    config = EmulatorConfig(
        host=host,
        port=port,
        api_key=api_key,
        faults=faults,
        seed=seed,
        strict_customers=strict_customers,
        report_window_s=report_window,
    )
    serve(config)
