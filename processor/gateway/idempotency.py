"""Stripe's ``Idempotency-Key`` on every POST (docs.stripe.com/idempotency), shared by every gateway
process through Redis.

Why: the official SDK sends a key with each POST and retries network errors, 409s, 5xx and answers with
``Stripe-Should-Retry: true`` under the same key. Without this layer a retry after a lost answer would
publish the usage a second time.

How one key is handled (one Redis string per key, :func:`processor.state.keys.idempotency_key`):

1. claim: ``SET key p<fingerprint>:<owner> NX PX 60s GET`` — one atomic step that either claims the key for
   this request or returns what is already there;
2. claimed: the request runs. A 2xx answer is stored for 24 h as ``d<fingerprint>|<status>|<body>``; any
   other outcome (a validation 400, a retryable 503, an exception) releases the claim, as Stripe saves
   nothing when "no API endpoint began execution", so the client may retry;
3. already there: same fingerprint and stored → the stored answer is replayed with
   ``Idempotent-Replayed: true`` and nothing is published; same fingerprint and still running → 409
   ``idempotency_key_in_use`` (the SDK retries it); another fingerprint → 400 ``idempotency_error``.

Meter events (:data:`DEFERRED`, the gateway's hot path) claim later, in the same Redis script as their
duplicate-identifier check (``processor/state/lua/held.lua``; :meth:`Claim.settle`): one round trip for
both instead of two. Their rules are judged first, without Redis; a request they refuse then reads the key
(:meth:`IdempotencyStore.peek`) and answers as step 3 would when the key is taken, else with its own 400:
the answers of the claim-first order, since a refused request saves nothing either way. A crash between the
claim and the stored answer leaves a claim that expires after its lease (60 s): until then a retry is
answered 409 (the SDK retries), after it the retry runs again, with the same derived identifiers.

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
from processor.wire import read_body

__all__ = [
    "DEFERRED",
    "HEADER",
    "MAX_KEY_LENGTH",
    "Claim",
    "IdempotencyStore",
    "KeyTakenError",
    "derived_identifier",
    "idempotency_middleware",
    "request_claim",
    "request_key",
]

log = logging.getLogger(__name__)

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
#: Routes whose handler claims the key itself, in one script with its duplicate check (module docstring).
DEFERRED = frozenset({"/v1/billing/meter_events", "/v2/billing/meter_events"})
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


class IdempotencyStore:
    """The Redis side: claim, peek, store, release. Each is one command of a shared batch
    (:class:`RedisBatcher`). ``name`` is the key's Redis name (:meth:`name`), computed once per request."""

    def __init__(self, batcher: RedisBatcher, prefix: str, *, ttl_s: int = IDEMPOTENCY_TTL_S) -> None:
        self._batcher = batcher
        self._prefix = prefix
        self.ttl_s = ttl_s
        self._owner = secrets.token_hex(6)  # this process; with a counter, tells claims apart cheaply
        self._seq = 0

    def name(self, key: str) -> str:
        return idempotency_key(self._prefix, key)

    def token(self, fp: str) -> str:
        """A new claim value: the fingerprint (a retry with other parameters is told apart while the first
        runs) and a value unique to this request (its release removes only its own claim)."""
        self._seq += 1
        return f"p{fp}:{self._owner}{self._seq}"

    async def claim(self, name: str, fp: str) -> tuple[str, str | None]:
        """``(claim token, None)`` when this request owns the key now, else ``("", what is stored)``."""
        token = self.token(fp)
        held = await self._batcher.call("SET", name, token, "NX", "PX", IDEMPOTENCY_LOCK_MS, "GET")
        if held is None:
            return token, None
        return "", cast(str, held)

    async def peek(self, name: str) -> str | None:
        """What the key holds now (an answer or a claim), without claiming it."""
        return cast(str | None, await self._batcher.call("GET", name))

    async def store(self, name: str, fp: str, status: int, body: bytes) -> None:
        value = f"d{fp}|{status}|".encode() + body
        await self._batcher.call("SET", name, value, "EX", self.ttl_s)

    async def release(self, name: str, token: str) -> None:
        await self._batcher.call("EVAL", _RELEASE, 1, name, token)


class KeyTakenError(Exception):
    """The key already holds an answer or another request's claim (``held``): the middleware answers."""

    def __init__(self, held: str) -> None:
        super().__init__("the idempotency key is taken")
        self.held = held


class Claim:
    """One request's ``Idempotency-Key``: its Redis name and fingerprint, and its claim once taken."""

    __slots__ = ("checked", "fp", "key", "name", "store", "token")

    def __init__(self, store: IdempotencyStore, key: str, fp: str) -> None:
        self.store = store
        self.key = key
        self.fp = fp
        self.name = store.name(key)
        self.token: str | None = None  # set while this request owns the key
        self.checked = False  # the key was read (claimed, or found taken, or free): a refusal need not read it

    async def take(self) -> None:
        """Claim the key on its own; :class:`KeyTakenError` when it is taken."""
        token, held = await self.store.claim(self.name, self.fp)
        self.checked = True
        if held is not None:
            raise KeyTakenError(held)
        self.token = token

    def settle(self, token: str, found: object) -> bool:
        """The outcome of held.lua claiming the key with ``token`` unless it is taken or the identifier is
        held: True when the identifier is held (nothing claimed); :class:`KeyTakenError` when the key is
        taken; else the key is this request's now."""
        self.checked = True
        if isinstance(found, str):
            raise KeyTakenError(found)
        if int(cast(int, found)):
            return True
        self.token = token
        return False


_CLAIM = web.RequestKey("idempotency_claim", Claim)


def request_claim(request: web.Request) -> Claim | None:
    """This request's Idempotency-Key (claimed already, or on :data:`DEFERRED` routes still to claim)."""
    return request.get(_CLAIM)


def request_key(request: web.Request) -> str | None:
    """The Idempotency-Key the middleware accepted for this request, if any."""
    claim = request.get(_CLAIM)
    return None if claim is None else claim.key


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
        claim = Claim(store, key, fingerprint(request.method, request.path, await read_body(request)))
        request[_CLAIM] = claim
        try:
            try:
                if request.path not in DEFERRED:
                    await claim.take()
                response = await handler(request)
            except KeyTakenError as taken:
                return _replay_or_refuse(key, claim.fp, taken.held)
            except InvalidRequestError:
                if not claim.checked:  # refused before claiming: the key's stored answer or claim comes first
                    held = await store.peek(claim.name)
                    if held is not None:
                        return _replay_or_refuse(key, claim.fp, held)
                raise
            if (
                claim.token is not None
                and isinstance(response, web.Response)
                and 200 <= response.status < 300
                and isinstance(response.body, bytes)
            ):
                await store.store(claim.name, claim.fp, response.status, response.body)
                claim.token = None  # stored: nothing to release
            return response
        finally:
            if claim.token is not None:
                try:
                    await store.release(claim.name, claim.token)
                except Exception as exc:  # the claim then expires by itself (IDEMPOTENCY_LOCK_MS)
                    log.warning("releasing an idempotency key failed: %s", type(exc).__name__)

    return idempotency
