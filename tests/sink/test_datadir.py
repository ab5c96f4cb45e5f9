"""faust's data directories: a start removes those of sinks that are gone (a SIGKILLed sink cannot)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from processor.sink.app import DATADIR_PREFIX, fresh_datadir


def test_a_start_removes_the_directories_of_dead_sinks_only(tmp_path: Path) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    gone = tmp_path / f"{DATADIR_PREFIX}{dead.pid}-abc"
    (gone / "v1").mkdir(parents=True)
    running = tmp_path / f"{DATADIR_PREFIX}{os.getpid()}-def"
    running.mkdir()
    unrelated = tmp_path / f"{DATADIR_PREFIX}old-style"
    unrelated.mkdir()

    new = Path(fresh_datadir(str(tmp_path)))

    assert not gone.exists()
    assert running.is_dir() and unrelated.is_dir()
    assert new.is_dir() and new.name.startswith(f"{DATADIR_PREFIX}{os.getpid()}-") and new != running
