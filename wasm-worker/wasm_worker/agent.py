"""A compiled agent and its per-call path: :class:`Agent`, :class:`Limits`, :class:`CallResult`.

:class:`Limits` is what one call may use, :class:`CallResult` what it gives
back. :class:`Agent` is the fast path (module :mod:`wasm_worker.runtime` has
the ABI and the figures): reused and fresh instances, the call round
(``alloc``, copy in, ``handle``, copy out) and the mapping of a trap or a
wasmtime error to a typed :class:`WasmEngineError`. An agent that imports host
calls is a :class:`~wasm_worker.hostagent.HostAgent`, which runs this same path.
"""

from __future__ import annotations

import ctypes
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_engine.tasks import Calls, Emit
from wasm_worker import capi
from wasm_worker.failures import failure

if TYPE_CHECKING:
    from wasm_engine.tensors import TensorPlane, TensorRef

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
    request_bytes: int = 1 << 20  # one child request (we.spawn, we.generate…)
    tensor_bytes: int = 64 << 20  # we.tensor_publish bytes per task (then a trap)

    def __post_init__(self) -> None:
        caps = (
            self.log_bytes,
            self.emit_events,
            self.emit_bytes,
            self.random_bytes,
            self.request_bytes,
            self.tensor_bytes,
        )
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
    tensors: tuple[TensorRef, ...] = ()  # we.tensor_publish handles, owned by the caller now


def _mem_error(size: int, limits: Limits, why: str) -> WasmEngineError:
    cap = limits.memory_bytes
    return failure(
        E.WASM_MEMORY_LIMIT, f"{why} ({size} of {cap} bytes)", memory_bytes=size, limit=cap
    )


class Agent:
    """A compiled, ABI-checked module; :meth:`call` runs it under :class:`Limits`."""

    def __init__(
        self, rt: WasmRuntime, digest: str, keep: Any, idx: Any, mem_min: int, blocking: bool
    ) -> None:
        self.digest = digest
        self.blocking = blocking  # imports a host call that waits (spawn, wait…): run on a thread
        self._rt = rt
        self._keep = keep  # (Module, InstancePre): the C handles below live as long as these
        self._pre_ptr = capi.addr(keep[1].ptr())
        self._indices, self._checked = idx, False
        self._mem_min = mem_min
        # Slots are taken and given back with list.pop/append (atomic under the GIL),
        # so calls on several threads never share one: each runs in its own store.
        self._spare: list[capi.Slot] = []  # no store: for fresh-instance calls
        self._idle: list[capi.Slot] = []  # a live instance each, not in a call now
        self.retired = False  # dropped from the runtime: instances end with their call

    def reset(self) -> None:
        """Drop the idle reused instances (the next ``reuse=True`` call makes a new one)."""
        while self.drop_idle():
            pass

    def drop_idle(self) -> bool:
        """Drop one idle reused instance, if there is one (the runtime's eviction)."""
        try:
            s = self._idle.pop(0)  # the oldest
        except IndexError:
            return False
        self._drop(s)
        return True

    def _drop(self, s: capi.Slot) -> None:
        if s.store:
            s.drop()
            self._rt._release(self)

    def __del__(self) -> None:
        for s in getattr(self, "_idle", ()):
            s.drop()

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
        """Run ``handle`` on ``data``; every failure is a :class:`WasmEngineError`.

        ``task_id`` (for the log), ``emit`` (the sink of ``we.emit`` values),
        ``calls`` (child requests: spawn, generate…) and ``tensors`` (the
        worker's plane, for ``we.tensor_*``) matter only to a
        :class:`HostAgent`: this agent imports no host call. With ``slot`` the
        call runs in that slot's instance (a session's), made if it has none and
        kept after; the caller owns the slot."""
        if slot is not None:
            return self.call_in(slot, data, limits, reuse=True)
        s = self.take(reuse)
        try:
            return self.call_in(s, data, limits, reuse=reuse)
        finally:
            self.give(s, reuse)

    def take(self, reuse: bool) -> capi.Slot:
        """A slot for one call: an idle instance when reusing, else an empty slot."""
        try:
            return (self._idle if reuse else self._spare).pop()
        except IndexError:
            return capi.Slot()

    def retire(self) -> None:
        """The runtime dropped this agent: its idle instances go now, the ones in a
        call when that call ends (so the pool's count of live instances stays right)."""
        self.retired = True
        self.reset()

    def give(self, s: capi.Slot, reuse: bool) -> None:
        """Back after a call: a reused instance that survived goes idle, else dropped."""
        if reuse and s.store and not self.retired:
            self._idle.append(s)
        else:
            self._drop(s)
            self._spare.append(s)

    def call_in(self, s: capi.Slot, data: bytes, limits: Limits, *, reuse: bool) -> CallResult:
        """One call in slot ``s`` (its instance kept when ``reuse`` and it succeeds)."""
        if self._rt.closed:
            raise failure(E.INTERNAL, "runtime is closed")
        if type(data) is not bytes:
            data = bytes(data)
        t0 = _ns()
        try:
            if s.store:
                self._arm(s, limits)
            else:
                self._instantiate(s, limits)
            out, left = self._round(s, data, limits)
        except BaseException:
            self._drop(s)
            raise
        if not reuse:
            self._drop(s)
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
        self._rt._admit(self)
        s.store = capi.store_new(self._rt._engine_ptr, s.key, None)
        s.ctx = ctx = capi.store_context(s.store)
        self._arm(s, limits)  # fuel and deadline first: a start function is guest code
        err = capi.instance_pre_instantiate(self._pre_ptr, ctx, s.inst_addr, s.trap_addr)
        if err or s.trap.value:
            raise self._failure(s, err, limits, None)
        s.size = self._mem_min  # memories only grow: a lower bound until asked again
        if not s.bind_exports(self._indices, not self._checked):
            raise failure(E.INTERNAL, "the ABI exports moved after the load-time check")
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
                raise failure(E.WASM_BAD_OUTPUT, msg, ptr=ptr, len=n, memory_bytes=size)
        ctypes.memmove(s.base + ptr, data, n)
        s.v0_i32.value, s.v1_i32.value = ptr, n
        err = call(ctx, s.handle_fn, s.vals_addr, 2, s.trap_addr)
        if err or s.trap.value:
            raise self._failure(s, err, limits, mem)
        packed = s.v0_i64.value & _MASK64
        optr, olen = packed >> 32, packed & _MASK32
        if olen > limits.max_output:
            msg = f"output of {olen} bytes is over the {limits.max_output}-byte cap"
            raise failure(E.WASM_OUTPUT_TOO_LARGE, msg, len=olen, max_output=limits.max_output)
        if optr + olen > s.size:
            s.size = size = capi.memory_data_size(ctx, mem)
            if optr + olen > size:
                msg = f"output {optr:#x}+{olen} lies outside memory of {size} bytes"
                raise failure(E.WASM_BAD_OUTPUT, msg, ptr=optr, len=olen, memory_bytes=size)
        out = ctypes.string_at(s.base + optr, olen)
        if err := capi.get_fuel(ctx, s.fuel_addr):
            raise failure(E.INTERNAL, f"fuel: {capi.take_error(err)}")
        return out, s.fuel.value

    def _failure(self, s: capi.Slot, err: Any, limits: Limits, mem: Any) -> WasmEngineError:
        trap, s.trap.value = s.trap.value, None
        if err:  # not a trap: the host failed (no address space, a table over its cap)
            if trap:
                capi.take_trap(trap)
            return failure(E.INTERNAL, f"wasmtime: {capi.take_error(err)}")
        code, msg = capi.take_trap(trap or 0)
        if code == capi.TRAP_OUT_OF_FUEL:
            return failure(E.WASM_OUT_OF_FUEL, f"out of fuel ({limits.fuel})", fuel=limits.fuel)
        if code == capi.TRAP_INTERRUPT:
            msg = f"wall-clock deadline of {limits.timeout_s}s passed"
            return failure(E.TASK_DEADLINE, msg, timeout_s=limits.timeout_s)
        if mem is not None:  # StoreLimits refuses memory.grow silently: look at the size
            size = capi.memory_data_size(s.ctx, mem)
            if size + _PAGE > limits.memory_bytes:
                return _mem_error(size, limits, "trapped with memory at its cap")
        return failure(E.WASM_TRAP, msg or capi.trap_kind(code), trap=capi.trap_kind(code))


_new_result, _ns = object.__new__, time.perf_counter_ns
