"""The faust-streaming app of ``meterstream sink``: the consumer group, the DLQ producer and the lifecycle.

Faust (on aiokafka) does the Kafka side: it joins the group ``METERSTREAM_SINK_GROUP``, assigns
partitions, fetches with flow control, produces to the Stripe DLQ and commits offsets. The delivery logic
is :class:`~processor.sink.engine.SinkEngine`. How they meet:

- the ``intake`` agent reads ``meter-events-accepted`` through a *no-ack* stream and hands each record
  to the engine, so faust never acknowledges a record just because the agent moved on;
- the engine acknowledges records to faust (``consumer.ack``) strictly in offset order, once the
  contiguous prefix of a partition is delivered or dead-lettered. Faust commits acknowledged offsets
  every second. (Acknowledging in order matters: faust's own gap tracking can skip an unacknowledged
  offset when acknowledgements arrive out of order.)
- rebalances reach the engine through faust's ``on_partitions_revoked`` / ``on_partitions_assigned``
  signals, and records fetched before a rebalance are recognised by faust's generation id.

Settings for the Tansu broker (SPEC §11): a 6 s session timeout (group joins take ~23 s otherwise),
no leader topic (``topic_disable_leader``), no topic declaration, no tables or changelogs (memory
store), no web server. ``consumer_auto_offset_reset="earliest"``: a new group starts at the beginning.

Shutdown on SIGTERM/SIGINT is a drain: intake and planning stop, the requests in flight finish (bounded
by :data:`DRAIN_TIMEOUT_S`), the done offsets are committed, and only then does faust stop; the process
exits 0. Records still queued are not committed: the next owner of their partition reads them again.
A fatal error (Stripe refuses the API key, the DLQ cannot be written) stops the sink the same way,
without acknowledging anything unfinished, and ``run_sink`` raises it (non-zero exit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from processor.config import Settings
from processor.errors import ConfigError, KafkaDeliveryError, MeterstreamError, SinkError
from processor.kafka.faust_config import faust_broker_settings
from processor.sink.delivery import DeliveryLog, RecordingStripeApi
from processor.sink.engine import SinkEngine
from processor.sink.meters import StripeMeters
from processor.sink.metrics import SinkMetrics
from processor.sink.ratelimit import AsyncRateLimiter
from processor.state.connect import async_redis
from processor.state.keys import Keys
from topics import Topic

__all__ = ["DRAIN_TIMEOUT_S", "SinkService", "build_app", "fresh_datadir", "run_sink"]

log = logging.getLogger(__name__)

#: How long a shutdown waits for the requests in flight (retries included) to finish. Below Kubernetes' default 30 s grace
#: period, so the commit after the drain happens before a SIGKILL would.
DRAIN_TIMEOUT_S = 20.0
#: How often the counters are added to the Redis stats hash.
METRICS_FLUSH_S = 2.0
#: faust's data directories: ``<tmp>/meterstream-sink-<pid>-<random>``.
DATADIR_PREFIX = "meterstream-sink-"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def fresh_datadir(parent: str | None = None) -> str:
    """A new data directory for faust, after removing those of sinks that are gone.

    faust insists on a directory; ours holds nothing that must outlive the process (offsets are in Kafka,
    delivery records in Redis), and a clean stop removes it. A sink killed with SIGKILL cannot, so each
    start removes the directories whose process (its pid is in the name) no longer runs: a host whose sinks
    are killed and restarted does not fill its temporary directory."""
    base = Path(parent or tempfile.gettempdir())
    for old in base.glob(DATADIR_PREFIX + "*"):
        pid_text = old.name[len(DATADIR_PREFIX) :].split("-", 1)[0]
        if old.is_dir() and pid_text.isdigit() and not _alive(int(pid_text)):
            shutil.rmtree(old, ignore_errors=True)
    return tempfile.mkdtemp(prefix=f"{DATADIR_PREFIX}{os.getpid()}-", dir=base)


def build_app(settings: Settings, datadir: str) -> faust.App:
    """The faust app: broker settings from the Kafka layer (:func:`processor.kafka.faust_config.faust_broker_settings`),
    plus what is faust's own (see the module docstring)."""
    return faust.App(
        settings.sink_group,
        **faust_broker_settings(settings),
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
        topic_allow_declare=False,
        store="memory://",
        web_enabled=False,
        autodiscover=False,
        stream_wait_empty=False,
        key_serializer="raw",
        value_serializer="raw",
        datadir=datadir,
    )


def _still_assigned(app: faust.App, generation: int | None) -> Callable[[], bool]:
    """Whether a record fetched under consumer ``generation`` still belongs to this consumer (faust
    stamps messages with the rebalance generation they were fetched in)."""
    return lambda: generation is None or generation == app.consumer_generation_id


class SinkService:
    """Wires settings → faust app + engine; :meth:`run` blocks until the sink stopped."""

    def __init__(self, settings: Settings) -> None:
        if not settings.stripe_api_key:
            raise ConfigError("METERSTREAM_STRIPE_API_KEY is not set (the sink needs a Stripe secret key)")
        settings.kafka_config()  # fail now (naming the variable) rather than inside faust
        settings.require_redis_url()
        self.settings = settings
        self.keys = Keys(settings.redis_prefix)
        self._datadir = fresh_datadir()
        self.app = build_app(settings, self._datadir)
        self.source = self.app.topic(settings.topic_prefix + Topic.ACCEPTED)
        self.dlq = self.app.topic(settings.topic_prefix + Topic.STRIPE_DLQ)
        self.metrics = SinkMetrics(settings.stripe_mode)
        self.limiter = AsyncRateLimiter(settings.stripe_rate)
        self.redis = async_redis(settings, decode_responses=True)
        # Every request that carries records goes through the delivery record, so `meterstream replay` can
        # prove later which old records never reached Stripe.
        self.stripe = RecordingStripeApi(
            settings,
            DeliveryLog(self.redis, self.keys),
            acquire=self.limiter.acquire,
            on_request=self._count_request,
        )
        self.registry = StripeMeters(settings, self.stripe, self.redis, on_retry=lambda: self.metrics.incr("retried"))
        self.engine = SinkEngine(
            mode=settings.stripe_mode,
            stripe=self.stripe,
            registry=self.registry,
            limiter=self.limiter,
            metrics=self.metrics,
            dead_letter=self._dead_letter,
            ack=self._ack,
            on_fatal=self._on_fatal,
        )
        self._opened = False
        self._open_lock = asyncio.Lock()
        self._drained = False
        self._worker: faust.Worker | None = None
        self._stopping: asyncio.Future[None] | None = None
        self._register()

    # ---- faust wiring -----------------------------------------------------------------------------
    def _register(self) -> None:
        app, engine = self.app, self.engine

        async def intake(stream: Any) -> None:
            try:
                await self._open()
            except Exception as exc:
                engine.fail(exc)
                return
            async for event in stream.noack().events():
                message = event.message
                await engine.submit(
                    (message.topic, message.partition),
                    message.offset,
                    message.key,
                    message.value,
                    message,
                    current=_still_assigned(app, message.generation_id),
                )

        app.agent(self.source, name="meterstream-sink-intake", concurrency=1)(intake)

        async def on_revoked(_sender: Any, /, *args: Any, signal: Any, **_kwargs: Any) -> None:
            revoked: set[TP] = args[0]
            engine.revoke({(tp.topic, tp.partition) for tp in revoked})

        async def on_assigned(_sender: Any, /, *args: Any, signal: Any, **_kwargs: Any) -> None:
            assigned: set[TP] = args[0]
            engine.assign({(tp.topic, tp.partition) for tp in assigned if tp.topic == self.source.get_topic_name()})

        app.on_partitions_revoked.connect(on_revoked)
        app.on_partitions_assigned.connect(on_assigned)

        async def flush_metrics() -> None:
            await self._flush_metrics()

        app.timer(METRICS_FLUSH_S, name="meterstream-sink-metrics")(flush_metrics)

    async def _open(self) -> None:
        async with self._open_lock:
            if not self._opened:
                await self.stripe.open()
                await self.engine.start()
                self._opened = True
                log.info(
                    "sink forwarding %s to %s in %s mode at <= %s requests/s",
                    self.source.get_topic_name(),
                    self.settings.stripe_api_base,
                    self.settings.stripe_mode,
                    self.settings.stripe_rate,
                )

    def _ack(self, message: Any) -> None:
        self.app.consumer.ack(message)

    async def _dead_letter(self, customer: str, value: bytes) -> None:
        try:
            future = await self.dlq.send(key=customer.encode("utf-8"), value=value, force=True)
            await future
        except Exception as exc:
            raise KafkaDeliveryError(f"cannot write to {self.dlq.get_topic_name()}: {exc}") from exc

    def _count_request(self, name: str) -> None:
        self.metrics.incr("requests")
        if name == "v2.meter_event_session":
            self.metrics.incr("sessions")

    async def _flush_metrics(self) -> None:
        try:
            await self.metrics.flush(self.redis, self.keys.stats("sink"))
        except Exception as exc:  # the dashboard can wait; delivery must not
            log.warning("cannot write sink metrics to Redis: %s", exc)

    def _on_fatal(self, _exc: BaseException) -> None:
        """Stop the worker as a signal would (``Worker.stop`` runs :meth:`drain` through ``on_stop``)."""
        if self._worker is not None and self._stopping is None:
            self._stopping = asyncio.ensure_future(self._worker.stop())

    # ---- shutdown ---------------------------------------------------------------------------------
    async def drain(self) -> None:
        """Stop intake, finish the requests in flight, commit, flush metrics; then faust may stop."""
        if self._drained:
            return
        self._drained = True
        if self._opened:
            finished = await self.engine.drain(DRAIN_TIMEOUT_S)
            with contextlib.suppress(Exception):
                await self.app.consumer.commit()
            log.info("sink drained (%s); totals %s", "complete" if finished else "partial", self.metrics.snapshot())
        await self._flush_metrics()
        await self.stripe.close()
        with contextlib.suppress(Exception):
            await self.redis.aclose()

    def run(self) -> None:
        service = self

        class _Worker(faust.Worker):
            async def on_stop(self) -> None:
                # mode's public lifecycle hook: ``Service.stop`` awaits it before stopping the children
                # (the app, its consumer and producer), so the drain still has faust to commit through.
                # SIGTERM/SIGINT and a fatal error both stop the worker, so both drain here.
                log.info("stopping: draining the sink")
                await service.drain()
                await super().on_stop()

            def on_worker_shutdown(self) -> None:
                # A stop started by a fatal error runs as a task; finish it (drain and commit) before mode
                # gathers and cancels what is left on the loop.
                if service._stopping is not None and not service._stopping.done():
                    self.loop.run_until_complete(service._stopping)

        self._worker = _Worker(self.app, quiet=True, override_logging=False, loglevel=self.settings.log_level)
        # faust's start-up spinner writes cursor escapes (ESC[?25h) even into a log file; logs are lines.
        self._worker.spinner = None
        try:
            self._worker.execute_from_commandline()
        except SystemExit as exc:
            if exc.code not in (0, None) and self.engine.failure is None:
                raise SinkError(f"the sink's faust worker exited with {exc.code}") from exc
        finally:
            shutil.rmtree(self._datadir, ignore_errors=True)
        failure = self.engine.failure
        if isinstance(failure, MeterstreamError):
            raise failure
        if failure is not None:
            raise SinkError(f"the sink stopped on an unexpected error: {failure!r}") from failure


def run_sink(settings: Settings) -> None:
    """Run the sink until SIGTERM/SIGINT (exit 0 after a drain) or a fatal error (raised)."""
    SinkService(settings).run()
