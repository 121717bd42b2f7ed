"""An agent that imports host calls: :class:`HostAgent`.

It runs :class:`~wasm_worker.agent.Agent`'s call path with the task's
:class:`~wasm_worker.taskhost.TaskHost` registered on the slot around each call
(the host calls find it through the store's data, see
:class:`~wasm_worker.hostcalls.HostCalls`), hands the counters and published
tensors back in the :class:`~wasm_worker.agent.CallResult`, frees those tensors
when the call fails, and reports the error a host call recorded when it trapped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_engine.tasks import Calls, Emit
from wasm_worker import capi
from wasm_worker.agent import Agent, CallResult, Limits
from wasm_worker.failures import failure
from wasm_worker.taskhost import TaskHost

if TYPE_CHECKING:
    from wasm_engine.tensors import TensorPlane


class HostAgent(Agent):
    """An agent that imports host calls: each call runs with its task's
    :class:`~wasm_worker.taskhost.TaskHost` (seed, caps, emit sink, task id)."""

    def call(
        self,
        data: bytes,
        limits: Limits,
        *,
        reuse: bool = False,
        task_id: str = "",
        emit: Emit | None = None,
        calls: Calls | None = None,
        slot: capi.Slot | None = None,
        tensors: TensorPlane | None = None,
    ) -> CallResult:
        if slot is not None:
            return self.call_host(
                slot, data, limits, reuse=True, task_id=task_id, emit=emit, calls=calls,
                tensors=tensors,
            )  # fmt: skip
        s = self.take(reuse)
        try:
            return self.call_host(
                s, data, limits, reuse=reuse, task_id=task_id, emit=emit, calls=calls,
                tensors=tensors,
            )  # fmt: skip
        finally:
            self.give(s, reuse)

    def call_host(
        self,
        s: capi.Slot,
        data: bytes,
        limits: Limits,
        *,
        reuse: bool,
        task_id: str = "",
        emit: Emit | None = None,
        calls: Calls | None = None,
        tensors: TensorPlane | None = None,
    ) -> CallResult:
        """:meth:`call_in` with the task's host context registered on the slot. The
        tensors it published are the caller's once it returns, freed if it raises."""
        tasks = self._rt._hosts.tasks
        tasks[s.key] = task = TaskHost(s, self.digest, task_id, limits, emit, calls, tensors)
        try:
            res = self.call_in(s, data, limits, reuse=reuse)
        except BaseException:
            task.drop_published()
            raise
        finally:
            del tasks[s.key]
            task.finish()
        res.__dict__.update(
            events=task.events, log_dropped=task.log_dropped, tensors=tuple(task.published)
        )
        return res

    def _failure(self, s: capi.Slot, err: Any, limits: Limits, mem: Any) -> WasmEngineError:
        task = self._rt._hosts.tasks.get(s.key)
        failed = task and task.error
        if not failed:
            return super()._failure(s, err, limits, mem)
        trap, s.trap.value = s.trap.value, None
        if trap:
            capi.take_trap(trap)
        if err:
            capi.take_error(err)
        if isinstance(failed, WasmEngineError):
            return failed
        if not isinstance(failed, Exception):  # KeyboardInterrupt, SystemExit: not the task's
            raise failed
        msg = f"host call failed: {type(failed).__name__}: {failed}"
        return failure(E.INTERNAL, msg)
