"""Sandboxed agent calls in wasmtime: agent ABI v1 on a fast C-API path.

ABI v1: the guest exports ``memory`` (one 32-bit unshared memory),
``alloc(len: i32) -> i32`` (a pointer to ``len`` writable bytes) and
``handle(ptr: i32, len: i32) -> i64``, whose i64 packs the output as
``(out_ptr << 32) | out_len``: bits 63..32 the pointer, bits 31..0 the length,
both unsigned 32-bit (the host masks with ``& 0xFFFFFFFF``). Input and output
are opaque bytes. No imports are provided yet (no ``we.*``, no WASI).

Per call: arm fuel, epoch deadline and memory cap (before instantiating: a start
function is guest code), instantiate unless reusing, ``alloc(len(data))``, copy
the input in, ``handle``, check ``out_len <= max_output`` then ``out_ptr +
out_len <= memory size`` in Python ints, copy the output out, read fuel left.

Speed (``bench/wasm_call.py``, no-op agent, 2-core dev box, µs per call, one
run): fresh Store + instance 12.6 (pooling allocator; 33 with on-demand memory),
reused instance 4.7; wasmtime-py's high-level API in the same run: 105 fresh,
50 reused. Loading uses wasmtime-py; calls go through
:mod:`wasm_worker.capi` (instance-pre instantiate, unchecked calls on exports
whose types were checked at load, memmove/string_at at a fixed memory base).
"""

from __future__ import annotations

import ctypes
import hashlib
import math
import threading
import time
from dataclasses import dataclass
from typing import Any

import wasmtime

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_worker import capi

_MASK32, _MASK64, _PAGE = 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 65536
_POOL_SPARE = 8  # pool slots kept free of reused instances, for fresh calls
_ABI = {"alloc": (["i32"], ["i32"]), "handle": (["i32", "i32"], ["i64"])}


@dataclass(frozen=True)
class Limits:
    fuel: int = 1_000_000_000  # deterministic budget
    timeout_s: float = 10.0  # wall clock, enforced by epoch deadline
    memory_bytes: int = 64 << 20  # linear memory cap (StoreLimits)
    max_output: int = 16 << 20  # output bytes cap

    def __post_init__(self) -> None:
        if min(self.fuel, self.memory_bytes, self.max_output) < 0 or not 0 <= self.timeout_s < 1e9:
            raise ValueError(f"out-of-range limit in {self}")


@dataclass(frozen=True)
class CallResult:
    output: bytes
    fuel_used: int
    run_ns: int


def _err(code: str, message: str, **detail: Any) -> WasmEngineError:
    return WasmEngineError(code, message, detail=detail)


def _mem_error(size: int, limits: Limits, why: str) -> WasmEngineError:
    cap = limits.memory_bytes
    return _err(E.WASM_MEMORY_LIMIT, f"{why} ({size} of {cap} bytes)", memory_bytes=size, limit=cap)


class WasmRuntime:
    """One Engine (fuel + epoch interruption), its epoch ticker and module cache.

    ``pool_instances``: slots of wasmtime's pooling allocator (0: allocate on
    demand). A reused instance holds a slot; past ``pool_instances - 8`` of them
    the oldest idle one is dropped to make room.
    """

    def __init__(
        self,
        *,
        epoch_tick_s: float = 0.005,
        max_module_bytes: int = 32 << 20,
        pool_instances: int = 128,
    ) -> None:
        if epoch_tick_s <= 0:
            raise ValueError("epoch_tick_s must be > 0")
        self._engine, self.pool_instances = capi.engine(pool_instances)
        self._engine_ptr = capi.addr(self._engine.ptr())
        self._linker = wasmtime.Linker(self._engine)
        self._cache: dict[str, Agent] = {}
        self._live: dict[Agent, None] = {}  # agents holding a reused instance, oldest first
        self.epoch_tick_s = epoch_tick_s
        self.max_module_bytes = max_module_bytes
        self.closed = False
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="wasm-epoch", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.epoch_tick_s):
            capi.increment_epoch(self._engine_ptr)

    def load(self, wasm: bytes) -> Agent:
        """Compile (once per sha256 digest) and ABI-check a binary module."""
        if self.closed:
            raise _err(E.INTERNAL, "runtime is closed")
        if not isinstance(wasm, bytes | bytearray | memoryview):
            raise _err(E.WASM_BAD_MODULE, f"module must be bytes, not {type(wasm).__name__}")
        wasm, cap = bytes(wasm), self.max_module_bytes
        if len(wasm) > cap:
            raise _err(E.WASM_BAD_MODULE, f"module of {len(wasm)} bytes is over the {cap}-byte cap")
        if wasm[:4] != b"\0asm":
            raise _err(E.WASM_BAD_MODULE, "not a wasm binary (no \\0asm magic; WAT is refused)")
        digest = "sha256:" + hashlib.sha256(wasm).hexdigest()
        if digest not in self._cache:
            self._cache[digest] = self._compile(wasm, digest)
        return self._cache[digest]

    def _compile(self, wasm: bytes, digest: str) -> Agent:
        def bad(message: str, **detail: Any) -> WasmEngineError:
            return _err(E.WASM_BAD_MODULE, message, digest=digest, **detail)

        try:
            module = wasmtime.Module(self._engine, wasm)
        except wasmtime.WasmtimeError as e:
            raise bad(f"invalid module: {e}") from None
        imports = [f"{i.module}.{i.name}" for i in module.imports]
        if imports:
            raise bad(f"unknown import(s) {', '.join(imports)}: none are provided", imports=imports)
        exports = {e.name: e.type for e in module.exports}
        for name, want in _ABI.items():
            ty = exports.get(name)
            fn = ty if isinstance(ty, wasmtime.FuncType) else None
            sig = fn and ([str(p) for p in fn.params], [str(r) for r in fn.results])
            if sig != want:
                raise bad(f"export {name!r} must be a function {want[0]} -> {want[1]}, not {sig}")
        mem = exports.get("memory")
        if not isinstance(mem, wasmtime.MemoryType) or mem.is_64 or mem.is_shared:
            raise bad("export 'memory' must be a 32-bit unshared memory")
        try:
            pre = self._linker.instantiate_pre(module)
        except wasmtime.WasmtimeError as e:
            raise bad(f"cannot link module: {e}") from None
        idx = tuple([e.name for e in module.exports].index(n) for n in capi.EXPORT_NAMES)
        return Agent(self, digest, (module, pre), idx, mem.limits.min * mem.page_size)

    def _admit(self, agent: Agent) -> None:
        if self.pool_instances and len(self._live) >= self.pool_instances - _POOL_SPARE:
            for victim in [a for a in list(self._live) if a is not agent]:
                if victim._lock.acquire(blocking=False):  # idle: drop its instance
                    victim._drop_reused()
                    victim._lock.release()
                    break
        self._live[agent] = None

    def close(self) -> None:
        """Stop the ticker; drop reused instances and the module cache."""
        if not self.closed:
            self.closed = True
            self._stop.set()
            self._ticker.join()
            for agent in self._cache.values():
                agent.reset()
            self._cache.clear()


class Agent:
    """A compiled, ABI-checked module; :meth:`call` runs it under :class:`Limits`."""

    def __init__(self, rt: WasmRuntime, digest: str, keep: Any, idx: Any, mem_min: int) -> None:
        self.digest = digest
        self._rt = rt
        self._keep = keep  # (Module, InstancePre): the C handles below live as long as these
        self._pre_ptr = capi.addr(keep[1].ptr())
        self._indices, self._checked = idx, False
        self._mem_min = mem_min
        self._lock = threading.Lock()
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

    def call(self, data: bytes, limits: Limits, *, reuse: bool = False) -> CallResult:
        """Run ``handle`` on ``data``; every failure is a :class:`WasmEngineError`."""
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
        s.store = capi.store_new(self._rt._engine_ptr, None, None)
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


_new_result, _ns = object.__new__, time.perf_counter_ns
