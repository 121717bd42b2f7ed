"""Per-model counters the inference worker reports in its heartbeats: :class:`ModelStats`.

Written by the engine thread as models run (and by the I/O thread for a request it refuses at
once), read by the heartbeat thread: every write and the copy :meth:`ModelStats.report` takes
happen under one lock, so a report is never torn (its ``batches`` always sum to its ``runs``)
and never a dict another thread is still changing. A write is a few integer additions under an
uncontended lock, once per model run, not per row.

What the counts mean (cumulative since the model was ready, warm-up left out):

- ``runs``: model calls that served requests; ``batches``: how many of those calls had each
  batch size, ``{"<size>": count}``. The size is what shared one call: rows for a tensor model
  (the stacked batch the dynamic batcher made), sequences for the LLM (the requests in one
  batched decode step; prefills run one request each and are not counted as runs).
- ``rows``: the sum of the sizes; ``requests``: requests received; ``failed``: requests that
  failed (a bad batch member, a refused prompt, a failed step).
- ``fallbacks``: runs (LLM: requests) that asked ``prefer_gpu`` and ran on CPU.
- ``device``: where the model last ran (``cpu`` | ``cuda``; empty before its first run).
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

COUNTS = ("runs", "rows", "requests", "failed", "fallbacks")


class ModelStats:
    __slots__ = ("_batches", "_counts", "_lock", "device")

    def __init__(self, device: str = "") -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(COUNTS, 0)
        self._batches: Counter[int] = Counter()
        self.device = device

    def record(
        self,
        *,
        batch: int = 0,
        requests: int = 0,
        failed: int = 0,
        fallbacks: int = 0,
        device: str = "",
    ) -> None:
        """Count at once: ``batch`` > 0 is one run shared by that many rows (or sequences)."""
        with self._lock:
            counts = self._counts
            if batch > 0:
                counts["runs"] += 1
                counts["rows"] += batch
                self._batches[batch] += 1
            counts["requests"] += requests
            counts["failed"] += failed
            counts["fallbacks"] += fallbacks
            if device:
                self.device = device

    def reset(self) -> None:
        """Forget the counts (after warm-up: they describe served requests only)."""
        with self._lock:
            self._counts = dict.fromkeys(COUNTS, 0)
            self._batches = Counter()

    def report(self) -> dict[str, Any]:
        """A copy: ``{runs, rows, requests, failed, fallbacks, batches: {"<size>": n}, device}``."""
        with self._lock:
            batches = {str(size): n for size, n in sorted(self._batches.items())}
            return {**self._counts, "batches": batches, "device": self.device}

    def __getitem__(self, name: str) -> int:
        """One count (``stats["runs"]``), read under the lock."""
        with self._lock:
            return self._counts[name]
