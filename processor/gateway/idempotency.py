"""Stripe's ``Idempotency-Key`` on every POST (docs.stripe.com/idempotency), shared by every gateway
process through Redis.

Why: the official SDK sends a key with each POST and retries network errors, 409s, 5xx and answers with
``Stripe-Should-Retry: true`` under the same key. Without this layer a retry after a lost answer would
publish the usage a second time.

How one key is handled (one Redis string per key, :func:`processor.state.keys.idempotency_key`):

1. ``SET key p<fingerprint>:<owner> NX PX 60s GET`` — one atomic step that either claims the key for this
   request or returns what is already there;
2. claimed: the request runs. A 2xx answer is stored for 24 h as ``d<fingerprint>|<status>|<body>``; any
   other outcome (a validation 400, a retryable 503, an exception) releases the claim, as Stripe saves
   nothing when "no API endpoint began execution", so the client may retry;
3. already there: same fingerprint and stored → the stored answer is replayed with
   ``Idempotent-Replayed: true`` and nothing is published; same fingerprint and still running → 409
   ``idempotency_key_in_use`` (the SDK retries it); another fingerprint → 400 ``idempotency_error``.

The fingerprint is a digest of the method, the path and the raw body: the SDK encodes the same
parameters to the same bytes on each retry.

Keys are scoped to the account (every key of ``METERSTREAM_API_KEYS`` and every session token is the same
account, as Stripe scopes keys per account): a retry still matches after an API key rotation or a new
meter-event session. Meter events without an ``identifier`` get one derived from the key
(:func:`derived_identifier`), so even when the first attempt's records reached Kafka but its answer
did not reach the client (a timeout, a retryable 503), the retry's records carry the same identifiers and
the processor drops them as duplicates: usage cannot count twice.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from typing import cast

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from processor.errors import IdempotencyKeyError, IdempotencyKeyInUseError, InvalidRequestError
from processor.gateway.redis_batch import RedisBatcher
from processor.state.keys import IDEMPOTENCY_LOCK_MS, IDEMPOTENCY_TTL_S, idempotency_key

__all__ = ["HEADER", "MAX_KEY_LENGTH", "IdempotencyStore", "derived_identifier", "idempotency_middleware"]

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
#: The request's idempotency key (for :func:`derived_identifier`), set by the middleware.
REQUEST_KEY = web.RequestKey("idempotency_key", str)
#: Only the Stripe API is idempotent; the dashboard's upload streams its multipart body and has its own
#: file-level deduplication.
_API_PREFIXES = ("/v1/", "/v2/")

# Release the claim only if it is still this request's (a claim that expired may belong to another now).
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def fingerprint(method: str, path: str, body: bytes) -> str:
    return hashlib.blake2b(f"{method} {path}\n".encode() + body, digest_size=16).hexdigest()


def derived_identifier(key: str, index: int = 0) -> str:
    """The identifier of the ``index``-th event of a request sent with ``key``, for events that have none:
    the same for every retry of the request, distinct for every key and position (96-bit digest)."""
    digest = hashlib.blake2b(f"{index}\n{key}".encode("utf-8", "surrogatepass"), digest_size=12).hexdigest()
    return f"idk_{digest}"


def request_key(request: web.Request) -> str | None:
    """The Idempotency-Key the middleware accepted for this request, if any."""
    return request.get(REQUEST_KEY)


class IdempotencyStore:
    """The Redis side: claim, store, release. Each is one command of a shared batch (:class:`RedisBatcher`).
    ``name`` is the key's Redis name (:meth:`name`), computed once per request."""

    def __init__(self, batcher: RedisBatcher, prefix: str, *, ttl_s: int = IDEMPOTENCY_TTL_S) -> None:
        self._batcher = batcher
        self._prefix = prefix
        self.ttl_s = ttl_s
        self._owner = secrets.token_hex(6)  # this process; with a counter, tells claims apart cheaply
        self._seq = 0

    def name(self, key: str) -> str:
        return idempotency_key(self._prefix, key)

    async def claim(self, name: str, fp: str) -> tuple[str, str | None]:
        """``(claim token, None)`` when this request owns the key now, else ``("", what is stored)``."""
        self._seq += 1
        token = f"p{fp}:{self._owner}{self._seq}"
        held = await self._batcher.call("SET", name, token, "NX", "PX", IDEMPOTENCY_LOCK_MS, "GET")
        if held is None:
            return token, None
        return "", cast(str, held)

    async def store(self, name: str, fp: str, status: int, body: bytes) -> None:
        value = f"d{fp}|{status}|" + body.decode("utf-8", "surrogateescape")
        await self._batcher.call("SET", name, value, "EX", self.ttl_s)

    async def release(self, name: str, token: str) -> None:
        await self._batcher.call("EVAL", _RELEASE, 1, name, token)


def _replay_or_refuse(key: str, fp: str, held: str) -> web.Response:
    """The answer to a request whose key is already taken (see the module docstring, step 3)."""
    if held[1 : 1 + len(fp)] != fp:
        raise IdempotencyKeyError(key)
    if held.startswith("p"):
        raise IdempotencyKeyInUseError(key)
    _, status, body = held.split("|", 2)
    return web.Response(
        body=body.encode("utf-8", "surrogateescape"),
        status=int(status),
        content_type="application/json",
        headers={"Idempotent-Replayed": "true"},
    )


def idempotency_middleware(store: IdempotencyStore) -> Middleware:
    """The aiohttp middleware; put it inside authentication (only authenticated requests claim keys)."""

    @web.middleware
    async def idempotency(request: web.Request, handler: Handler) -> web.StreamResponse:
        key = request.headers.get(HEADER)
        if key is None or request.method != "POST" or not request.path.startswith(_API_PREFIXES):
            return await handler(request)
        if not key or len(key) > MAX_KEY_LENGTH:
            raise InvalidRequestError(
                f"Invalid {HEADER}: it must be 1 to {MAX_KEY_LENGTH} characters.",
                param=HEADER,
                code="parameter_invalid_string",
            )
        fp = fingerprint(request.method, request.path, await request.read())
        name = store.name(key)
        token, held = await store.claim(name, fp)
        if held is not None:
            return _replay_or_refuse(key, fp, held)
        request[REQUEST_KEY] = key
        stored = False
        try:
            response = await handler(request)
            if 200 <= response.status < 300 and isinstance(response, web.Response) and isinstance(response.body, bytes):
                await store.store(name, fp, response.status, response.body)
                stored = True
            return response
        finally:
            if not stored:
                try:
                    await store.release(name, token)
                except Exception as exc:  # the claim then expires by itself (IDEMPOTENCY_LOCK_MS)
                    log.warning("releasing an idempotency key failed: %s", type(exc).__name__)

    return idempotency
