"""What ``meterstream up`` runs: the embedded services where nothing is configured, the topics, then each
pipeline component as a child process (``python -m processor <command>``) with the resolved settings in
its environment. Children are restarted if they die, and stopped in reverse order on Ctrl-C.

Child processes rather than threads: each component owns its Kafka clients and event loop, exactly as it
would in production (one container each), so ``up`` exercises the same code paths as a deployment.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from processor.config import Settings

__all__ = ["Component", "Supervisor"]

log = logging.getLogger(__name__)


@dataclass
class Component:
    """A child process running one ``meterstream`` subcommand."""

    name: str
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    _started_at: float = field(default=0.0)

    def start(self, env: dict[str, str]) -> None:
        fh = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "processor", *self.args],
            env=env,
            stdout=fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        fh.close()
        self._started_at = time.monotonic()

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", self.name, timeout)
            self.proc.kill()
            self.proc.wait(5)


class Supervisor:
    """Starts components, restarts a crashed one (with a back-off), stops all on request."""

    def __init__(self, settings: Settings, logdir: Path) -> None:
        self.settings = settings
        self.logdir = logdir
        self.components: list[Component] = []
        self._stopping = False

    def add(self, name: str, *args: str) -> Component:
        comp = Component(name, list(args), self.logdir / f"{name}.log")
        self.components.append(comp)
        return comp

    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if not k.startswith("METERSTREAM_")}
        base.update(self.settings.to_env())
        return base

    def start_all(self) -> None:
        env = self.env()
        for comp in self.components:
            comp.start(env)
            log.info("started %s (pid %s, log %s)", comp.name, comp.proc.pid if comp.proc else "?", comp.log_path)

    def watch(self) -> None:
        """Block until asked to stop, restarting components that exit."""
        env = self.env()
        while not self._stopping:
            for comp in self.components:
                if comp.proc is not None and comp.proc.poll() is not None and not self._stopping:
                    code = comp.proc.returncode
                    delay = min(30.0, 2.0**comp.restarts)
                    log.warning(
                        "%s exited with %s; restarting in %.0fs (see %s)",
                        comp.name,
                        code,
                        delay,
                        comp.log_path,
                    )
                    time.sleep(delay)
                    comp.restarts += 1
                    comp.start(env)
            time.sleep(0.5)

    def stop_all(self) -> None:
        self._stopping = True
        for comp in reversed(self.components):
            comp.stop()
