"""A compiled agent and its per-call path: :class:`Agent`, :class:`HostAgent`.

:class:`Limits` is what one call may use, :class:`CallResult` what it gives
back. :class:`Agent` is the fast path (module :mod:`wasm_worker.runtime` has
the ABI and the figures); :class:`HostAgent`, for a module that imports host
calls, registers the task's :class:`~wasm_worker.hostcalls.TaskHost` around the
same path and reports the error a host call recorded when it trapped.
"""

from __future__ import annotations

import ctypes
import math
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_engine.tasks import Emit
from wasm_worker import capi
from wasm_worker.hostcalls import TaskHost

if TYPE_CHECKING:
    from .runtime import WasmRuntime

_MASK32, _MASK64, _PAGE = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 65536


@dataclass(frozen=True)
class Limits:
    fuel: int = 1_000_000_000  # deterministic budget
    timeout_s: float = 10.0  # wall clock, enforced by epoch deadline
    memory_bytes: int = 64 << 20  # linear memory cap (StoreLimits)
    max_output: int = 16 << 20  # output bytes cap
    seed: int = 0  # the task's seed: we.random's stream (taken modulo 2**64)
    log_bytes: int = 64 << 10  # we.log bytes logged per task; the rest are dropped
    emit_events: int = 1000  # we.emit events per task
    emit_bytes: int = 1 << 20  # we.emit bytes per task
    random_bytes: int = 16 << 20  # we.random bytes per task (then a trap)

    def __post_init__(self) -> None:
        caps = (self.log_bytes, self.emit_events, self.emit_bytes, self.random_bytes)
        if min(self.fuel, self.memory_bytes, self.max_output, *caps) < 0 or not (
            0 <= self.timeout_s < 1e9
        ):
            raise ValueError(f"out-of-range limit in {self}")


@dataclass(frozen=True)
class CallResult:
    output: bytes
    fuel_used: int
    run_ns: int
    events: int = 0  # we.emit events sent
    log_dropped: int = 0  # we.log bytes over the cap


def _err(code: str, message: str, **detail: Any) -> WasmEngineError:
    return WasmEngineError(code, message, detail=detail)


def _mem_error(size: int, limits: Limits, why: str) -> WasmEngineError:
    cap = limits.memory_bytes
    return _err(E.WASM_MEMORY_LIMIT, f"{why} ({size} of {cap} bytes)", memory_bytes=size, limit=cap)


class Agent:
    """A compiled, ABI-checked module; :meth:`call` runs it under :class:`Limits`."""

    def __init__(self, rt: WasmRuntime, digest: str, keep: Any, idx: Any, mem_min: int) -> None:
        self.digest = digest
        self._rt = rt
        self._keep = keep  # (Module, InstancePre): the C handles below live as long as these
        self._pre_ptr = capi.addr(keep[1].ptr())
        self._indices, self._checked = idx, False
        self._mem_min = mem_min
        self._lock: threading.Lock | threading.RLock = threading.Lock()
        self._fresh, self._reused = capi.Slot(), capi.Slot()

    def reset(self) -> None:
        """Drop the reused instance, if any (the next ``reuse=True`` call makes a new one)."""
        with self._lock:
            self._drop_reused()

    def _drop_reused(self) -> None:
        self._reused.drop()
        self._rt._live.pop(self, None)

    def __del__(self) -> None:
        if hasattr(self, "_reused"):
            self._reused.drop()

    def call(
        self,
        data: bytes,
        limits: Limits,
        *,
        reuse: bool = False,
        task_id: str = "",
        emit: Emit | None = None,
    ) -> CallResult:
        """Run ``handle`` on ``data``; every failure is a :class:`WasmEngineError`.

        ``task_id`` (for the log) and ``emit`` (the sink of ``we.emit`` values)
        matter only to a :class:`HostAgent`: this agent imports no host call."""
        if self._rt.closed:
            raise _err(E.INTERNAL, "runtime is closed")
        if type(data) is not bytes:
            data = bytes(data)
        with self._lock:
            t0 = _ns()
            if reuse:
                s = self._reused
                try:
                    if s.store:
                        self._arm(s, limits)
                    else:
                        self._rt._admit(self)
                        self._instantiate(s, limits)
                    out, left = self._round(s, data, limits)
                except BaseException:
                    self._drop_reused()
                    raise
            else:
                s = self._fresh
                try:
                    self._instantiate(s, limits)
                    out, left = self._round(s, data, limits)
                finally:
                    s.drop()
            res = _new_result(CallResult)  # frozen dataclass, filled without its slow __init__
            res.__dict__.update(output=out, fuel_used=limits.fuel - left, run_ns=_ns() - t0)
            return res

    def _arm(self, s: capi.Slot, limits: Limits) -> None:
        if s.mem_cap != limits.memory_bytes:
            capi.store_limiter(s.store, limits.memory_bytes, capi.TABLE_ELEMENTS, 1, 1, 1)
            s.mem_cap = limits.memory_bytes
        capi.set_fuel(s.ctx, limits.fuel)
        capi.set_epoch_deadline(s.ctx, math.ceil(limits.timeout_s / self._rt.epoch_tick_s) + 1)

    def _instantiate(self, s: capi.Slot, limits: Limits) -> None:
        if self._mem_min > limits.memory_bytes:
            raise _mem_error(self._mem_min, limits, "initial memory is over the cap")
        s.store = capi.store_new(self._rt._engine_ptr, s.key, None)
        s.ctx = ctx = capi.store_context(s.store)
        self._arm(s, limits)  # fuel and deadline first: a start function is guest code
        err = capi.instance_pre_instantiate(self._pre_ptr, ctx, s.inst_addr, s.trap_addr)
        if err or s.trap.value:
            raise self._failure(s, err, limits, None)
        s.size = self._mem_min  # memories only grow: a lower bound until asked again
        if not s.bind_exports(self._indices, not self._checked):
            raise _err(E.INTERNAL, "the ABI exports moved after the load-time check")
        self._checked = True

    def _round(self, s: capi.Slot, data: bytes, limits: Limits) -> tuple[bytes, int]:
        ctx, mem, call, n = s.ctx, s.mem, capi.func_call_unchecked, len(data)
        s.v0_i32.value = n
        err = call(ctx, s.alloc_fn, s.vals_addr, 1, s.trap_addr)
        if err or s.trap.value:
            raise self._failure(s, err, limits, mem)
        ptr = s.v0_i32.value & _MASK32
        if ptr + n > s.size:  # ask wasmtime only when the known size is not enough
            s.size = size = capi.memory_data_size(ctx, mem)
            if ptr + n > size:
                if size + max(n, _PAGE) > limits.memory_bytes:  # no room left under the cap
                    raise _mem_error(size, limits, f"alloc({n}) failed at the memory cap")
                msg = f"alloc({n}) returned {ptr:#x}, outside memory of {size} bytes"
                raise _err(E.WASM_BAD_OUTPUT, msg, ptr=ptr, len=n, memory_bytes=size)
        ctypes.memmove(s.base + ptr, data, n)
        s.v0_i32.value, s.v1_i32.value = ptr, n
        err = call(ctx, s.handle_fn, s.vals_addr, 2, s.trap_addr)
        if err or s.trap.value:
            raise self._failure(s, err, limits, mem)
        packed = s.v0_i64.value & _MASK64
        optr, olen = packed >> 32, packed & _MASK32
        if olen > limits.max_output:
            msg = f"output of {olen} bytes is over the {limits.max_output}-byte cap"
            raise _err(E.WASM_OUTPUT_TOO_LARGE, msg, len=olen, max_output=limits.max_output)
        if optr + olen > s.size:
            s.size = size = capi.memory_data_size(ctx, mem)
            if optr + olen > size:
                msg = f"output {optr:#x}+{olen} lies outside memory of {size} bytes"
                raise _err(E.WASM_BAD_OUTPUT, msg, ptr=optr, len=olen, memory_bytes=size)
        out = ctypes.string_at(s.base + optr, olen)
        if err := capi.get_fuel(ctx, s.fuel_addr):
            raise _err(E.INTERNAL, f"fuel: {capi.take_error(err)}")
        return out, s.fuel.value

    def _failure(self, s: capi.Slot, err: Any, limits: Limits, mem: Any) -> WasmEngineError:
        trap, s.trap.value = s.trap.value, None
        if err:  # not a trap: the host failed (no address space, a table over its cap)
            if trap:
                capi.take_trap(trap)
            return _err(E.INTERNAL, f"wasmtime: {capi.take_error(err)}")
        code, msg = capi.take_trap(trap or 0)
        if code == capi.TRAP_OUT_OF_FUEL:
            return _err(E.WASM_OUT_OF_FUEL, f"out of fuel ({limits.fuel})", fuel=limits.fuel)
        if code == capi.TRAP_INTERRUPT:
            msg = f"wall-clock deadline of {limits.timeout_s}s passed"
            return _err(E.TASK_DEADLINE, msg, timeout_s=limits.timeout_s)
        if mem is not None:  # StoreLimits refuses memory.grow silently: look at the size
            size = capi.memory_data_size(s.ctx, mem)
            if size + _PAGE > limits.memory_bytes:
                return _mem_error(size, limits, "trapped with memory at its cap")
        return _err(E.WASM_TRAP, msg or capi.trap_kind(code), trap=capi.trap_kind(code))


class HostAgent(Agent):
    """An agent that imports host calls: each call runs with its task's
    :class:`~wasm_worker.hostcalls.TaskHost` (seed, caps, emit sink, task id)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self._lock = threading.RLock()  # held across the registration and Agent.call

    def call(
        self,
        data: bytes,
        limits: Limits,
        *,
        reuse: bool = False,
        task_id: str = "",
        emit: Emit | None = None,
    ) -> CallResult:
        tasks = self._rt._hosts.tasks
        with self._lock:
            s = self._reused if reuse else self._fresh
            tasks[s.key] = task = TaskHost(s, self.digest, task_id, limits, emit)
            try:
                res = super().call(data, limits, reuse=reuse)
            finally:
                del tasks[s.key]
                task.finish()
            res.__dict__.update(events=task.events, log_dropped=task.log_dropped)
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
        return _err(E.INTERNAL, msg)


_new_result, _ns = object.__new__, time.perf_counter_ns
