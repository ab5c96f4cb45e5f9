"""The sink's faust app (work in progress)."""

from __future__ import annotations

from processor.config import Settings
from processor.errors import ConfigError

__all__ = ["run_sink"]


def run_sink(settings: Settings) -> None:
    """Run the sink until SIGTERM/SIGINT."""
    raise ConfigError("the sink is not implemented yet")
