"""The host calls of agent ABI v1, module ``we``: ``log``, ``emit``, ``now``, ``random``,
the child requests ``spawn``, ``send``, ``generate``, ``infer`` + ``wait`` (defined in
:mod:`.childcalls`) and the tensor calls ``tensor_read`` / ``tensor_publish`` (in
:mod:`.tensorcalls`).

They are defined once on the runtime's linker through wasmtime's C API
(``wasmtime_linker_define_func_unchecked`` with ctypes callbacks); a module that
imports none of them never reaches this code. A callback finds its task through
the data of the store it runs in (the :class:`~wasm_worker.capi.Slot` key, see
:class:`HostCalls`), never through a process-wide global, so an error is charged
to the store that raised it. A failing host call records a
:class:`WasmEngineError` on its :class:`~wasm_worker.taskhost.TaskHost` (the
task's state) and returns a trap; the runtime reports that error once the call
unwinds.

Guest pointers and lengths are masked ``& 0xFFFFFFFF`` and checked against the
memory's current size, in Python ints, before any byte is touched
(``TaskHost.memory``). Fuel does
not meter host work, so each call is bounded by a per-task cap instead:
log bytes, emitted events and bytes, random bytes, child requests, published
tensor bytes.

A child request (:mod:`wasm_engine.children`) reads one msgpack map from guest
memory and returns a handle at once; ``we.wait(handle)`` blocks until that child
answered, then writes the reply map into guest memory through the guest's own
``alloc`` (called re-entrantly: it only bumps while ``handle`` runs) and returns
``(ptr << 32) | len`` like ``handle`` does. An agent that imports any of these
runs on a task thread, never on the worker's I/O thread.
"""

from __future__ import annotations

import ctypes
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
import wasmtime

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_worker import capi, childcalls, tensorcalls
from wasm_worker.failures import failure

if TYPE_CHECKING:
    from .taskhost import TaskHost

log = logging.getLogger("wasm_worker.agent")

#: name -> (params, results) of the host calls provided
SIGNATURES: dict[str, tuple[list[str], list[str]]] = {
    "log": (["i32", "i32"], []),
    "emit": (["i32", "i32"], ["i32"]),
    "now": ([], ["i64"]),
    "random": (["i32", "i32"], []),
    **childcalls.SIGNATURES,
    **tensorcalls.SIGNATURES,
}
BLOCKING = childcalls.BLOCKING  # calls that may block the calling task (see childcalls)
EMIT_COUNT_SPENT, EMIT_BYTES_SPENT = -1, -2  # we.emit's answers once a budget is spent

_MASK32 = 0xFFFFFFFF
_i32, _i64, _RAW = capi.i32_at, capi.i64_at, capi.RAW_SIZE  # bound here: the hot path
_VAL = {"i32": wasmtime.ValType.i32, "i64": wasmtime.ValType.i64}


def check_imports(module: wasmtime.Module, digest: str) -> set[str]:
    """Refuse a module importing anything but the host calls; the names it imports."""
    names = [(i.module, i.name or "", i.type) for i in module.imports]
    unknown = [f"{m}.{n}" for m, n, _ in names if m != "we" or n not in SIGNATURES]
    if unknown:
        msg = f"unknown import(s) {', '.join(unknown)}: only we.{', we.'.join(SIGNATURES)} exist"
        raise failure(E.WASM_BAD_MODULE, msg, digest=digest, imports=unknown)
    for _, name, ty in names:
        want = SIGNATURES[name]
        sig = _sig(ty) if isinstance(ty, wasmtime.FuncType) else None
        if sig != want:
            msg = f"import we.{name} must be a function {want[0]} -> {want[1]}, not {sig or ty}"
            raise failure(E.WASM_BAD_MODULE, msg, digest=digest, imports=[f"we.{name}"])
    return {name for _, name, _ in names}


def _sig(fn: wasmtime.FuncType) -> tuple[list[str], list[str]]:
    return [str(p) for p in fn.params], [str(r) for r in fn.results]


def _args(args: int) -> tuple[int, int]:
    """Arguments 0 and 1 as unsigned ints (:func:`capi.arg_u32`, inlined: every call reads them)."""
    return _i32(args).value & _MASK32, _i32(args + _RAW).value & _MASK32


def _log(t: TaskHost, caller: int, ctx: int, args: int) -> None:
    ptr, n = _args(args)
    at = t.memory(caller, ctx, ptr, n, "log")
    if t.log_bytes + n > t.limits.log_bytes:
        t.log_dropped += n
        return
    t.log_bytes += n
    line = ctypes.string_at(at, n).decode("utf-8", "replace").rstrip("\n")
    log.info("task %s agent %s: %s", t.task_id, t.digest[7:19], line)


def _emit(t: TaskHost, caller: int, ctx: int, args: int) -> None:
    ptr, n = _args(args)
    at = t.memory(caller, ctx, ptr, n, "emit")
    lim = t.limits
    if t.events >= lim.emit_events:
        _i32(args).value = EMIT_COUNT_SPENT
        return
    if t.emit_bytes + n > lim.emit_bytes:
        _i32(args).value = EMIT_BYTES_SPENT
        return
    data = ctypes.string_at(at, n)
    try:
        msgpack.unpackb(data, max_ext_len=0, strict_map_key=False)
    except Exception as exc:
        msg = f"we.emit: {n} bytes that are not one msgpack value ({type(exc).__name__})"
        raise failure(E.WASM_BAD_OUTPUT, msg, call="we.emit", size=n) from None
    t.events += 1
    t.emit_bytes += n
    if t.sink is not None:
        t.sink(data)
    _i32(args).value = 0


def _now(t: TaskHost, caller: int, ctx: int, args: int) -> None:
    _i64(args).value = time.time_ns()


def _random(t: TaskHost, caller: int, ctx: int, args: int) -> None:
    ptr, n = _args(args)
    at = t.memory(caller, ctx, ptr, n, "random")
    cap = t.limits.random_bytes
    if t.random_bytes + n > cap:
        msg = f"we.random: {t.random_bytes + n} bytes asked, over the task's {cap}-byte cap"
        raise failure(E.WASM_TRAP, msg, trap="host_limit", call="we.random", limit=cap)
    t.random_bytes += n
    ctypes.memmove(at, t.random(n), n)


_CALLS = {
    "log": _log,
    "emit": _emit,
    "now": _now,
    "random": _random,
    **childcalls.CALLS,
    **tensorcalls.CALLS,
}


class HostCalls:
    """The ``we`` functions of one runtime's linker and the tasks now calling them.

    ``tasks`` maps a store's data (its slot's key) to the :class:`TaskHost` of the
    call running in it; the runtime registers a task around each call of an agent
    that imports host calls.
    """

    def __init__(self, linker_ptr: int) -> None:
        self.tasks: dict[int, TaskHost] = {}
        self._keep: list[Any] = []  # function types and callbacks live as long as the linker
        for name, (params, results) in SIGNATURES.items():
            ty = wasmtime.FuncType([_VAL[p]() for p in params], [_VAL[r]() for r in results])
            cb = capi.UncheckedCallback(self._callback(name, _CALLS[name]))
            err = capi.linker_define_func_unchecked(
                linker_ptr, b"we", 2, name.encode(), len(name), capi.addr(ty.ptr()), cb, None, None
            )
            if err:
                raise RuntimeError(f"defining we.{name}: {capi.take_error(err)}")
            self._keep += [ty, cb]

    def _callback(
        self, name: str, fn: Callable[[TaskHost, int, int, int], None]
    ) -> Callable[[int | None, int, int, int], int]:
        tasks = self.tasks

        def callback(_env: int | None, caller: int, args: int, _n: int) -> int:
            task = None
            try:
                ctx = capi.caller_context(caller)
                task = tasks[capi.context_get_data(ctx)]
                fn(task, caller, ctx, args)
                return 0
            except BaseException as exc:  # never let an exception cross into wasmtime
                return _trap(task, name, exc)

        return callback


def _trap(task: TaskHost | None, name: str, exc: BaseException) -> int:
    """Record why a host call failed on its task; a trap that unwinds the guest."""
    if not isinstance(exc, WasmEngineError):
        if task is None:
            log.error("we.%s called outside of a task: %r", name, exc)
        else:
            log.exception("we.%s failed in task %s", name, task.task_id, exc_info=exc)
    if task is not None and task.error is None:
        task.error = exc
    msg = f"we.{name}: {exc}".encode()
    return capi.addr(capi.trap_new(msg, len(msg)))
