"""Operations tools: rebuild, replay, reconcile, import, errors, correct (docs/operations.md)."""
