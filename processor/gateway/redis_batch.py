"""Many requests' Redis commands in one round trip: the gateway's per-request Redis work (an idempotency
claim, a duplicate check, the stored answer) costs one write and one read per *batch* of concurrent
requests instead of a round trip per command.

Why: redis-py spends tens of microseconds of CPU packing and parsing each command (per-read timeouts,
response callbacks), even inside a pipeline, and at thousands of requests per second that CPU is the
gateway's limit. So on a single Redis server the batcher keeps one connection of its own (opened, with
AUTH/SELECT/TLS, by redis-py), writes the packed commands itself and parses the replies with hiredis. On
Redis Cluster, where commands must be routed by slot, it uses a redis-py pipeline instead.

The commands issued during one pass of the event loop form a batch, written at once. On a single server
batches are pipelined on the one connection (a batch does not wait for the replies of the one before):
a command costs one round trip. On a cluster, the next batch waits for the one in flight.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from processor.errors import StateError
from processor.state.connect import AsyncRedis

__all__ = ["RedisBatcher"]

log = logging.getLogger(__name__)

Arg = str | int | bytes


def _encode(arg: Arg) -> bytes:
    if isinstance(arg, bytes):
        return arg
    if isinstance(arg, int):
        return str(arg).encode()
    return arg.encode("utf-8", "surrogateescape")


def _pack(command: tuple[Arg, ...]) -> bytes:
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = _encode(arg)
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _Lean:
    """One dedicated connection to a single server, pipelined: each batch is written as soon as it is formed,
    without waiting for the replies of the batches before it, and a reader task hands the replies, parsed by
    hiredis, to the waiting futures in order (a server answers one connection's commands in order). A
    command then waits one round trip, not the rest of the batch in flight plus its own."""

    def __init__(self, client: Redis) -> None:
        self._client = client
        self._conn: Any = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: deque[asyncio.Future[Any]] = deque()
        self._reading: asyncio.Task[None] | None = None

    async def _open(self) -> asyncio.StreamWriter:
        """The connection's writer, connecting first if needed (only the batcher's one drain task calls it)."""
        if self._conn is not None and self._writer is not None:
            return self._writer
        conn = self._client.connection_pool.make_connection()  # type: ignore[no-untyped-call]
        await conn.connect()  # AUTH, SELECT, CLIENT SETNAME, TLS: redis-py's handshake
        reader, writer = getattr(conn, "_reader", None), getattr(conn, "_writer", None)
        if not isinstance(reader, asyncio.StreamReader) or not isinstance(writer, asyncio.StreamWriter):
            await conn.disconnect()
            raise RuntimeError("unsupported redis-py connection type")
        waiting: deque[asyncio.Future[Any]] = deque()  # this connection's own: never matched to another's
        self._conn, self._writer, self._waiting = conn, writer, waiting
        self._reading = asyncio.get_running_loop().create_task(self._read(conn, reader, waiting))
        return writer

    async def execute(self, commands: list[tuple[Arg, ...]], futures: list[asyncio.Future[Any]]) -> None:
        """Write ``commands``; their replies (or errors) arrive in ``futures``."""
        writer = await self._open()
        writer.write(b"".join([_pack(c) for c in commands]))
        self._waiting.extend(futures)

    async def _read(self, conn: Any, reader: asyncio.StreamReader, waiting: deque[asyncio.Future[Any]]) -> None:
        parser = hiredis.Reader(encoding="utf-8", errors="surrogateescape")
        failure: BaseException
        try:
            while True:
                data = await reader.read(262_144)
                if not data:
                    raise RedisConnectionError("Redis closed the connection")
                parser.feed(data)
                reply = parser.gets()
                while reply is not False:
                    future = waiting.popleft()
                    if not future.done():
                        if isinstance(reply, hiredis.ReplyError):
                            future.set_exception(ResponseError(str(reply)))
                        else:
                            future.set_result(reply)
                    reply = parser.gets()
        except asyncio.CancelledError:
            failure = StateError("the Redis connection was closed")
            raise
        except Exception as exc:  # the stream is in an unknown state: fail what waits, start over next time
            failure = StateError(f"Redis did not answer: {type(exc).__name__}")
        finally:
            if self._conn is conn:
                self._conn, self._writer = None, None
            while waiting:
                future = waiting.popleft()
                if not future.done():
                    future.set_exception(failure)
            await conn.disconnect()

    async def close(self) -> None:
        reading, self._reading = self._reading, None
        conn, self._conn, self._writer = self._conn, None, None
        if reading is not None:
            reading.cancel()
            try:
                await reading
            except asyncio.CancelledError:
                pass
        elif conn is not None:
            await conn.disconnect()


class RedisBatcher:
    """``await batcher.call("SET", key, value, "NX")`` — the reply, or the command's exception."""

    def __init__(self, client: AsyncRedis) -> None:
        self._client = client
        self._lean = _Lean(client) if isinstance(client, Redis) else None
        self._queue: list[tuple[tuple[Arg, ...], asyncio.Future[Any]]] = []
        self._running = False
        self._task: asyncio.Task[None] | None = None

    @property
    def single_server(self) -> bool:
        """Whether every key is on one server (not a cluster), so one script may touch any keys."""
        return self._lean is not None

    async def call(self, *command: Arg) -> Any:
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((command, future))
        if not self._running:
            self._running = True
            self._task = loop.create_task(self._drain())
        return await future

    async def script(self, sha: str, script: str, *keys_and_args: Arg) -> Any:
        """``EVALSHA`` (``keys_and_args`` starts with the key count), loading the script on NOSCRIPT: 40
        bytes per call instead of the script's text."""
        if self._lean is None:  # Redis Cluster: the script must reach the key's node; EVAL carries it there
            return await self.call("EVAL", script, *keys_and_args)
        try:
            return await self.call("EVALSHA", sha, *keys_and_args)
        except ResponseError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.call("SCRIPT", "LOAD", script)
        return await self.call("EVALSHA", sha, *keys_and_args)

    async def aclose(self) -> None:
        if self._lean is not None:
            await self._lean.close()

    async def _drain(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                await self._send(batch)
        finally:
            self._running = False

    async def _send(self, batch: list[tuple[tuple[Arg, ...], asyncio.Future[Any]]]) -> None:
        try:
            if self._lean is not None:
                # pipelined: returns once written (or connected); the reader task sets the futures
                await self._lean.execute([command for command, _ in batch], [future for _, future in batch])
                return
            results = await self._pipeline([command for command, _ in batch])
        except Exception as exc:  # the connection failed: every command of the batch failed
            # translated here, so the gateway answers Stripe's retryable 503 (app.py, observe)
            failure = exc if isinstance(exc, StateError) else StateError(f"Redis did not answer: {type(exc).__name__}")
            for _, future in batch:
                if not future.done():
                    future.set_exception(failure)
            return
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)

    async def _pipeline(self, commands: list[tuple[Arg, ...]]) -> list[Any]:
        """Redis Cluster: a redis-py pipeline routes each command to its slot's node."""
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            # redis-py's SET reply callback turns the reply into a bool unless told that GET was asked
            options = {"get": True} if command[0] == "SET" and "GET" in command else {}
            pipe.execute_command(*command, **options)
        return list(await pipe.execute(raise_on_error=False))
