"""The arena: a process's shared-memory segments, created up front and reused.

Creating a segment and first-touching its pages runs at ~1.5 GB/s, a tenth of a
memcpy: so a process creates its segments once, at start (after the preflight),
and hands out slots of them through one :class:`~.slots.SlotAllocator` each.
Owns the segments' life (create, revive, unlink at close), the slots and their
generations: every slot handed out gets a new generation from one counter,
written into its header, and a freed slot's header says 0, so an old handle to
a reused slot is refused. Full is ``shm.arena_full`` (retryable: backpressure).
Slots are taken and given back under one lock: agents on task threads publish
while the loop's thread frees.
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from ..errors import SHM_ARENA_FULL, WasmEngineError
from .preflight import check_shm_space
from .shm import HEADER, SHM_DIR, Segment, stack_prefix, unlink
from .slots import SlotAllocator

log = logging.getLogger("wasm_engine.tensors")


@dataclass(frozen=True, slots=True)
class Slot:
    segment: Segment
    offset: int  # where the data starts (the header is just before it)
    capacity: int
    generation: int


class Arena:
    def __init__(
        self,
        stack: str,
        size: int,
        *,
        segment_size: int = 256 << 20,
        shm_dir: Path = SHM_DIR,
        preflight: bool = True,
    ) -> None:
        if size <= 0 or segment_size <= HEADER:
            raise ValueError("arena and segment sizes must be positive")
        self.stack = stack
        self.shm_dir = shm_dir
        self._tag = f"{stack_prefix(stack)}{os.getpid()}-{os.urandom(3).hex()}"
        self._created = 0
        self._gen = 0
        self._lock = threading.Lock()
        if preflight:
            check_shm_space(size, shm_dir)
        sizes = []
        while size > 0:
            sizes.append(min(segment_size, size))
            size -= sizes[-1]
        self.segments: dict[str, Segment] = {}
        self.slots: dict[str, SlotAllocator] = {}
        try:
            for one in sizes:
                self._add(one)
        except BaseException:
            self.close()
            raise
        log.info("arena of %d segments, %d bytes", len(self.segments), sum(sizes))

    def _add(self, size: int) -> Segment:
        self._created += 1
        seg = Segment.create(f"{self._tag}-{self._created}", size, self.shm_dir)
        self.segments[seg.name] = seg
        self.slots[seg.name] = SlotAllocator(size)
        return seg

    def describe(self) -> list[dict[str, int | str]]:
        """The segments as ``worker.hello`` announces them: ``[{name, size}]``."""
        return [{"name": s.name, "size": s.size} for s in self.segments.values()]

    @property
    def free_bytes(self) -> int:
        return sum(a.free_bytes for a in self.slots.values())

    def alloc(self, nbytes: int) -> Slot:
        """A slot for ``nbytes`` of data, or ``shm.arena_full`` (nothing changed)."""
        with self._lock:
            return self._alloc(nbytes)

    def _alloc(self, nbytes: int) -> Slot:
        for name, slots in self.slots.items():
            start = slots.alloc(nbytes + HEADER)
            if start is not None:
                self._gen += 1
                seg = self.segments[name]
                capacity = slots.used[start] - HEADER
                seg.write_header(start, self._gen, capacity)
                return Slot(seg, start + HEADER, capacity, self._gen)
        largest = max((a.largest for a in self.slots.values()), default=0)
        raise WasmEngineError(
            SHM_ARENA_FULL,
            f"no free slot of {nbytes} B in the arena (largest free {max(0, largest - HEADER)} B)",
            retryable=True,
            detail={"requested": nbytes, "free": self.free_bytes, "largest": largest - HEADER},
        )

    def free(self, segment: str, offset: int, generation: int) -> bool:
        """Give a slot back; False (nothing changed) when that slot is not in use
        with that generation: a duplicate or stale free is harmless."""
        with self._lock:
            return self._free(segment, offset, generation)

    def _free(self, segment: str, offset: int, generation: int) -> bool:
        seg = self.segments.get(segment)
        start = offset - HEADER
        if seg is None or start < 0 or start not in self.slots[segment].used:
            return False
        head = seg.read_header(start)
        if head is None or head[0] != generation:
            return False
        seg.write_header(start, 0, head[1])
        self.slots[segment].free(start)
        return True

    def missing(self) -> list[str]:
        return [n for n in self.segments if not (self.shm_dir / n).exists()]

    def revive(self) -> list[str]:
        """Recreate segments that were unlinked under us (the orchestrator reclaimed
        them while it thought us lost); their old slots' handles stay refused."""
        with self._lock:
            return self._revive()

    def _revive(self) -> list[str]:
        gone = self.missing()
        for name in gone:
            seg = self.segments.pop(name)
            del self.slots[name]
            seg.close()
            log.warning("segment %s was reclaimed: creating a new one", name)
            self._add(seg.size)
        return gone

    def close(self) -> None:
        """Unlink every segment (views still alive keep their memory until dropped)."""
        for seg in self.segments.values():
            unlink(seg.name, self.shm_dir)
            seg.close()
        self.segments.clear()
        self.slots.clear()
