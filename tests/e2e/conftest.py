"""The ``meterstream up`` fixture of the end-to-end tests: ``up`` as a user runs it, its output parsed."""

from __future__ import annotations

import json
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.embedded import free_port
from tests.conftest import cluster_wanted
from tests.helpers import child_env


def start_up(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """``python -m processor up ARGS``, its output (stdout and stderr) on a text pipe for ``read_banner``."""
    return subprocess.Popen(
        [sys.executable, "-m", "processor", "up", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def read_banner(
    proc: subprocess.Popen[str], timeout: float = 120.0
) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """Read ``up``'s banner up to "Press Ctrl-C": its ``name : value`` lines, the ``export`` lines it printed
    (parsed, NAME -> value) and every line as printed."""
    assert proc.stdout is not None
    info: dict[str, str] = {}
    exports: dict[str, str] = {}
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.match(r"\s+([a-z -]+?)\s*: (\S+)", line)
        if m:
            info[m.group(1).strip()] = m.group(2)
        k = re.search(r"local emulator, key (sk_test_\w+)", line)
        if k:
            info["stripe key"] = k.group(1)
        if line.startswith("  export "):
            name, _, value = shlex.split(line)[1].partition("=")
            exports[name] = value
        if line.startswith("Press Ctrl-C"):
            break
    return info, exports, lines


@pytest.fixture
def running_up(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    port = free_port()
    env = child_env(METERSTREAM_GATEWAY_PORT=str(port))
    prefix = "ms"
    if cluster_wanted():  # the cluster run: every component of `up` on the session's Redis Cluster
        env["METERSTREAM_REDIS_URL"] = request.getfixturevalue("redis_url")
        # That cluster outlives one `up`: a prefix of its own keeps this test's meters (the mirror and the
        # reserved event_names) from the next one's, as each `up` has a fresh broker and an empty topic.
        prefix = env["METERSTREAM_REDIS_PREFIX"] = f"ms{uuid.uuid4().hex[:8]}"
    proc = start_up(env, "--state-dir", str(tmp_path))
    assert proc.stdout is not None
    info, exports, lines = read_banner(proc)
    assert "api key" in info, "".join(lines)
    assert cluster_wanted() or "****@" in info["redis"], info  # the embedded Valkey has a password, masked
    info["gateway"] = f"http://127.0.0.1:{port}"
    info["exports"] = json.dumps(exports)  # the `export` lines `up` printed, parsed (NAME -> value)
    # The env file holds the same lines, readable by this user only.
    env_file = Path(info["env file"])
    assert env_file.stat().st_mode & 0o077 == 0
    assert {ln.split("=", 1)[0] for ln in env_file.read_text("utf-8").splitlines()} == {
        f"export {name}" for name in exports
    }
    info["redis"] = exports["METERSTREAM_REDIS_URL"]  # the real URL, password included
    info["redis prefix"] = prefix
    info["output"] = "".join(lines)
    yield info
    proc.send_signal(signal.SIGINT)
    try:
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
