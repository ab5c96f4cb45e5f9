"""Fault injection: random 429s and 500s, added latency, a requests-per-second limit, and 500s after commit.

Injected 429/500 answers are decided *before* a request touches any state, so they never have a side
effect — exactly what a client may assume of Stripe's 429 and of most 5xx. The one exception is
``fail_after_commit``: the request is carried out (and its answer saved under its Idempotency-Key), then
answered 500, so a client's resend must be made harmless by the idempotency key or the event identifier.

Randomness comes from one seeded :class:`random.Random`, so a test can make a fault sequence repeatable.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from processor.errors import InvalidRequestError

__all__ = ["FaultConfig", "Faults"]


@dataclass(frozen=True)
class FaultConfig:
    fail_429: float = 0.0
    fail_500: float = 0.0
    latency_ms: float = 0.0
    #: Requests per second over the whole API (a token bucket with one second of burst); ``None`` = no limit.
    rps: float | None = None
    fail_after_commit: float = 0.0

    def __post_init__(self) -> None:
        for name in ("fail_429", "fail_500", "fail_after_commit"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InvalidRequestError(f"{name} must be a probability between 0 and 1", param=name)
        if not 0.0 <= self.latency_ms <= 60_000:
            raise InvalidRequestError("latency_ms must be between 0 and 60000", param="latency_ms")
        if self.rps is not None and not 0.0 < self.rps <= 1_000_000:
            raise InvalidRequestError("rps must be > 0 (or null for no limit)", param="rps")

    def updated(self, changes: Mapping[str, Any]) -> FaultConfig:
        """A copy with ``changes`` applied (from the control endpoint's JSON); 400 on unknown or bad fields."""
        known = set(asdict(self))
        clean: dict[str, Any] = {}
        for key, value in changes.items():
            if key not in known:
                raise InvalidRequestError(
                    f"unknown fault setting {key!r} (known: {', '.join(sorted(known))})", param=key
                )
            if key == "rps" and (value is None or value == 0):
                clean[key] = None
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise InvalidRequestError(f"{key} must be a number", param=key)
            clean[key] = float(value)
        return replace(self, **clean)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Faults:
    """Decides, per request, whether to answer with an injected fault. Single-threaded (the event loop)."""

    def __init__(
        self, config: FaultConfig, *, seed: int | None = None, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._rng = random.Random(seed)
        self._monotonic = monotonic
        self.config = config
        self._tokens = 0.0
        self._stamp = 0.0
        self.configure(config)

    def configure(self, config: FaultConfig) -> None:
        self.config = config
        self._tokens = self._capacity()
        self._stamp = self._monotonic()

    def _capacity(self) -> float:
        return max(1.0, self.config.rps or 0.0)

    def admit(self) -> str | None:
        """``None`` to serve the request, else why not: ``"rate_limited"``, ``"429"`` or ``"500"``."""
        cfg = self.config
        if cfg.rps is not None:
            now = self._monotonic()
            self._tokens = min(self._capacity(), self._tokens + (now - self._stamp) * cfg.rps)
            self._stamp = now
            if self._tokens < 1.0:
                return "rate_limited"
            self._tokens -= 1.0
        if cfg.fail_429 and self._rng.random() < cfg.fail_429:
            return "429"
        if cfg.fail_500 and self._rng.random() < cfg.fail_500:
            return "500"
        return None

    def fail_after_commit(self) -> bool:
        p = self.config.fail_after_commit
        return bool(p) and self._rng.random() < p
