"""The monitor's ring buffers and histogram: pure, time passed in, no clock read."""

from __future__ import annotations

from collections import Counter

import pytest

from ui_monitor.series import LogHistogram, Ring, Series


def test_ring_keeps_the_window_and_reuses_expired_slots() -> None:
    ring: Ring[Counter[str]] = Ring(5, Counter)
    for second in range(100, 108):
        slot = ring.at(second)
        assert slot is not None
        slot["n"] += second
    window = ring.window(107, 5)
    assert [s for s, _ in window] == [103, 104, 105, 106, 107]
    assert [slot["n"] if slot else None for _, slot in window] == [103, 104, 105, 106, 107]
    assert ring.get(102) is None  # its slot now holds 107
    assert ring.at(102) is None  # too old to write: never lands on a newer second's slot
    assert ring.window(110, 5)[-1] == (110, None)  # seconds nobody wrote read as empty


def test_ring_needs_a_slot() -> None:
    with pytest.raises(ValueError):
        Ring(0, Counter)


def test_log_histogram_quantiles_are_within_three_percent() -> None:
    h = LogHistogram()
    for value in range(1, 10_001):
        h.add(value)
    assert h.count == 10_000 and h.max == 10_000
    for q, exact in ((0.5, 5000), (0.99, 9900), (0.01, 100)):
        got = h.quantile(q)
        assert got is not None and abs(got - exact) / exact < 0.03, (q, got)
    assert h.quantile(1.0) == 10_000  # never above the largest sample
    assert LogHistogram().quantile(0.5) is None
    zero = LogHistogram()
    zero.add(0)
    assert zero.quantile(0.5) == 0.0


def test_log_histogram_merge_adds_up() -> None:
    a, b = LogHistogram(), LogHistogram()
    a.add(10, 3)
    b.add(1000)
    a.merge(b)
    assert (a.count, a.max, a.mean) == (4, 1000, 257.5)


def test_series_columns_cover_the_asked_seconds() -> None:
    s = Series(60)
    s.count(1000, "ok", 5)
    s.count(1001, "ok", 7)
    s.sample(1001, "lat", 100)
    s.sample(1001, "lat", 300)
    s.gauge(1001, {"inflight": 4})
    assert s.count_column(1002, 3, "ok") == [5, 7, 0]
    assert s.total(1002, 3, ["ok"]) == 12
    p = s.quantile_column(1002, 3, "lat", 0.99)
    assert p[0] is None and p[2] is None and p[1] is not None and 290 < p[1] <= 300
    assert s.mean_column(1002, 3, "lat") == [None, 200, None]
    assert s.gauge_column(1002, 3, "inflight") == [None, 4, None]
    assert s.quantile_column(1002, 3, "never", 0.5) == [None, None, None]
    assert s.gauge_names(1002, 3) == ["inflight"]
