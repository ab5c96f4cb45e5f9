"""v2 meter-event sessions: ``POST /v2/billing/meter_event_session`` hands out a token that authorizes
``POST /v2/billing/meter_event_stream`` for 15 minutes, as Stripe's does.

Tokens live in Redis (so any gateway replica accepts a token another one issued) under a digest of the
token, never the token itself: a Redis dump does not hold usable credentials. The Redis key outlives the
token by another validity period, so a token used late is answered ``billing_meter_event_session_expired``
(the SDK raises ``TemporarySessionExpiredError`` and the caller makes a new session) rather than "invalid".
Each process also remembers the tokens it has checked, so a stream request costs no Redis round trip.

A session is bound to the API key that created it: the stored value names a fingerprint of that key, and a
token is only accepted while its key is one of the gateway's keys. Removing a key from
``METERSTREAM_API_KEYS`` (and restarting the gateways) revokes every session it issued at once, not 15
minutes later. A value without a fingerprint (written by hand into Redis, or by an older gateway) is no
session.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import redis.asyncio as aioredis

from processor.errors import AuthenticationFailedError, SessionExpiredError
from processor.state.keys import GATEWAY_SESSION_TTL_S, Keys

__all__ = ["Session", "SessionStore", "key_fingerprint"]

_TOKEN_PREFIX = "mes_"
_MAX_REMEMBERED = 100_000
_INVALID = "Invalid meter event session token. Create a session with POST /v2/billing/meter_event_session."


@dataclass(frozen=True)
class Session:
    id: str
    token: str
    created: float
    expires_at: float


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def key_fingerprint(api_key: str) -> str:
    """What a session stores of the key that created it: a digest, never the key."""
    return hashlib.sha256(b"meterstream-session-key\0" + api_key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class SessionStore:
    """Issues and checks session tokens; ``keys`` are the API keys a session may be bound to (the gateway's).

    ``clock`` (Unix seconds, ``time.time`` by default) decides when a session expires: tests move it
    instead of waiting out a validity period."""

    def __init__(
        self,
        client: aioredis.Redis | aioredis.RedisCluster,
        keys: Keys,
        *,
        ttl_s: int = GATEWAY_SESSION_TTL_S,
        api_keys: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self.clock = clock
        self._keys = keys
        self.ttl_s = ttl_s
        self._fingerprints = frozenset(key_fingerprint(k) for k in api_keys)
        self._known: dict[str, tuple[float, str]] = {}  # digest -> (expires_at (unix s), key fingerprint)

    async def create(self, api_key: str) -> Session:
        """A new session for the caller authenticated with ``api_key``."""
        now = self.clock()
        token = _TOKEN_PREFIX + secrets.token_hex(32)
        session = Session("mes_" + secrets.token_hex(12), token, now, now + self.ttl_s)
        digest = _digest(token)
        fingerprint = key_fingerprint(api_key)
        value = f"{session.expires_at!r}|{fingerprint}"
        await self._redis.set(self._keys.gateway_session(digest), value, ex=2 * self.ttl_s)
        self._remember(digest, session.expires_at, fingerprint)
        return session

    async def check(self, token: str | None) -> None:
        """Raise 401 unless ``token`` is a live session token of a current key (expired: ``SessionExpiredError``)."""
        if not token:
            raise AuthenticationFailedError(_INVALID)
        digest = _digest(token)
        known = self._known.get(digest)
        if known is None:
            raw = await self._redis.get(self._keys.gateway_session(digest))
            text = raw.decode() if isinstance(raw, bytes) else str(raw or "")
            expiry, sep, fingerprint = text.partition("|")
            try:
                expires_at = float(expiry)
            except ValueError:
                raise AuthenticationFailedError(_INVALID) from None
            if not sep:
                raise AuthenticationFailedError(_INVALID)
            known = (expires_at, fingerprint)
            self._remember(digest, expires_at, fingerprint)
        expires_at, fingerprint = known
        if fingerprint not in self._fingerprints:  # its key was removed: revoked with it
            raise AuthenticationFailedError(_INVALID)
        if self.clock() >= expires_at:
            raise SessionExpiredError()

    def _remember(self, digest: str, expires_at: float, fingerprint: str) -> None:
        if len(self._known) >= _MAX_REMEMBERED:
            now = self.clock()
            self._known = {d: e for d, e in self._known.items() if e[0] > now}
            if len(self._known) >= _MAX_REMEMBERED:
                self._known.clear()
        self._known[digest] = (expires_at, fingerprint)
