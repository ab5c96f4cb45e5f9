"""The emulator's clock: wall time plus an offset that tests move through ``POST /_emulator/clock``,
optionally frozen so that "exactly 24 hours later" is exact.

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
        self._offset = 0.0
        self._frozen_at: float | None = None

    @property
    def offset(self) -> float:
        """Seconds between emulated time and wall time, now."""
        return self.now() - self._wall()

    @property
    def frozen(self) -> bool:
        return self._frozen_at is not None

    def now(self) -> float:
        """Emulated Unix time in seconds."""
        return self._frozen_at if self._frozen_at is not None else self._wall() + self._offset

    def set(self, unix: float) -> None:
        """Make :meth:`now` return ``unix`` at this instant (a running clock keeps running from there)."""
        if self._frozen_at is not None:
            self._frozen_at = unix
        else:
            self._offset = unix - self._wall()

    def advance(self, seconds: float) -> None:
        if self._frozen_at is not None:
            self._frozen_at += seconds
        else:
            self._offset += seconds

    def freeze(self, frozen: bool) -> None:
        """Stop time at its current value, or let it run again from where it stands."""
        if frozen and self._frozen_at is None:
            self._frozen_at = self.now()
        elif not frozen and self._frozen_at is not None:
            self._offset = self._frozen_at - self._wall()
            self._frozen_at = None

    def reset(self) -> None:
        self._offset = 0.0
        self._frozen_at = None
