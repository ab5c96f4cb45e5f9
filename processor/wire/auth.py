"""API-key authentication the way Stripe does it: ``Authorization: Bearer <key>`` (or HTTP Basic with the
key as the user name, what ``curl -u sk_test_...:`` sends).

Keys are compared in constant time (:func:`hmac.compare_digest`) against every configured key, so the
answer time does not reveal how much of a key matched. No function here logs or echoes a key: error
messages never contain the presented credential.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable

from aiohttp import web

from processor.errors import AuthenticationFailedError

__all__ = ["KeyChecker", "presented_key", "require_key"]

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
