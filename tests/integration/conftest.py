"""Fixtures of the processor-versus-model tests (test_processor_properties.py, test_cancel_fetch.py)."""

from __future__ import annotations

import pytest

from tests.model.reference import DAY_MS


@pytest.fixture
def base_ms(now: int) -> int:
    """Midnight UTC five days before the test started (not before the module was imported). Day-aligned so
    bucket boundaries fall as in the model's own examples; the newest received time the strategy can make
    (base + 5 days) is today's midnight, never the future."""
    return (now * 1000 // DAY_MS - 5) * DAY_MS
