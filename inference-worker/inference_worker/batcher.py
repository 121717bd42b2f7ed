"""The dynamic batcher: per model, requests wait until their rows fill ``max_batch`` or the oldest
has waited ``max_queue_delay``; then they leave together as one batch. PURE: no threads, no
sleeps, no I/O; time comes from an injected clock. The worker loop calls ``submit`` as requests
arrive, ``due()`` to take the batches ready now, and sleeps until ``next_deadline()``.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from wasm_engine.errors import INFER_BAD_INPUT, INFER_MODEL_MISSING, WasmEngineError


@dataclass(frozen=True)
class Limits:
    max_batch: int  # rows per run
    max_delay_s: float  # how long the oldest request may wait for company


@dataclass(frozen=True)
class Pending:
    request_id: str
    item: Any  # what the caller runs (inputs, policy, reply address ...)
    rows: int
    arrived: float


@dataclass(frozen=True)
class Batch:
    model: str
    members: tuple[Pending, ...]

    @property
    def rows(self) -> int:
        return sum(m.rows for m in self.members)


@dataclass
class DynamicBatcher:
    limits: dict[str, Limits]
    clock: Callable[[], float] = time.monotonic
    queues: dict[str, deque[Pending]] = field(default_factory=dict)

    def submit(self, model: str, request_id: str, item: Any, rows: int = 1) -> None:
        lim = self.limits.get(model)
        if lim is None:
            raise WasmEngineError(INFER_MODEL_MISSING, f"no model {model!r}")
        if not 1 <= rows <= lim.max_batch:
            raise WasmEngineError(
                INFER_BAD_INPUT, f"{model}: {rows} rows; a request may have 1..{lim.max_batch}"
            )
        self.queues.setdefault(model, deque()).append(Pending(request_id, item, rows, self.clock()))

    def cancel(self, request_id: str) -> bool:
        for q in self.queues.values():
            for p in q:
                if p.request_id == request_id:
                    q.remove(p)
                    return True
        return False

    def pending(self, model: str | None = None) -> int:
        if model is not None:
            return len(self.queues.get(model, ()))
        return sum(len(q) for q in self.queues.values())

    def due(self) -> list[Batch]:
        """Every batch to run now: full ones, and ones whose oldest member waited its delay."""
        now, out = self.clock(), []
        for model, q in self.queues.items():
            lim = self.limits[model]
            while q:
                full = sum(p.rows for p in q) >= lim.max_batch
                if not full and now - q[0].arrived < lim.max_delay_s:
                    break
                out.append(Batch(model, self._take(q, lim.max_batch)))
        return out

    def next_deadline(self) -> float | None:
        """When ``due()`` will next have something without new submits (None: nothing waits)."""
        times = [q[0].arrived + self.limits[m].max_delay_s for m, q in self.queues.items() if q]
        return min(times, default=None)

    @staticmethod
    def _take(q: deque[Pending], max_rows: int) -> tuple[Pending, ...]:
        members, rows = [], 0
        while q and rows + q[0].rows <= max_rows:  # FIFO: never overtakes the head
            rows += q[0].rows
            members.append(q.popleft())
        return tuple(members)
