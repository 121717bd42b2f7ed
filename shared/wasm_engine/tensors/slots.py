"""The slot allocator of one segment: first fit over a sorted free list, coalescing.

Pure bookkeeping of byte ranges (no memory, no clock): which ranges of a
segment are free, which are handed out. ``arena`` owns one per segment and the
memory behind it. Every range starts on ``align`` and has a size that is a
multiple of it, so a slot's header and data stay aligned.
"""

from __future__ import annotations

import bisect


class SlotAllocator:
    def __init__(self, size: int, align: int = 64) -> None:
        self.size = size - size % align
        self.align = align
        self._starts: list[int] = [0] if self.size else []  # free ranges, sorted by start
        self._lens: list[int] = [self.size] if self.size else []
        self.used: dict[int, int] = {}  # start -> length of every range handed out

    @property
    def free_bytes(self) -> int:
        return sum(self._lens)

    @property
    def largest(self) -> int:
        return max(self._lens, default=0)

    def alloc(self, nbytes: int) -> int | None:
        """The start of a free range of at least ``nbytes`` (rounded up), or None."""
        need = max(self.align, -(-nbytes // self.align) * self.align)
        for i, length in enumerate(self._lens):
            if length >= need:
                start = self._starts[i]
                if length == need:
                    del self._starts[i], self._lens[i]
                else:
                    self._starts[i] += need
                    self._lens[i] -= need
                self.used[start] = need
                return start
        return None

    def free(self, start: int) -> bool:
        """Give back the range at ``start``; False when it was not handed out."""
        length = self.used.pop(start, None)
        if length is None:
            return False
        i = bisect.bisect_left(self._starts, start)
        self._starts.insert(i, start)
        self._lens.insert(i, length)
        # merge with the next, then with the previous range when they touch
        if i + 1 < len(self._starts) and start + length == self._starts[i + 1]:
            self._lens[i] += self._lens.pop(i + 1)
            del self._starts[i + 1]
        if i > 0 and self._starts[i - 1] + self._lens[i - 1] == start:
            self._lens[i - 1] += self._lens.pop(i)
            del self._starts[i]
        return True
