"""Stripe's limits are defined once (processor/limits.py). The emulator keeps its own copy on purpose (it is
an independent oracle of the same rules, docs/stripe-emulator.md), and so does the reference model in
tests/model; any other module that spells one of them out again fails here."""

from __future__ import annotations

import re
from pathlib import Path

from processor import limits

ROOT = Path(__file__).resolve().parents[2] / "processor"
ALLOWED = {ROOT / "limits.py"}
INDEPENDENT = ROOT / "emulator"
#: How the limits were written when they were copied: 35 days, 5 minutes, 15 digits, 100 characters.
COPIES = re.compile(
    r"^\s*[A-Z_]*(PAST|FUTURE|DIGITS|IDENTIFIER|EVENT_NAME|DEDUP)[A-Z_]*\s*(?::\s*int\s*)?=\s*"
    r"(35\s*\*\s*(86_?400|DAY_S)|300|15|100|24\s*\*.*)\s*(#.*)?$",
    flags=re.MULTILINE,
)


def test_the_limits_are_stripes() -> None:
    assert limits.TIMESTAMP_PAST_S == 35 * 86_400 and limits.TIMESTAMP_FUTURE_S == 5 * 60
    assert limits.DEDUP_WINDOW_S == 24 * 3_600 and limits.MAX_SIGNIFICANT_DIGITS == 15
    assert limits.IDENTIFIER_MAX == 100 and limits.EVENT_NAME_MAX == 100


def test_no_module_defines_them_again() -> None:
    copies = []
    for path in ROOT.rglob("*.py"):
        if path in ALLOWED or INDEPENDENT in path.parents:
            continue
        copies += [f"{path.relative_to(ROOT)}: {m.group(0).strip()}" for m in COPIES.finditer(path.read_text())]
    assert copies == []
