"""Which offsets may be committed: a per-partition contiguous "done" watermark. Pure: no I/O.

Records of one partition finish out of order (customers run concurrently), but a Kafka commit says
"everything before this offset is handled". So the tracker remembers, per partition, the offsets read
in order and which of them are done (delivered to Stripe or dead-lettered), and only releases the
longest done prefix. A record that is still being retried holds every later offset of its partition
back, however many finished: after a crash they are read again, and Stripe's identifier dedup makes
the resends harmless; skipping the slow one would lose it.

Each partition assignment is a *generation*. A rebalance that revokes a partition discards its state;
completions of records read under an older generation (requests still in flight during the rebalance)
are then ignored instead of marking offsets of the new generation done.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Generic, TypeVar

__all__ = ["OffsetTracker", "Token"]

T = TypeVar("T")
Partition = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Token:
    """Names one tracked record: hand it back to :meth:`OffsetTracker.done`."""

    partition: Partition
    generation: int
    offset: int


@dataclass(slots=True)
class _Entry(Generic[T]):
    offset: int
    ref: T
    done: bool = False


@dataclass(slots=True)
class _PartitionState(Generic[T]):
    generation: int
    entries: deque[_Entry[T]] = field(default_factory=deque)
    by_offset: dict[int, _Entry[T]] = field(default_factory=dict)
    last_offset: int = -1
    #: The offset to commit: one past the last offset of the done prefix (None: nothing done yet).
    position: int | None = None


class OffsetTracker(Generic[T]):
    """Tracks read offsets per partition; ``ref`` is whatever the caller needs back (a Kafka message)."""

    def __init__(self) -> None:
        self._parts: dict[Partition, _PartitionState[T]] = {}
        self._generations: dict[Partition, int] = {}

    def assign(self, partition: Partition) -> None:
        """Start tracking ``partition`` afresh (a new generation), e.g. after a rebalance assigned it."""
        generation = self._generations.get(partition, 0) + 1
        self._generations[partition] = generation
        self._parts[partition] = _PartitionState(generation)

    def revoke(self, partition: Partition) -> int:
        """Stop tracking ``partition``; returns how many records were read but not done."""
        state = self._parts.pop(partition, None)
        return 0 if state is None else len(state.entries)

    def assigned(self, partition: Partition) -> bool:
        return partition in self._parts

    def is_new(self, partition: Partition, offset: int) -> bool:
        """Whether ``offset`` is after everything tracked for ``partition`` in this generation (a
        consumer that seeks back re-reads records that are done or in progress: not new)."""
        state = self._parts.get(partition)
        return state is None or offset > state.last_offset

    def track(self, partition: Partition, offset: int, ref: T) -> Token:
        """Remember a record just read. Offsets of a partition must increase (gaps are fine: compaction
        and transaction markers leave holes)."""
        state = self._parts.get(partition)
        if state is None:
            self.assign(partition)
            state = self._parts[partition]
        if offset <= state.last_offset:
            raise ValueError(f"offset {offset} of {partition} is not after {state.last_offset}")
        entry = _Entry(offset, ref)
        state.entries.append(entry)
        state.by_offset[offset] = entry
        state.last_offset = offset
        return Token(partition, state.generation, offset)

    def done(self, token: Token) -> list[T]:
        """Mark a record done; return the refs that just became committable, in offset order."""
        state = self._parts.get(token.partition)
        if state is None or state.generation != token.generation:
            return []
        entry = state.by_offset.get(token.offset)
        if entry is None or entry.done:
            return []
        entry.done = True
        released: list[T] = []
        entries = state.entries
        while entries and entries[0].done:
            head = entries.popleft()
            del state.by_offset[head.offset]
            released.append(head.ref)
            state.position = head.offset + 1
        return released

    def position(self, partition: Partition) -> int | None:
        """The offset to commit for ``partition`` (one past its done prefix), or None."""
        state = self._parts.get(partition)
        return None if state is None else state.position

    def outstanding(self, partition: Partition | None = None) -> int:
        """Records read and not yet released (of one partition, or of all)."""
        if partition is not None:
            state = self._parts.get(partition)
            return 0 if state is None else len(state.entries)
        return sum(len(state.entries) for state in self._parts.values())

    def partitions(self) -> list[Partition]:
        return list(self._parts)
