"""The emulator's clock: wall time plus an offset that tests move through ``POST /_emulator/clock``.

Every time rule (24 h identifier and cancellation windows, 35 days / 5 minutes for timestamps, 15-minute
session tokens, idempotency-key retention) reads this clock, so a test can jump a day ahead in a
millisecond instead of waiting. Only rate limiting uses the real monotonic clock: it is about real load.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["Clock"]


class Clock:
    def __init__(self, wall: Callable[[], float] = time.time) -> None:
        self._wall = wall
        self.offset = 0.0

    def now(self) -> float:
        """Emulated Unix time in seconds."""
        return self._wall() + self.offset

    def set(self, unix: float) -> None:
        """Make :meth:`now` return ``unix`` at this instant (time keeps running from there)."""
        self.offset = unix - self._wall()

    def advance(self, seconds: float) -> None:
        self.offset += seconds

    def reset(self) -> None:
        self.offset = 0.0
