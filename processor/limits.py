"""Size and content rules every entry point shares: the gateway (v1 and v2), the processor, ``meterstream
import`` and the dashboard's upload all call these, so an id is accepted or refused the same way wherever
it arrives (docs/security.md lists the limits).

Why each exists:

- ``IDENTIFIER_MAX`` / ``EVENT_NAME_MAX``: Stripe's own limits on meter events (100 characters).
- ``TIMESTAMP_PAST_S`` / ``TIMESTAMP_FUTURE_S``: Stripe accepts an event timestamp at most 35 days before
  and 5 minutes after the time it receives the event (for us: the Kafka record's received time).
- ``DEDUP_WINDOW_S``: an identifier is unique among the events Stripe received in the last 24 hours.
- ``MAX_SIGNIFICANT_DIGITS``: Stripe refuses values with more than 15 significant digits;
  ``MAX_TOTAL_DIGITS`` bounds the digits in all (``1E400`` has one significant digit but 401 digits), so no
  value grows the aggregates without bound.
- ``USAGE_RETENTION_DAYS``: the default of ``METERSTREAM_USAGE_RETENTION_DAYS``, how long hour, day and minute
  buckets are kept: Stripe's 35-day timestamp window plus a 31-day billing period, and slack.
- ``CUSTOMER_ID_MAX``: Stripe documents no limit for the customer value of a payload, but it becomes part
  of several Redis key names per event (``ms:usage:{<meter>:<customer>}:hour`` and friends) and of every
  record key: 255 characters (the length Stripe promises its own object ids never exceed) keeps keys small
  while holding any real customer id.
- ``MAX_JSON_DEPTH``: no meter-event field nests deeper than ``events[i].payload.key`` (4 levels);
  anything much deeper is refused before any code walks it recursively (a ``{"a":`` times 1000 body used to end
  in a ``RecursionError``).
- NUL characters and text that is not UTF-8 (lone surrogates, undecodable bytes) are refused: they would be
  stored changed (U+FFFD) or break other readers of the topics and of Redis.

Pure and dependency-free, so every layer can import it.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "CUSTOMER_ID_MAX",
    "DEDUP_WINDOW_S",
    "EVENT_NAME_MAX",
    "IDENTIFIER_MAX",
    "MAX_JSON_DEPTH",
    "MAX_SIGNIFICANT_DIGITS",
    "MAX_TOTAL_DIGITS",
    "TIMESTAMP_FUTURE_S",
    "TIMESTAMP_PAST_S",
    "USAGE_RETENTION_DAYS",
    "customer_problem",
    "json_problem",
    "text_problem",
]

IDENTIFIER_MAX = 100
EVENT_NAME_MAX = 100
CUSTOMER_ID_MAX = 255
MAX_JSON_DEPTH = 16
TIMESTAMP_PAST_S = 35 * 86_400
TIMESTAMP_FUTURE_S = 300
DEDUP_WINDOW_S = 24 * 3_600
MAX_SIGNIFICANT_DIGITS = 15
MAX_TOTAL_DIGITS = 60
USAGE_RETENTION_DAYS = 70


def text_problem(value: str) -> str | None:
    """Why ``value`` cannot be stored as it was sent (a NUL, or not UTF-8), or ``None``."""
    if "\x00" in value:
        return "must not contain NUL characters"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid UTF-8 text"
    return None


def customer_problem(customer: str) -> str | None:
    """Why ``customer`` (the payload's customer value, as a string) is refused, or ``None``."""
    if len(customer) > CUSTOMER_ID_MAX:
        return f"must be at most {CUSTOMER_ID_MAX} characters (got {len(customer)})"
    return text_problem(customer)


def json_problem(value: Any, *, max_depth: int = MAX_JSON_DEPTH, text: bool = True) -> tuple[str, str] | None:
    """The first problem of a parsed JSON value, as ``(param path, reason)``: nesting deeper than
    ``max_depth``, or a string (key or value) with a NUL or a lone surrogate. Iterative, so a value of any
    depth is walked without recursion; ``None`` when the value is clean.

    The walk that finds a problem tracks depths only (it runs on every v2 request); the path that names the
    parameter is built by a second walk, only when there is a problem. ``text=False`` skips the string
    checks, for a caller who knows none can fail (JSON text without any ``\\u`` escape cannot decode to
    a NUL or a lone surrogate)."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if depth > max_depth:
            return _locate(value, max_depth)
        if isinstance(node, str):
            if text and ("\x00" in node or not _utf8(node)):
                return _locate(value, max_depth)
        elif isinstance(node, dict):
            for key, child in node.items():
                if text and isinstance(key, str) and ("\x00" in key or not _utf8(key)):
                    return _locate(value, max_depth)
                stack.append((child, depth + 1))
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _locate(value: Any, max_depth: int) -> tuple[str, str]:
    """The path and reason of the first problem :func:`json_problem` found (the slow walk, with paths)."""
    stack: list[tuple[Any, tuple[str, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if len(path) > max_depth:
            return _name(path[:max_depth]), f"is nested more than {max_depth} levels deep"
        if isinstance(node, str):
            problem = text_problem(node)
            if problem is not None:
                return _name(path), problem
        elif isinstance(node, dict):
            for key, child in node.items():
                key_text = str(key)
                problem = text_problem(key_text)
                if problem is not None:
                    return _name((*path, key_text)), "has a key that " + problem
                stack.append((child, (*path, key_text)))
        elif isinstance(node, list):
            stack.extend((child, (*path, str(i))) for i, child in enumerate(node))
    return "body", "is not valid"


def _name(path: tuple[str, ...]) -> str:
    """Stripe's bracket form of a parameter path (``events[0][payload][value]``); the body when empty."""
    if not path:
        return "body"
    safe = [p.encode("utf-8", "replace").decode().replace("\x00", "\\0")[:100] for p in path]
    return safe[0] + "".join(f"[{p}]" for p in safe[1:])
