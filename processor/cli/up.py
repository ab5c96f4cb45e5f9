"""``meterstream up``: everything in one command, on embedded defaults where nothing is configured."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import signal
import tempfile
import threading
from pathlib import Path
from types import FrameType

import click

from processor.cli.up_exports import export_lines
from processor.config import EMULATOR_KEY_PREFIX, STRIPE_DEFAULT_API_BASE, Secret, Settings
from processor.durable import DurableKafka, DurableState, durable_redis
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
@click.option(
    "--data",
    "data_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Durable mode: keep the embedded broker's topics and Valkey's data (AOF) in this directory.",
)
@click.option("--no-components", is_flag=True, help="Start only the broker, Redis and topics.")
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address the gateway listens on (0.0.0.0: every interface; see docs/security.md first).",
)
@click.pass_obj
def up(settings: Settings, state_dir: Path | None, data_dir: Path | None, no_components: bool, host: str) -> None:
    """Start the broker, Redis, topics and the pipeline; run until Ctrl-C.

    Without --data the embedded broker and Valkey keep everything in memory (lost when `up` stops);
    with --data DIR they keep it in DIR, and `up --data DIR` again continues where it stopped.
    """
    durable = DurableState.load(data_dir) if data_dir is not None else None
    if data_dir is not None and state_dir is None:
        state_dir = data_dir / "logs"
    state_dir = state_dir or Path(tempfile.mkdtemp(prefix="meterstream-up-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    with contextlib.ExitStack() as stack:
        ephemeral: list[str] = []
        if data_dir is not None and durable is not None:
            if settings.kafka_bootstrap or settings.redis_url:
                raise click.UsageError(
                    "--data keeps the embedded broker's and Valkey's state; unset METERSTREAM_KAFKA_BOOTSTRAP "
                    "and METERSTREAM_REDIS_URL (your own cluster keeps its own state)"
                )
            kafka_d = stack.enter_context(DurableKafka(data_dir, durable, state_dir))
            redis_d = stack.enter_context(durable_redis(data_dir, durable))
            settings = settings.replace(kafka_bootstrap=kafka_d.bootstrap, redis_url=redis_d.url)
        if not settings.kafka_bootstrap:
            kafka = stack.enter_context(EmbeddedKafka(workdir=state_dir))
            settings = settings.replace(kafka_bootstrap=kafka.bootstrap)
            ephemeral.append("Kafka (embedded Tansu, memory storage)")
        if not settings.redis_url:
            # A generated password: anyone local could otherwise read usage or forge gateway sessions.
            redis_srv = stack.enter_context(EmbeddedRedis(workdir=state_dir, password=secrets.token_urlsafe(24)))
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
            generated_key = (
                durable.secret("api_key", "sk_test_ms") if durable is not None else "sk_test_ms" + secrets.token_hex(16)
            )
            settings = settings.replace(api_keys=(Secret(generated_key),))

        emulator_port = None
        if not settings.stripe_api_key and settings.stripe_api_base == STRIPE_DEFAULT_API_BASE:
            # No Stripe configured: the sink talks to the local emulator, never to api.stripe.com.
            emulator_port = durable.port("emulator") if durable is not None else free_port()
            emulator_key = (
                durable.secret("emulator_key", EMULATOR_KEY_PREFIX)
                if durable is not None
                else EMULATOR_KEY_PREFIX + secrets.token_hex(12)
            )
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
                supervisor.add(name, *args, *(["--host", host] if name == "gateway" else []))
        supervisor.start_all()
        stack.callback(supervisor.stop_all)

        exports = export_lines(settings, generated_key=generated_key, emulator=emulator_port is not None)
        env_file = _write_env_file(state_dir, exports)
        click.echo("meterstream is up")
        click.echo(f"  kafka bootstrap : {settings.kafka_bootstrap}")
        click.echo(f"  redis           : {mask_secrets(settings.redis_url or '')}")  # a URL may hold a password
        click.echo(f"  topic prefix    : {settings.topic_prefix or '(none)'}")
        click.echo(f"  logs            : {state_dir}")
        click.echo(f"  env file        : {env_file} (the export lines below; `. {env_file}` in a script)")
        for comp in supervisor.components:
            click.echo(f"  {comp.name:<16}: running (log {comp.log_path.name})")
        if not no_components:
            shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
            where = "every interface" if host in ("0.0.0.0", "::") else "this address only"
            click.echo(f"  gateway         : listening on {host}:{settings.gateway_port} ({where})")
            click.echo(f"  dashboard       : http://{shown}:{settings.gateway_port}/ (user name: the API key)")
            click.echo(f"  upload usage    : http://{shown}:{settings.gateway_port}/upload (Stripe's CSV template)")
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
        elif data_dir is not None:
            click.echo(
                f"  state           : DURABLE in {data_dir} (broker topics and Valkey AOF); "
                "the local Stripe emulator's ledger is in memory"
            )
        click.echo("In another terminal (`. .venv/bin/activate`), paste:")
        for line in exports:
            click.echo(f"  {line}")
        click.echo("Press Ctrl-C to stop.", nl=True)

        watcher = threading.Thread(target=supervisor.watch, name="supervisor", daemon=True)
        watcher.start()
        stop.wait()
        click.echo("stopping...")


def _write_env_file(state_dir: Path, exports: list[str]) -> Path:
    """The same ``export`` lines as the banner's, readable by this user only, so a script or another shell
    can source them (``. meterstream.env``) instead of pasting."""
    path = state_dir / "meterstream.env"
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(exports) + "\n")
    return path
