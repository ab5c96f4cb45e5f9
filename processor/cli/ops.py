"""Operations commands (``rebuild``, ``replay``, ``reconcile``, ``import``, ``errors``, ``correct``).

Thin click wrappers over :mod:`processor.ops`; every command is safe to run while the pipeline is live.
"""

from __future__ import annotations

import click

__all__ = ["COMMANDS"]

COMMANDS: list[click.Command] = []
