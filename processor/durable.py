"""The embedded services of ``meterstream up --data DIR``: the same Tansu broker and Valkey as the ephemeral
``up``, with their state in DIR so it survives a restart, a crash and a kill -9 of every process.

- **Broker**: Tansu with its object-store engine (``s3://tansu/``) on :mod:`processor.objectstore`, a
  local, fsync-per-write S3-compatible store in ``DIR/broker``. (The Tansu build we ship has no
  PostgreSQL or SQLite engine compiled in; see that module's docstring.) Tansu acknowledges a produce
  after the store answered the PUT of its batch, so an acknowledged record is on disk.
- **Redis**: Valkey with the append-only file in ``DIR/valkey`` (``appendfsync everysec``: every write
  reaches the OS before Valkey answers, so a killed process loses nothing; a power loss at most a second).

Ports are chosen once and kept in ``DIR/up.json`` with the generated gateway and emulator keys, so the
``export`` lines ``up`` printed stay valid across restarts.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processor.embedded import EmbeddedRedis, _Child, _wait_ready, free_port, tansu_argv

__all__ = ["DurableKafka", "DurableState", "durable_redis"]

log = logging.getLogger(__name__)

BUCKET = "tansu"


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        # as the servers themselves bind: connections of a killed predecessor in TIME_WAIT do not count
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class DurableState:
    """What ``up --data`` keeps besides the services' own data: ports and generated keys (``DIR/up.json``,
    mode 0600: it holds the keys)."""

    path: Path
    values: dict[str, Any]

    @classmethod
    def load(cls, data_dir: Path) -> DurableState:
        data_dir.mkdir(parents=True, exist_ok=True)
        path = data_dir / "up.json"
        values = json.loads(path.read_text()) if path.exists() else {}
        return cls(path, values)

    def port(self, name: str) -> int:
        """The port kept for ``name``, or a new free one (also when the kept one is taken now)."""
        kept = self.values.get(f"{name}_port")
        port = kept if isinstance(kept, int) and _port_free(kept) else free_port()
        if port != kept:
            self.values[f"{name}_port"] = port
            self.save()
        return port

    def secret(self, name: str, prefix: str) -> str:
        value = self.values.get(name)
        if not isinstance(value, str):
            value = prefix + secrets.token_hex(16)
            self.values[name] = value
            self.save()
        return value

    def save(self) -> None:
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump(self.values, fh, indent=2, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)


class DurableKafka:
    """Tansu on the local object store, both as child processes; ``bootstrap`` is ``127.0.0.1:<port>``."""

    def __init__(self, data_dir: Path, state: DurableState, logdir: Path) -> None:
        self.data_dir = data_dir
        self.logdir = logdir
        self.port = state.port("kafka")
        self.store_port = state.port("objectstore")
        self._store: _Child | None = None
        self._broker: _Child | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> DurableKafka:
        store_dir = self.data_dir / "broker"
        self._store = _Child(
            "object store",
            [sys.executable, "-m", "processor.objectstore", "--dir", str(store_dir), "--port", str(self.store_port)],
            self.logdir / "objectstore.log",
        )
        self._store.start()
        _wait_ready(self._store, self._store_ready, timeout)
        self._broker = _Child("Tansu broker", tansu_argv(self.port, f"s3://{BUCKET}/"), self.logdir / "tansu.log")
        self._broker.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("AWS_")},
            "AWS_ENDPOINT": f"http://127.0.0.1:{self.store_port}",
            "AWS_ALLOW_HTTP": "true",
            "AWS_REGION": "us-east-1",
            "AWS_ACCESS_KEY_ID": "meterstream",
            "AWS_SECRET_ACCESS_KEY": "local-object-store",  # the store is loopback-only and checks nothing
            "NO_COLOR": "1",
        }
        self._broker.start()
        _wait_ready(self._broker, self._broker_ready, timeout)
        log.info("durable Kafka broker (Tansu on %s) ready on %s", store_dir, self.bootstrap)
        return self

    def _store_ready(self) -> bool:
        request = urllib.request.Request(f"http://127.0.0.1:{self.store_port}/{BUCKET}", method="PUT")
        try:
            with urllib.request.urlopen(request, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _broker_ready(self) -> bool:
        from processor.kafka.admin import broker_answers  # lazily: `import processor` loads no Kafka client

        return broker_answers(self.bootstrap)

    def stop(self) -> None:
        for child in (self._broker, self._store):
            if child is not None:
                child.stop()
        self._broker = self._store = None

    def __enter__(self) -> DurableKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def durable_redis(data_dir: Path, state: DurableState) -> EmbeddedRedis:
    """Valkey with its append-only file in ``DIR/valkey`` (the later arguments override the ephemeral
    defaults ``--appendonly no --save ""``)."""
    workdir = data_dir / "valkey"
    workdir.mkdir(parents=True, exist_ok=True)
    return EmbeddedRedis(
        workdir=workdir,
        port=state.port("redis"),
        # A password as in the ephemeral mode (docs/security.md), kept in up.json so a restart reopens it.
        password=state.secret("redis_password", ""),
        extra_args=["--appendonly", "yes", "--appendfsync", "everysec", "--appenddirname", "aof"],
    )
