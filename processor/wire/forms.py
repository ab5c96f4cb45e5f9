"""Stripe's form encoding: ``a[b][c]=x`` brackets into nested dicts and lists.

Stripe's v1 API takes ``application/x-www-form-urlencoded`` bodies (and query strings for GET) whose keys
nest with brackets: ``payload[stripe_customer_id]=cus_1``, ``expand[]=x`` (append), ``expand[0]=x`` and
``a[0][b]=c`` (indexed, what the official SDK sends for lists). This module turns the flat pairs into the
nested structure; it knows nothing about which parameter means what.

A level whose keys are exactly ``0..n-1`` decodes as a list (that is how the SDK encodes lists). A map
parameter that legitimately has such keys can be turned back with :func:`as_mapping`.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

from processor.errors import InvalidRequestError
from processor.limits import text_problem

__all__ = ["MAX_DEPTH", "MAX_FIELDS", "as_mapping", "decode_form", "decode_pairs"]

#: Deeper nesting than any Stripe parameter needs is refused (it would only cost memory).
MAX_DEPTH = 8
#: Stripe's own limit on the number of parameters is in this range; it bounds the work per request.
MAX_FIELDS = 2000

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SUB_RE = re.compile(r"\[([^\[\]]*)\]")
_APPEND = object()  # marker: a ``[]`` segment


def _segments(key: str) -> list[str | object]:
    m = _KEY_RE.match(key)
    if m is None:
        raise InvalidRequestError(f"Invalid parameter name: {key[:100]!r}", param=key[:100], code="parameter_unknown")
    segs: list[str | object] = [m.group(1)]
    segs.extend(_APPEND if s == "" else s for s in _SUB_RE.findall(m.group(2)))
    if len(segs) > MAX_DEPTH:
        raise InvalidRequestError(f"Parameter nested too deeply: {key[:100]!r}", param=m.group(1))
    return segs


def _check_text(key: str, value: str) -> None:
    """Refuse a NUL or bytes that are not UTF-8 (decoded as surrogate escapes) in a key or a value, naming
    the parameter: stored as sent they would become U+FFFD or break other readers."""
    problem = text_problem(key)
    if problem is not None:
        shown = key.encode("utf-8", "replace").decode().replace("\x00", "\\0")[:100]
        raise InvalidRequestError(f"Invalid parameter name {shown!r}: it {problem}.", param=shown)
    problem = text_problem(value)
    if problem is not None:
        raise InvalidRequestError(f"Invalid {key[:100]}: the value {problem}.", param=key[:100])


def _conflict(name: str) -> InvalidRequestError:
    return InvalidRequestError(f"Invalid parameter {name}: it is given both as a value and as a hash/array", param=name)


def decode_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Nest flat ``(key, value)`` pairs. A repeated scalar key keeps its last value (as Rack does).

    Raises :class:`~processor.errors.InvalidRequestError` for malformed keys, too many fields, too deep
    nesting, or a key used both as a scalar and as a container.
    """
    if len(pairs) > MAX_FIELDS:
        raise InvalidRequestError(f"Too many parameters (at most {MAX_FIELDS})")
    root: dict[str, Any] = {}
    for key, value in pairs:
        _check_text(key, value)
        segs = _segments(key)
        node: Any = root
        for i, seg in enumerate(segs):
            last = i == len(segs) - 1
            if seg is _APPEND:
                if not isinstance(node, list):
                    raise _conflict(key)
                if last:
                    node.append(value)
                    break
                # ``a[][b]=x``: start a new element unless the current last one lacks this key.
                nxt = segs[i + 1]
                if node and isinstance(node[-1], dict) and isinstance(nxt, str) and nxt not in node[-1]:
                    node = node[-1]
                else:
                    node.append({} if nxt is not _APPEND else [])
                    node = node[-1]
                continue
            assert isinstance(seg, str)
            if not isinstance(node, dict):
                raise _conflict(key)
            if last:
                if isinstance(node.get(seg), (dict, list)):
                    raise _conflict(key)
                node[seg] = value
                break
            child = node.get(seg)
            want_list = segs[i + 1] is _APPEND
            if child is None:
                child = [] if want_list else {}
                node[seg] = child
            elif isinstance(child, str) or (want_list != isinstance(child, list)):
                raise _conflict(key)
            node = child
    # The top level stays a dict (its keys are parameter names, even "0"); only nested levels may be lists.
    return {key: _listify(value) for key, value in root.items()}


def _listify(value: Any) -> Any:
    """Turn every dict whose keys are exactly "0".."n-1" into a list, bottom-up."""
    if isinstance(value, list):
        return [_listify(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {k: _listify(v) for k, v in value.items()}
    if out and all(k.isascii() and k.isdigit() and (k == "0" or not k.startswith("0")) for k in out):
        indices = sorted(int(k) for k in out)
        if indices == list(range(len(out))):
            return [out[str(i)] for i in indices]
    return out


def decode_form(text: str) -> dict[str, Any]:
    """Decode a form body or query string (without the leading ``?``) into nested params."""
    if not text:
        return {}
    try:
        # surrogateescape: bytes that are not UTF-8 stay recognisable (and are refused by name), where the
        # default would silently turn them into U+FFFD.
        pairs = parse_qsl(
            text, keep_blank_values=True, strict_parsing=False, max_num_fields=MAX_FIELDS, errors="surrogateescape"
        )
    except ValueError:
        raise InvalidRequestError(f"Too many parameters (at most {MAX_FIELDS})") from None
    return decode_pairs(pairs)


def as_mapping(value: Any) -> Any:
    """A decoded list turned back into the map it may have been (``{"0": ..., "1": ...}``); other values
    unchanged. For map parameters (metadata, payload) whose keys happen to be indices."""
    if isinstance(value, list):
        return {str(i): v for i, v in enumerate(value)}
    return value
