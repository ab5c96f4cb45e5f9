"""API-key authentication the way Stripe does it: ``Authorization: Bearer <key>`` (or HTTP Basic with the
key as the user name, what ``curl -u sk_test_...:`` sends).

Keys are compared in constant time (:func:`hmac.compare_digest`) against every configured key, so the
answer time does not reveal how much of a key matched. No function here logs or echoes a key: error
messages never contain the presented credential.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from aiohttp import web

from processor.errors import AuthenticationFailedError

__all__ = ["FailedAuthThrottle", "KeyChecker", "presented_key", "require_key"]

_NO_KEY = (
    "You did not provide an API key. You need to provide your API key in the Authorization header, "
    "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY')."
)
_BAD_KEY = "Invalid API Key provided."


def presented_key(request: web.Request) -> str | None:
    """The credential of the request's ``Authorization`` header (Bearer or Basic), or ``None``."""
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if not value:
        return None
    if scheme.lower() == "bearer":
        return value
    if scheme.lower() == "basic":
        # A header may carry any bytes (aiohttp hands non-ASCII ones over as surrogate escapes): b64decode
        # refuses non-ASCII text with a plain ValueError, which is not a binascii.Error. Both mean "no key".
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            return None
        return decoded.partition(":")[0] or None
    return None


class KeyChecker:
    """Accepts a fixed set of keys, or (when none is configured) any key with one of ``prefixes``.

    The prefix mode exists for local tools such as the emulator, which take "any test key" by default.
    """

    def __init__(self, keys: Iterable[str] = (), *, prefixes: Iterable[str] = ()) -> None:
        self._keys = [k.encode("utf-8") for k in keys if k]
        self._prefixes = tuple(prefixes)
        if not self._keys and not self._prefixes:
            raise ValueError("KeyChecker needs at least one key or one accepted prefix")

    def accepts(self, key: str) -> bool:
        if self._keys:
            try:
                presented = key.encode("utf-8")
            except UnicodeEncodeError:  # bytes that were not UTF-8 (surrogate escapes): no key has them
                return False
            ok = False
            for candidate in self._keys:  # no early exit: the time does not depend on which key matched
                ok |= hmac.compare_digest(presented, candidate)
            return ok
        return key.startswith(self._prefixes) and len(key) > max(len(p) for p in self._prefixes)


def require_key(request: web.Request, checker: KeyChecker) -> str:
    """The request's key if ``checker`` accepts it; otherwise raise 401 (the message never holds the key)."""
    key = presented_key(request)
    if key is None:
        raise AuthenticationFailedError(_NO_KEY)
    if not checker.accepts(key):
        raise AuthenticationFailedError(_BAD_KEY)
    return key


@dataclass
class _Client:
    failures: int = 0
    last: float = 0.0
    not_before: float = 0.0  # the earliest time its next failed attempt is answered
    waiting: int = 0  # failed attempts held back right now


class FailedAuthThrottle:
    """An exponential delay per client (remote address) after failed authentications, so keys cannot be
    guessed at the rate the server answers (3,254 guesses/s were answered before; issue 13).

    The first ``free`` failures within ``forget_s`` are answered at once (typos). Each further failure is
    answered after ``base_s * 2**(n-1)``, at most ``max_s``, and the answers of one client are spaced by
    those delays even when it sends them concurrently. At most ``max_waiting`` failed attempts of a
    client are held at once; beyond that its requests are refused with 429 *before* their key is checked,
    so opening more connections gains nothing. Successful requests are never delayed. The table is
    bounded (``max_clients``, least recently failing forgotten first) and lives in one process.
    """

    def __init__(
        self,
        *,
        free: int = 5,
        base_s: float = 0.25,
        max_s: float = 4.0,
        max_waiting: int = 4,
        forget_s: float = 600.0,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.free, self.base_s, self.max_s, self.max_waiting = free, base_s, max_s, max_waiting
        self.forget_s, self.max_clients = forget_s, max_clients
        self._clock = clock
        self._clients: OrderedDict[str, _Client] = OrderedDict()

    def saturated(self, client: str) -> bool:
        """Whether ``client`` already has as many failed attempts held as allowed (refuse before checking)."""
        found = self._clients.get(client)
        return found is not None and found.waiting >= self.max_waiting

    def failed(self, client: str) -> float:
        """Record a failed authentication of ``client``; the seconds to hold its answer (0: none)."""
        now = self._clock()
        entry = self._clients.pop(client, None) or _Client()
        if now - entry.last > self.forget_s:
            entry.failures, entry.not_before = 0, 0.0
        entry.failures += 1
        entry.last = now
        self._clients[client] = entry  # most recently failing last
        while len(self._clients) > self.max_clients:
            self._clients.popitem(last=False)
        extra = entry.failures - self.free
        if extra <= 0:
            return 0.0
        delay = min(self.max_s, self.base_s * 2 ** min(extra - 1, 30))
        entry.not_before = max(now, entry.not_before) + delay
        return entry.not_before - now

    def failures(self, client: str) -> int:
        found = self._clients.get(client)
        return 0 if found is None else found.failures

    async def hold(self, client: str, seconds: float) -> None:
        """Wait ``seconds`` before answering ``client``'s failed attempt, counted as held meanwhile."""
        entry = self._clients.get(client)
        if entry is not None:
            entry.waiting += 1
        try:
            await asyncio.sleep(seconds)
        finally:
            if entry is not None:
                entry.waiting -= 1
