"""Console output of the ops commands: progress bars on stderr, times, decision tables."""

from __future__ import annotations

import sys
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
    """A click progress bar on stderr, opened once the total is known (``None``: a running count)."""

    def __init__(self, label: str, *, quiet: bool = False) -> None:
        self.label = label
        self.quiet = quiet
        self._bar: Any = None

    def total(self, length: int | None) -> None:
        if self.quiet or self._bar is not None:
            return
        if length is None:
            self._bar = click.progressbar(
                iterable=_unsized(), label=self.label, file=sys.stderr, show_pos=True, show_eta=False
            )
        else:
            self._bar = click.progressbar(length=length, label=self.label, file=sys.stderr, show_pos=True)
        self._bar.__enter__()

    def __call__(self, n: int) -> None:
        if self._bar is None:
            self.total(None)
        if self._bar is not None:
            self._bar.update(n)

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._bar is not None:
            self._bar.__exit__(exc_type, exc, tb)
            self._bar = None


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
