"""Time series in fixed memory: per-second ring buffers and a log-bucketed histogram.

Owns the data structures behind every chart: :class:`Ring` (one slot per second
over a fixed window, a slot reused when its second has passed out of the window),
:class:`LogHistogram` (quantiles within ~3% from bucket counts, constant cost
per sample whatever the rate) and :class:`Series`, the named per-second figures
the dashboard plots. Pure: time is always passed in (seconds since the epoch),
nothing here reads a clock, opens a socket or logs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

T = TypeVar("T")

#: buckets per doubling: bucket edges grow by 2**(1/24), about 2.9 %
_PER_OCTAVE = 24


class Ring(Generic[T]):
    """``seconds`` slots, slot ``s % seconds`` holding second ``s``. Reading or writing
    a second older than the window is refused (``None``/no-op), never wraps onto new data."""

    def __init__(self, seconds: int, factory: Callable[[], T]) -> None:
        if seconds < 1:
            raise ValueError("a ring needs at least one slot")
        self.seconds = seconds
        self._factory = factory
        self._stamp: list[int] = [-1] * seconds
        self._slot: list[T | None] = [None] * seconds
        self.newest = -1  # the newest second written

    def at(self, second: int) -> T | None:
        """The slot of ``second`` for writing (fresh when its old second expired);
        ``None`` when ``second`` is already out of the window."""
        if second <= self.newest - self.seconds:
            return None
        i = second % self.seconds
        slot = self._slot[i]
        if self._stamp[i] != second or slot is None:
            slot = self._factory()
            self._slot[i] = slot
            self._stamp[i] = second
        self.newest = max(self.newest, second)
        return slot

    def get(self, second: int) -> T | None:
        """The slot of ``second`` if it was written and is still held."""
        i = second % self.seconds
        return self._slot[i] if self._stamp[i] == second else None

    def window(self, now: int, seconds: int) -> list[tuple[int, T | None]]:
        """``(second, slot or None)`` for the ``seconds`` seconds ending at ``now``."""
        seconds = min(seconds, self.seconds)
        return [(s, self.get(s)) for s in range(now - seconds + 1, now + 1)]


class LogHistogram:
    """Counts in logarithmic buckets (``_PER_OCTAVE`` per doubling) of positive values;
    zero and negatives share bucket 0. A quantile is the geometric mid of its bucket (the
    largest sample itself in the top bucket)."""

    __slots__ = ("buckets", "count", "max", "total")

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    @staticmethod
    def bucket(value: float) -> int:
        return 0 if value < 1 else 1 + int(math.log2(value) * _PER_OCTAVE)

    @staticmethod
    def value(bucket: int) -> float:
        if bucket == 0:
            return 0.0
        return float(2 ** ((bucket - 0.5) / _PER_OCTAVE))

    def add(self, value: float, n: int = 1) -> None:
        self.buckets[self.bucket(value)] += n
        self.count += n
        self.total += value * n
        self.max = max(self.max, value)

    def merge(self, other: LogHistogram) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """The value under which a fraction ``q`` of the samples lie; None when empty."""
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        seen, top = 0, self.bucket(self.max)
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:  # the largest sample's bucket answers that sample, exactly
                return self.max if bucket == top else self.value(bucket)
        return self.max

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None


class Series:
    """Named per-second figures over a window: counts (``count``), samples summarised by
    quantiles (``sample``) and last values of gauges (``gauge``); read as chart columns."""

    def __init__(self, seconds: int = 600) -> None:
        self.seconds = seconds
        self.counts: Ring[Counter[str]] = Ring(seconds, Counter)
        self.samples: dict[str, Ring[LogHistogram]] = {}
        self.gauges: Ring[dict[str, float]] = Ring(seconds, dict)

    def count(self, second: int, name: str, n: int = 1) -> None:
        slot = self.counts.at(second)
        if slot is not None:
            slot[name] += n

    def sample(self, second: int, name: str, value: float, n: int = 1) -> None:
        ring = self.samples.get(name)
        if ring is None:
            ring = self.samples[name] = Ring(self.seconds, LogHistogram)
        slot = ring.at(second)
        if slot is not None:
            slot.add(value, n)

    def gauge(self, second: int, values: dict[str, float]) -> None:
        slot = self.gauges.at(second)
        if slot is not None:
            slot.update(values)

    def count_column(self, now: int, seconds: int, name: str) -> list[float | None]:
        return [slot[name] if slot else 0 for _, slot in self.counts.window(now, seconds)]

    def quantile_column(self, now: int, seconds: int, name: str, q: float) -> list[float | None]:
        ring = self.samples.get(name)
        if ring is None:
            return [None] * min(seconds, self.seconds)
        return [slot.quantile(q) if slot else None for _, slot in ring.window(now, seconds)]

    def mean_column(self, now: int, seconds: int, name: str) -> list[float | None]:
        ring = self.samples.get(name)
        if ring is None:
            return [None] * min(seconds, self.seconds)
        return [slot.mean if slot else None for _, slot in ring.window(now, seconds)]

    def gauge_column(self, now: int, seconds: int, name: str) -> list[float | None]:
        return [slot.get(name) if slot else None for _, slot in self.gauges.window(now, seconds)]

    def gauge_names(self, now: int, seconds: int) -> list[str]:
        names: set[str] = set()
        for _, slot in self.gauges.window(now, seconds):
            if slot:
                names.update(slot)
        return sorted(names)

    def total(self, now: int, seconds: int, names: Iterable[str]) -> int:
        wanted = list(names)
        return sum(slot[n] for _, slot in self.counts.window(now, seconds) if slot for n in wanted)
