"""Console output of the ops commands: progress bars on stderr, times, decision tables."""

from __future__ import annotations

import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import click

__all__ = ["Progress", "echo_decisions", "iso"]


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Progress:
    """Progress of a long command on stderr.

    On a terminal: a click progress bar, opened once the total is known (``None``: a running count);
    totals announced again (rebuild's catch-up rounds) add to the bar's length. Anywhere else (a log file,
    CI, a pipe): plain newline-terminated lines ``label: done/total (pct%)`` at every 10 % step and at the
    end — never a carriage return or a terminal escape, which would garble the log that captures them.
    Without a total, a line at most every ``interval`` seconds and one at the end.
    """

    def __init__(self, label: str, *, quiet: bool = False, tty: bool | None = None, interval: float = 5.0) -> None:
        self.label = label
        self.quiet = quiet
        self.tty = sys.stderr.isatty() if tty is None else tty
        self.interval = interval
        self.done = 0
        self.length: int | None = None
        self._opened = False
        self._bar: Any = None
        self._step = -1
        self._last_line = 0.0

    def total(self, length: int | None) -> None:
        if self.quiet:
            return
        if self._opened:
            if length is not None and self.length is not None:
                self.length += length
                if self._bar is not None:
                    self._bar.length = self.length
            return
        self._opened = True
        self.length = length
        if not self.tty:
            self._line()
            return
        if length is None:
            self._bar = click.progressbar(
                iterable=_unsized(), label=self.label, file=sys.stderr, show_pos=True, show_eta=False
            )
        else:
            self._bar = click.progressbar(length=length, label=self.label, file=sys.stderr, show_pos=True)
        self._bar.__enter__()

    def __call__(self, n: int) -> None:
        if self.quiet:
            return
        if not self._opened:
            self.total(None)
        self.done += n
        if self.length is not None and self.done > self.length:
            self.length = self.done  # a read to EOF found more than the bounded total announced
            if self._bar is not None:
                self._bar.length = self.length
        if self._bar is not None:
            self._bar.update(n)
            return
        if self.length:
            step = min(10, self.done * 10 // self.length)
            if step > self._step:
                self._line()
        elif time.monotonic() - self._last_line >= self.interval:
            self._line()

    def _line(self) -> None:
        if self.length:
            self._step = min(10, self.done * 10 // self.length)
            text = f"{self.label}: {self.done}/{self.length} ({self.done * 100 // self.length}%)"
        elif self.length == 0:
            self._step = 10
            text = f"{self.label}: nothing to do"
        else:
            text = f"{self.label}: {self.done}"
        self._last_line = time.monotonic()
        click.echo(text, file=sys.stderr)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
            self._bar = None
        elif self._opened and not self.quiet and exc_type is None:
            if self.length is None or self._step < 10:
                self._line()


def _unsized() -> Iterator[int]:
    """An iterable of unknown length (a progress bar that counts without a total)."""
    yield from ()


def echo_decisions(counts: Counter[tuple[bool, str]], yes: str, no: str) -> None:
    """Print how many items will / will not be acted on, grouped by reason, most frequent first."""
    for send, title in ((True, yes), (False, no)):
        rows = sorted(((n, reason) for (s, reason), n in counts.items() if s is send), reverse=True)
        click.echo(f"{title} {sum(n for n, _ in rows)}:")
        for n, reason in rows:
            click.echo(f"  {n:>8}  {reason}")
