"""docs/redis-keys.md lists every key processor/state/keys.py can make: each key function is called with
marker arguments, the markers (and their digests) become ``*``, and the result must be one of the
documented key shapes (whose ``<placeholders>`` become ``*`` the same way)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from processor.state import keys as keys_module
from processor.state.keys import Keys, identifier_digest

DOC = Path(__file__).resolve().parents[2] / "docs" / "redis-keys.md"
#: Helpers that make patterns or prefixes for scans, not keys that hold data.
NOT_KEYS = {"claim_pattern", "usage_pattern", "all_pattern", "rebuild_prefix"}


def _documented() -> set[str]:
    shapes = set()
    for cell in re.findall(r"^\| `([^`]+)`", DOC.read_text("utf-8"), flags=re.MULTILINE):
        shapes.add(re.sub(r"<[^>]+>", "*", cell.replace("\\|", "|")))
    return shapes


def _shape(key: str, markers: list[str]) -> str:
    for marker in markers:
        key = key.replace(identifier_digest(marker), "*").replace(marker, "*")
        if marker.isdigit():  # an integer argument may be written in hex (claim shards)
            key = key.replace(f"{int(marker):x}", "*")
    return key


def _made_keys() -> dict[str, str]:
    made = {}
    keys = Keys("ms")
    for name, method in inspect.getmembers(keys, inspect.ismethod):
        if name.startswith("_") or name in NOT_KEYS:
            continue
        markers = [
            f"X{i}Q" if p.annotation in (str, "str") else str(900_000 + i)
            for i, p in enumerate(inspect.signature(method).parameters.values())
        ]
        args = [m if m.startswith("X") else int(m) for m in markers]
        made[f"Keys.{name}"] = _shape(method(*args), markers)
    for name, func in inspect.getmembers(keys_module, inspect.isfunction):
        params = list(inspect.signature(func).parameters)
        if func.__module__ != keys_module.__name__ or not params or params[0] != "prefix":
            continue
        markers = [f"X{i}Q" for i in range(len(params) - 1)]
        made[name] = _shape(func("ms", *markers), markers)
    return made


def test_every_key_is_documented() -> None:
    documented = _documented()
    made = _made_keys()
    assert len(made) > 20  # the scan above really found the key functions
    missing = {name: shape for name, shape in made.items() if shape not in documented}
    assert not missing, f"keys missing from docs/redis-keys.md: {missing}"
