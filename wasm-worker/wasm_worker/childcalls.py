"""The child-request host calls of module ``we``: ``spawn``, ``send``, ``generate``,
``infer`` and ``wait`` (docs/agents.md, "Child requests", is the contract).

A request call reads one msgpack map from guest memory (bounds-checked, at most
``Limits.request_bytes``) and hands it to the task's
:class:`~wasm_engine.children.TaskCalls`, which sends it to the orchestrator and
returns a handle at once; ``we.wait(handle)`` blocks the task until that child
answered and writes the reply map into guest memory through the guest's own
``alloc`` (``TaskHost.to_guest``), returning ``(ptr << 32) | len``. An agent
that imports any of these runs on a task thread (:data:`BLOCKING`).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TYPE_CHECKING

import msgpack

from wasm_engine import errors as E
from wasm_worker import capi
from wasm_worker.failures import failure

if TYPE_CHECKING:
    from .taskhost import TaskHost

SIGNATURES: dict[str, tuple[list[str], list[str]]] = {
    "spawn": (["i32", "i32"], ["i32"]),
    "send": (["i32", "i32"], ["i32"]),
    "generate": (["i32", "i32"], ["i32"]),
    "infer": (["i32", "i32"], ["i32"]),
    "wait": (["i32"], ["i64"]),
}
#: host calls that may block the calling task (it then runs on a task thread)
BLOCKING = frozenset(SIGNATURES)


def _child(call: str) -> Callable[[TaskHost, int, int, int], None]:
    def submit(t: TaskHost, caller: int, ctx: int, args: int) -> None:
        ptr, n = capi.arg_u32(args, 0), capi.arg_u32(args, 1)
        at = t.memory(caller, ctx, ptr, n, call)
        if t.calls is None:
            msg = f"we.{call}: this worker runs no child requests (no orchestrator link)"
            raise failure(E.WASM_CAPABILITY_DENIED, msg, call=f"we.{call}")
        if n > t.limits.request_bytes:
            msg = f"we.{call}: a {n}-byte request is over the {t.limits.request_bytes}-byte cap"
            raise failure(E.WASM_TRAP, msg, trap="host_limit", call=f"we.{call}", size=n)
        try:
            request = msgpack.unpackb(ctypes.string_at(at, n), max_ext_len=0, raw=False)
        except Exception as exc:
            msg = f"we.{call}: {n} bytes that are not one msgpack value ({type(exc).__name__})"
            raise failure(E.WASM_TRAP, msg, trap="host_bad_request", call=f"we.{call}") from None
        capi.i32_at(args).value = t.calls.submit(call, request)

    return submit


def _wait(t: TaskHost, caller: int, ctx: int, args: int) -> None:
    if t.calls is None:
        raise failure(E.WASM_CAPABILITY_DENIED, "we.wait: no child requests here", call="we.wait")
    reply = t.calls.wait(capi.i32_at(args).value)
    capi.i64_at(args).value = t.to_guest(caller, ctx, reply, "wait")


CALLS: dict[str, Callable[[TaskHost, int, int, int], None]] = {
    "spawn": _child("spawn"),
    "send": _child("send"),
    "generate": _child("generate"),
    "infer": _child("infer"),
    "wait": _wait,
}
