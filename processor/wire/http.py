"""The HTTP side of Stripe's wire protocol on aiohttp: params in, errors and ids out.

- every response carries a ``Request-Id: req_...`` header (also errors aiohttp produces itself);
- any :class:`~processor.errors.InvalidRequestError` raised by a handler or middleware becomes Stripe's
  ``{"error": {type, code, message, param, doc_url}}`` with the error's status; unknown URLs become
  Stripe's 404 "Unrecognized request URL", a too-large body a 413, and anything unexpected a 500
  ``api_error`` whose message reveals nothing (the traceback goes to the log, masked);
- ``/v2/`` paths speak v2: JSON bodies, and error types the SDK maps to its v2 classes (a 429 is type
  ``rate_limit``; a session error keeps its own type such as ``temporary_session_expired``).

Nothing here knows what an endpoint means; :func:`create_app` gives an app with this stack to which a
server adds its routes and its own middlewares (auth, fault injection, idempotency).
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Iterable, Mapping
from random import getrandbits
from typing import Any

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from processor.errors import InvalidRequestError, RequestTimeoutError
from processor.limits import MAX_JSON_DEPTH, json_problem
from processor.wire.forms import decode_form

__all__ = [
    "BODY_TIMEOUT",
    "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_MAX_BODY",
    "REQUEST_ID",
    "api_error_response",
    "create_app",
    "error_response",
    "is_v2",
    "json_response",
    "protocol_error_response",
    "read_body",
    "read_params",
    "request_id",
]

log = logging.getLogger(__name__)

#: Largest request body accepted (Stripe's own limit is in this range; a v2 stream batch of 100 events
#: with generous payloads is far below it).
DEFAULT_MAX_BODY = 1 << 20
#: Seconds a request body may take to arrive in full (1 MiB at ~35 KB/s); override per app with BODY_TIMEOUT.
DEFAULT_BODY_TIMEOUT_S = 30.0
BODY_TIMEOUT = web.AppKey("meterstream_body_timeout_s", float)
REQUEST_ID = web.RequestKey("meterstream_request_id", str)
_DOC_BASE = "https://stripe.com/docs/error-codes/"


def is_v2(path: str) -> bool:
    """Whether ``path`` is in Stripe's v2 namespace (JSON bodies, v2 error types)."""
    return path.startswith("/v2/")


def request_id(request: web.Request) -> str:
    """This request's ``req_...`` id, created on first use."""
    rid = request.get(REQUEST_ID)
    if rid is None:
        # An id, not a secret: the process's seeded Mersenne Twister, without a system call per request.
        rid = f"req_{getrandbits(56):014x}"
        request[REQUEST_ID] = rid
    return rid


def _json_bytes(body: Any) -> bytes:
    """``json.dumps(body, separators=(",", ":"))`` as bytes, through orjson when that gives the same bytes:
    several times faster, on every answer. orjson writes non-ASCII and DEL as they are (json escapes them)
    and refuses what it cannot encode (an integer beyond 64 bits, a key that is not a string)."""
    try:
        out = orjson.dumps(body)
    except TypeError:
        out = b""
    if out and out.isascii() and b"\x7f" not in out:
        return out
    return json.dumps(body, separators=(",", ":")).encode()


def json_response(body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(
        body=_json_bytes(body),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def _error_object(
    error_type: str, message: str, *, code: str | None = None, param: str | None = None
) -> dict[str, object]:
    body: dict[str, object] = {"type": error_type, "message": message}
    if code is not None:
        body["code"] = code
        body["doc_url"] = _DOC_BASE + code.replace("_", "-")
    if param is not None:
        body["param"] = param
    return body


def error_response(err: InvalidRequestError, *, v2: bool) -> web.Response:
    """Stripe's error body and status for ``err``. ``err.should_retry`` (when a class defines it) becomes
    the ``Stripe-Should-Retry`` header the SDK obeys."""
    body = err.to_stripe()
    if err.code is not None:
        body.setdefault("doc_url", _DOC_BASE + err.code.replace("_", "-"))
    if v2 and err.http_status == 429:
        body["type"] = "rate_limit"
    headers = {}
    should_retry = getattr(err, "should_retry", None)
    if should_retry is not None:
        headers["Stripe-Should-Retry"] = "true" if should_retry else "false"
    return json_response({"error": body}, status=err.http_status, headers=headers)


def api_error_response(
    message: str = "An unknown error occurred.", *, status: int = 500, should_retry: bool | None = None
) -> web.Response:
    """A server-side failure (type ``api_error``), for injected faults and unexpected exceptions."""
    headers = {} if should_retry is None else {"Stripe-Should-Retry": "true" if should_retry else "false"}
    return json_response({"error": _error_object("api_error", message)}, status=status, headers=headers)


_PROTOCOL_MESSAGES = {
    400: "The request could not be read: its request line or headers are malformed or too long (at most 8 KB each).",
    408: "The request was not received in time.",
    413: "The request body is too large.",
    414: "The request URL is too long.",
    431: "The request headers are too large.",
}


def protocol_error_response(status: int) -> web.Response:
    """Stripe's envelope for an error found before any route runs (aiohttp's parser, time limits): a fixed
    message per status, nothing echoed from the request."""
    if status >= 500:
        return api_error_response()
    message = _PROTOCOL_MESSAGES.get(status, "The request could not be read.")
    code = "request_too_large" if status == 413 else None
    response = json_response({"error": _error_object("invalid_request_error", message, code=code)}, status=status)
    response.headers["Request-Id"] = "req_" + secrets.token_hex(7)
    return response


async def read_body(request: web.Request) -> bytes:
    """The whole body, within the app's body deadline: a client that sends less than its Content-Length
    (or trickles it) is answered 408 instead of holding the connection."""
    if request.content.is_eof():  # all of it arrived already (small bodies come with the headers): no timer
        return await request.read()
    timeout = request.app.get(BODY_TIMEOUT, DEFAULT_BODY_TIMEOUT_S)
    try:
        async with asyncio.timeout(timeout):
            return await request.read()
    except TimeoutError:
        raise RequestTimeoutError(f"The request body was not received within {timeout:g} s.") from None


async def read_params(request: web.Request) -> dict[str, Any]:
    """The request's parameters: the query string for GET/DELETE, the form body (v1) or the JSON object
    body (v2) for POST. Raises 400 for an undecodable body, 413 (via aiohttp) for a too-large one."""
    if request.method in ("GET", "DELETE", "HEAD"):
        return decode_form(request.rel_url.raw_query_string)  # decoded once, here (yarl would decode it too)
    raw = await read_body(request)
    if is_v2(request.path):
        if not raw.strip():
            return {}
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise InvalidRequestError("Invalid JSON in the request body.", code="parameter_invalid_json") from None
        except RecursionError:  # {"a": times 1000: deeper than the decoder goes
            raise InvalidRequestError(
                f"The request body is nested more than {MAX_JSON_DEPTH} levels deep.", code="parameter_invalid_json"
            ) from None
        if not isinstance(body, dict):
            raise InvalidRequestError("The request body must be a JSON object.", code="parameter_invalid_json")
        # Only a \u escape can decode to a NUL or a lone surrogate (raw control characters and bytes that
        # are not UTF-8 fail json.loads), and only brackets can nest: skip what cannot fail.
        deep = raw.count(b"{") + raw.count(b"[") > MAX_JSON_DEPTH
        escaped = b"\\u" in raw
        problem = json_problem(body, text=escaped) if deep or escaped else None
        if problem is not None:
            param, reason = problem
            raise InvalidRequestError(f"Invalid {param}: {reason}.", param=param, code="parameter_invalid_json")
        return body
    # Bytes that are not UTF-8 become surrogate escapes, which the form decoder refuses naming the parameter.
    return decode_form(raw.decode("utf-8", "surrogateescape"))


@web.middleware
async def _stripe_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    v2 = is_v2(request.path)
    try:
        return await handler(request)
    except InvalidRequestError as err:
        return error_response(err, v2=v2)
    except web.HTTPRequestEntityTooLarge:
        body = _error_object("invalid_request_error", "The request body is too large.", code="request_too_large")
        return json_response({"error": body}, status=413)
    except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
        message = f"Unrecognized request URL ({request.method[:20]}: {request.path[:200]})."
        return json_response({"error": _error_object("invalid_request_error", message)}, status=404)
    except web.HTTPException as exc:
        if exc.status < 400:  # redirects and the like are answers, not errors
            raise
        return protocol_error_response(exc.status)  # e.g. a malformed multipart body: Stripe's shape too
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("unhandled error answering %s %s", request.method, request.path)
        return api_error_response()


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Request-Id", request_id(request))


def create_app(
    *,
    middlewares: Iterable[Middleware] = (),
    client_max_size: int = DEFAULT_MAX_BODY,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
) -> web.Application:
    """An aiohttp app with the wire stack; ``middlewares`` run inside the error translation, so an
    :class:`InvalidRequestError` they raise is answered in Stripe's shape."""
    app = web.Application(middlewares=[_stripe_errors, *middlewares], client_max_size=client_max_size)
    app[BODY_TIMEOUT] = body_timeout_s
    app.on_response_prepare.append(_add_request_id)
    return app
