"""How a worker turns a task's outcome into its answer: one place for both ways a
task runs (``TaskHandler.run`` on the I/O or a task thread, ``start`` with a callback).

A result gets its stats (``run_us``, ``queue_us``, ``attempts``, ``worker``, and
``device`` unless the handler said where it really ran) and the ``shm.lease``
bodies for the tensors it published (sent ahead of it); a failure becomes an
``error`` body, a handler bug ``internal``.
"""

from __future__ import annotations

import logging
import time

from . import errors as E
from . import messages as M
from .errors import WasmEngineError
from .tensors import process

log = logging.getLogger("wasm_engine.worker")


def answer(
    outcome: M.TaskResult | BaseException,
    dispatch: M.TaskDispatch,
    t0_ns: int,
    worker: str,
    device: str,
) -> tuple[str, bytes, list[bytes]]:
    """(type, body, lease bodies to send first) for a task's outcome."""
    if isinstance(outcome, M.TaskResult):
        stats = outcome.stats
        leases = process.task_leases(stats, dispatch.task_id)
        stats["run_us"] = (time.perf_counter_ns() - t0_ns) // 1000
        stats["queue_us"] = dispatch.queued_us
        stats["attempts"] = dispatch.attempt
        stats["worker"] = worker
        stats.setdefault("device", device)
        return "task.result", outcome.pack(), leases
    if isinstance(outcome, WasmEngineError):
        outcome.detail.setdefault("worker", worker)
        return "error", M.Error(**outcome.to_body()).pack(), []
    if not isinstance(outcome, Exception):
        raise outcome  # KeyboardInterrupt, SystemExit: not the task's
    log.error("task %s failed", dispatch.task_id, exc_info=outcome)
    bug = WasmEngineError(
        E.INTERNAL, f"{type(outcome).__name__}: {outcome}", detail={"worker": worker}
    )
    return "error", M.Error(**bug.to_body()).pack(), []
