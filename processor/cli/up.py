"""``meterstream up``: everything in one command, on embedded defaults where nothing is configured."""

from __future__ import annotations

import contextlib
import logging
import secrets
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType

import click

from processor.config import STRIPE_DEFAULT_API_BASE, Secret, Settings
from processor.embedded import EmbeddedKafka, EmbeddedRedis, free_port
from processor.kafka.admin import ensure_topics
from processor.logs import mask_secrets
from processor.meters.registry import MeterRegistry
from processor.supervisor import Supervisor

log = logging.getLogger(__name__)

#: The pipeline components ``up`` runs, in start order. Each is a ``meterstream`` subcommand.
COMPONENTS: list[tuple[str, list[str]]] = [
    ("processor", ["processor"]),
    ("sink", ["sink"]),
    ("gateway", ["gateway"]),
    ("notifier", ["notifier"]),  # error reports to event destinations (docs/notifications.md)
]


@click.command("up")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where embedded services and components write their logs (default: a temp dir).",
)
@click.option("--no-components", is_flag=True, help="Start only the broker, Redis and topics.")
@click.pass_obj
def up(settings: Settings, state_dir: Path | None, no_components: bool) -> None:
    """Start the broker, Redis, topics and the pipeline; run until Ctrl-C."""
    state_dir = state_dir or Path(tempfile.mkdtemp(prefix="meterstream-up-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    with contextlib.ExitStack() as stack:
        ephemeral: list[str] = []
        if not settings.kafka_bootstrap:
            kafka = stack.enter_context(EmbeddedKafka(workdir=state_dir))
            settings = settings.replace(kafka_bootstrap=kafka.bootstrap)
            ephemeral.append("Kafka (embedded Tansu, memory storage)")
        if not settings.redis_url:
            redis_srv = stack.enter_context(EmbeddedRedis(workdir=state_dir))
            settings = settings.replace(redis_url=redis_srv.url)
            ephemeral.append("Redis (embedded Valkey, no persistence)")
        if ephemeral and len(ephemeral) == 1:
            # One side ephemeral, the other persistent: they would disagree after the next restart.
            log.warning(
                "only %s is embedded and ephemeral; the other side keeps state across restarts. "
                "Configure both METERSTREAM_KAFKA_BOOTSTRAP and METERSTREAM_REDIS_URL for durable state.",
                ephemeral[0],
            )

        generated_key = None
        if not settings.api_keys:
            # The gateway refuses to run without a key; shaped like a Stripe test key so log masking catches it.
            generated_key = "sk_test_ms" + secrets.token_hex(16)
            settings = settings.replace(api_keys=(Secret(generated_key),))

        emulator_port = None
        if not settings.stripe_api_key and settings.stripe_api_base == STRIPE_DEFAULT_API_BASE:
            # No Stripe configured: the sink talks to the local emulator, never to api.stripe.com.
            emulator_port = free_port()
            emulator_key = "sk_test_emu" + secrets.token_hex(12)
            settings = settings.replace(
                stripe_api_base=f"http://127.0.0.1:{emulator_port}", stripe_api_key=Secret(emulator_key)
            )

        for report in ensure_topics(settings):
            log.info("topic %s", report.line())
        # Topic and Redis mirror of the meters agree before anything reads them (a restarted ephemeral broker
        # gets its meters back from a persistent Redis, and the other way round).
        registry = MeterRegistry(settings)
        try:
            registry.sync()
        finally:
            registry.close()

        supervisor = Supervisor(settings, state_dir)
        if not no_components:
            if emulator_port is not None:
                supervisor.add(
                    "stripe-emulator",
                    "stripe-emulator",
                    "--port",
                    str(emulator_port),
                    "--api-key",
                    settings.stripe_api_key.reveal(),
                )
            for name, args in COMPONENTS:
                supervisor.add(name, *args)
        supervisor.start_all()
        stack.callback(supervisor.stop_all)

        click.echo("meterstream is up")
        click.echo(f"  kafka bootstrap : {settings.kafka_bootstrap}")
        click.echo(f"  redis           : {mask_secrets(settings.redis_url or '')}")  # a URL may hold a password
        click.echo(f"  topic prefix    : {settings.topic_prefix or '(none)'}")
        click.echo(f"  logs            : {state_dir}")
        for comp in supervisor.components:
            click.echo(f"  {comp.name:<16}: running (log {comp.log_path.name})")
        if not no_components:
            click.echo(f"  dashboard       : http://127.0.0.1:{settings.gateway_port}/ (user name: the API key)")
            click.echo(f"  upload usage    : http://127.0.0.1:{settings.gateway_port}/upload (Stripe's CSV template)")
            click.echo(
                f"  api key         : {generated_key} (generated; set METERSTREAM_API_KEYS to choose your own)"
                if generated_key
                else "  api key         : one of METERSTREAM_API_KEYS"
            )
        if not no_components:
            stripe_where = (
                f"{settings.stripe_api_base} (local emulator, key {settings.stripe_api_key.reveal()}; "
                "set METERSTREAM_STRIPE_API_KEY for real Stripe)"
                if emulator_port is not None
                else settings.stripe_api_base
            )
            click.echo(f"  stripe          : {stripe_where}")
        if ephemeral:
            click.echo("  state           : EPHEMERAL — " + "; ".join(ephemeral) + " — lost when `up` stops")
        click.echo("Press Ctrl-C to stop.", nl=True)

        watcher = threading.Thread(target=supervisor.watch, name="supervisor", daemon=True)
        watcher.start()
        stop.wait()
        click.echo("stopping...")
