"""v2 meter-event sessions: ``POST /v2/billing/meter_event_session`` hands out a token that authorizes
``POST /v2/billing/meter_event_stream`` for 15 minutes, as Stripe's does.

Tokens live in Redis (so any gateway replica accepts a token another one issued) under a digest of the
token, never the token itself: a Redis dump does not hold usable credentials. The Redis key outlives the
token by another validity period, so a token used late is answered ``billing_meter_event_session_expired``
(the SDK raises ``TemporarySessionExpiredError`` and the caller makes a new session) rather than "invalid".
Each process also remembers the tokens it has checked, so a stream request costs no Redis round trip.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from processor.errors import AuthenticationFailedError, SessionExpiredError
from processor.state.keys import GATEWAY_SESSION_TTL_S, Keys

__all__ = ["Session", "SessionStore"]

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


class SessionStore:
    """Issues and checks session tokens."""

    def __init__(
        self, client: aioredis.Redis | aioredis.RedisCluster, keys: Keys, *, ttl_s: int = GATEWAY_SESSION_TTL_S
    ) -> None:
        self._redis = client
        self._keys = keys
        self.ttl_s = ttl_s
        self._known: dict[str, float] = {}  # digest -> expires_at (unix s)

    async def create(self) -> Session:
        now = time.time()
        token = _TOKEN_PREFIX + secrets.token_hex(32)
        session = Session("mes_" + secrets.token_hex(12), token, now, now + self.ttl_s)
        digest = _digest(token)
        await self._redis.set(self._keys.gateway_session(digest), repr(session.expires_at), ex=2 * self.ttl_s)
        self._remember(digest, session.expires_at)
        return session

    async def check(self, token: str | None) -> None:
        """Raise 401 unless ``token`` is a live session token (expired: ``SessionExpiredError``)."""
        if not token:
            raise AuthenticationFailedError(_INVALID)
        digest = _digest(token)
        expires_at = self._known.get(digest)
        if expires_at is None:
            raw = await self._redis.get(self._keys.gateway_session(digest))
            if raw is None:
                raise AuthenticationFailedError(_INVALID)
            expires_at = float(raw)
            self._remember(digest, expires_at)
        if time.time() >= expires_at:
            raise SessionExpiredError()

    def _remember(self, digest: str, expires_at: float) -> None:
        if len(self._known) >= _MAX_REMEMBERED:
            now = time.time()
            self._known = {d: e for d, e in self._known.items() if e > now}
            if len(self._known) >= _MAX_REMEMBERED:
                self._known.clear()
        self._known[digest] = expires_at
