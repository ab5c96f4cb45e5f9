"""Logging, configured in one place (:func:`configure_logging`), with secrets masked on the way out.

Components log through ``logging.getLogger(__name__)``. The :class:`SecretMaskingFilter` rewrites any
record whose text carries something shaped like a Stripe key, a bearer token or a password in a URL, so
even an exception message that embeds a key (an SDK error, a URL with credentials) is masked.
"""

from __future__ import annotations

import logging
import re
import sys
from collections import Counter

__all__ = ["SecretMaskingFilter", "activity_report", "configure_logging", "mask_secrets"]

_PATTERNS = [
    # Stripe keys and tokens: sk_test_..., rk_live_..., ek_..., whsec_...
    (re.compile(r"\b((?:sk|rk|pk|ek)_(?:test|live)_|whsec_)[A-Za-z0-9]{4,}"), r"\1****"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=-]{6,}"), r"\1****"),
    (re.compile(r"(?i)(://[^:/@\s]*:)[^@\s]+@"), r"\1****@"),
    (re.compile(r"(?i)((?:password|api_key|apikey|secret)[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&]+"), r"\1****"),
]


def mask_secrets(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``****``."""
    for pattern, repl in _PATTERNS:
        text = pattern.sub(repl, text)
    return text


class SecretMaskingFilter(logging.Filter):
    """Masks credentials in the final message and in the formatted exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = mask_secrets(record.exc_text)
        return True


def configure_logging(level: str = "INFO") -> None:
    """Root logger to stderr, one line per record, secrets masked. Safe to call more than once."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_meterstream", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler._meterstream = True  # type: ignore[attr-defined]
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    handler.addFilter(SecretMaskingFilter())
    root.addHandler(handler)
    root.setLevel(level)
    # librdkafka and faust are chatty at INFO; their warnings still pass.
    for noisy in ("faust", "mode", "aiokafka", "kafka", "urllib3", "stripe"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLevelName(level)))


def activity_report(
    before: Counter[str], after: Counter[str], batches: int, seconds: float, *, was_idle: bool
) -> tuple[str | None, bool]:
    """The periodic activity line of a long-running component, and whether it is now idle.

    Counts are *of the interval* and say so ("in the last 30 s"), with the running total labelled "since
    start": a line of bare running totals repeated every 30 s by an idle processor reads as if it kept
    processing. An idle interval is logged once (when activity stops), not every time.
    ``before``/``after`` are the counters at the start and end of the interval (``records`` plus outcome
    counts such as ``accepted``); ``batches`` is the number of batches in the interval.
    """
    records = after["records"] - before["records"]
    if records <= 0:
        if was_idle:
            return None, True
        return f"idle: no records in the last {seconds:.0f} s ({after['records']:,} since start)", True
    delta = Counter({k: after[k] - before[k] for k in after if k != "records" and after[k] - before[k] > 0})
    detail = ", ".join(f"{k} {n:,}" for k, n in delta.most_common(8))
    line = (
        f"in the last {seconds:.0f} s: {records:,} records in {batches:,} batch(es)"
        + (f" ({detail})" if detail else "")
        + f"; {after['records']:,} since start"
    )
    return line, False
