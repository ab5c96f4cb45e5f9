"""Helpers shared by the ops tests: run the real processor, delete keys of one prefix, call the CLI."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis
from click.testing import CliRunner, Result

from processor.aggregator.runner import Processor
from processor.cli import main
from processor.config import Settings
from tests.pipeline import run_processor as run_processor


@contextmanager
def live_processor(settings: Settings) -> Iterator[Processor]:
    """A real processor running in a thread for the duration of the block (the "live pipeline")."""
    proc = Processor(settings)
    stop = threading.Event()
    failure: list[BaseException] = []

    def loop() -> None:
        try:
            proc.run(stop)
        except BaseException as exc:  # surfaced by the caller below
            failure.append(exc)

    thread = threading.Thread(target=loop, name="live-processor", daemon=True)
    thread.start()
    try:
        yield proc
    finally:
        stop.set()
        thread.join(60)
        proc.close()
    assert not failure, failure


def delete_keys(client: redis.Redis, pattern: str) -> int:
    """SCAN + DEL of the keys matching ``pattern`` (only ever a test's own prefix)."""
    n = 0
    for key in list(client.scan_iter(match=pattern, count=1000)):
        n += int(client.delete(key))
    return n


def cli(settings: Settings, *args: str, input: str | None = None) -> Result:
    """Run ``meterstream ARGS`` in-process with the environment of ``settings``."""
    env: dict[str, Any] = settings.to_env()
    result = CliRunner().invoke(main, list(args), env=env, input=input, catch_exceptions=False)
    return result


def progress_lines(stderr: str, label: str) -> list[tuple[int, int]]:
    """The ``label: done/total (pct%)`` lines a command printed on stderr without a terminal, checked to
    be plain lines (newline-terminated, no carriage return, no terminal escape)."""
    assert "\x1b" not in stderr and "\r" not in stderr, repr(stderr)
    assert stderr == "" or stderr.endswith("\n"), repr(stderr)
    found = []
    for line in stderr.splitlines():
        if line.startswith(label + ": "):
            done, _, rest = line[len(label) + 2 :].partition("/")
            total, _, pct = rest.partition(" ")
            assert pct == f"({int(done) * 100 // int(total)}%)", line
            found.append((int(done), int(total)))
    return found
