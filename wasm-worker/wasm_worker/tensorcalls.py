"""The tensor host calls of module ``we``: ``tensor_read`` and ``tensor_publish``.

Owns how an agent reaches the worker's :class:`~wasm_engine.tensors.TensorPlane`
(docs/agents.md, "Tensors", is the contract):

- ``we.tensor_read(ref_ptr, ref_len, offset: i64, dst_ptr, dst_len) -> i64``:
  the handle is the msgpack map of the wire form (``TensorRef.to_wire``), as an
  agent finds it in its input; ``dst_len`` bytes from byte ``offset`` of the
  tensor are copied straight from the shared-memory mapping into guest memory
  (one ``memmove``: the least wasm allows, its memory being private). Returns the
  tensor's ``nbytes`` (``dst_len = 0`` asks the size). The slot's generation is
  checked before and after the copy.
- ``we.tensor_publish(spec_ptr, spec_len, data_ptr, data_len) -> i64``: ``spec``
  is a msgpack map ``{dtype, shape}``; the ``data_len`` guest bytes are copied
  once into a slot of the worker's arena; the handle's wire map is written into
  guest memory through the guest's ``alloc`` and returned as ``(ptr << 32) | len``.
  The task's published bytes count against ``Limits.tensor_bytes``.

Every guest ``(ptr, len)`` goes through :meth:`TaskHost.memory` and every
handle through ``TensorRef.from_wire`` and the plane's checks before a byte is
copied; failures record the plane's typed error (``shm.*``) and trap. What a task
published is in :attr:`TaskHost.published`: the agent frees it when the task
fails, the handler lists it in the result when it succeeds (ownership:
docs/tensors.md).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_engine.tensors.ref import TensorRef, bad, dtype_of, nbytes_of
from wasm_worker import capi

if TYPE_CHECKING:
    from .taskhost import TaskHost

SIGNATURES: dict[str, tuple[list[str], list[str]]] = {
    "tensor_read": (["i32", "i32", "i64", "i32", "i32"], ["i64"]),
    "tensor_publish": (["i32", "i32", "i32", "i32"], ["i64"]),
}
MAX_REF_BYTES = 4096  # a handle's map is ~200 bytes; a spec's shape has <= 32 dims


def _map(t: TaskHost, caller: int, ctx: int, ptr: int, n: int, call: str) -> dict[str, Any]:
    """The msgpack map at guest ``[ptr, ptr + n)``, or ``shm.bad_handle``."""
    at = t.memory(caller, ctx, ptr, n, call)
    if n > MAX_REF_BYTES:
        raise bad(f"we.{call}: a {n}-byte map is over {MAX_REF_BYTES} bytes", call=f"we.{call}")
    try:
        value = msgpack.unpackb(ctypes.string_at(at, n), max_ext_len=0, raw=False)
    except Exception as exc:
        msg = f"we.{call}: not one msgpack map ({type(exc).__name__})"
        raise bad(msg, call=f"we.{call}") from None
    if not isinstance(value, dict):
        raise bad(f"we.{call}: expected a msgpack map, got {type(value).__name__}")
    return value


def _plane(t: TaskHost, call: str) -> Any:
    if t.tensors is None:
        msg = f"we.{call}: this worker has no tensor plane"
        raise WasmEngineError(E.WASM_CAPABILITY_DENIED, msg, detail={"call": f"we.{call}"})
    return t.tensors


def _tensor_read(t: TaskHost, caller: int, ctx: int, args: int) -> None:
    ref_ptr, ref_len = capi.arg_u32(args, 0), capi.arg_u32(args, 1)
    offset = capi.i64_at(args + 2 * capi.RAW_SIZE).value
    dst_ptr, n = capi.arg_u32(args, 3), capi.arg_u32(args, 4)
    plane = _plane(t, "tensor_read")
    dst = t.memory(caller, ctx, dst_ptr, n, "tensor_read")  # no guest code runs until we return
    ref = TensorRef.from_wire(_map(t, caller, ctx, ref_ptr, ref_len, "tensor_read"))
    if ref.loc != "shm":  # a task's dispatch carries no tensor blobs
        raise bad("we.tensor_read: only a shm handle can be read (inline data is in the input)")
    if offset < 0 or offset + n > ref.nbytes:
        raise bad(
            f"we.tensor_read: bytes [{offset}, {offset + n}) outside the tensor's {ref.nbytes}",
            field="range", offset=offset, len=n, nbytes=ref.nbytes,
        )  # fmt: skip
    view = plane.open(ref)  # namespace, bounds and generation checked; mapped once, kept
    if n:
        ctypes.memmove(dst, view.ctypes.data + offset, n)
    del view
    if not plane.current(ref):  # freed under us while copying: the bytes may be torn
        raise WasmEngineError(
            E.SHM_STALE_HANDLE,
            f"we.tensor_read: slot {ref.segment}@{ref.offset} was freed while being read",
            detail={"segment": ref.segment, "offset": ref.offset},
        )
    capi.i64_at(args).value = ref.nbytes


def _tensor_publish(t: TaskHost, caller: int, ctx: int, args: int) -> None:
    spec_ptr, spec_len = capi.arg_u32(args, 0), capi.arg_u32(args, 1)
    data_ptr, n = capi.arg_u32(args, 2), capi.arg_u32(args, 3)
    plane = _plane(t, "tensor_publish")
    spec = _map(t, caller, ctx, spec_ptr, spec_len, "tensor_publish")
    dtype, shape = spec.get("dtype"), spec.get("shape")
    if type(dtype) is not str or type(shape) is not list or len(shape) > 32:
        raise bad("we.tensor_publish: spec must be {dtype: str, shape: [int...]}", field="spec")
    src = t.memory(caller, ctx, data_ptr, n, "tensor_publish")
    cap = t.limits.tensor_bytes
    if t.tensor_bytes + n > cap:
        msg = f"we.tensor_publish: {t.tensor_bytes + n} bytes published, over the task's {cap}"
        detail = {"trap": "host_limit", "call": "we.tensor_publish", "limit": cap}
        raise WasmEngineError(E.WASM_TRAP, msg, detail=detail)
    if plane.arena is None:
        msg = "we.tensor_publish: this worker has no arena (WASM_ENGINE_SHM_ARENA is 0)"
        raise WasmEngineError(E.WASM_CAPABILITY_DENIED, msg, detail={"call": "we.tensor_publish"})
    if not all(type(d) is int and 0 <= d < 1 << 48 for d in shape):
        raise bad("we.tensor_publish: shape must be non-negative ints", field="shape")
    want = nbytes_of(tuple(shape), dtype_of(dtype))
    if want != n:
        msg = f"we.tensor_publish: {n} data bytes for a {dtype}{shape} tensor of {want} bytes"
        raise bad(msg, field="nbytes", len=n, nbytes=want)
    loan = plane.loan(shape, dtype, in_shm=True)  # shm.arena_full when no slot fits
    ref = loan.ref
    if ref is None:
        raise WasmEngineError(E.INTERNAL, "we.tensor_publish: the plane loaned no shm slot")
    t.published.append(ref)  # from here on the task owns it: freed if the task fails
    t.tensor_bytes += n
    if n:
        ctypes.memmove(loan.array.ctypes.data, src, n)
    del loan
    wire = msgpack.packb(ref.to_wire())
    capi.i64_at(args).value = t.to_guest(caller, ctx, wire, "tensor_publish")


CALLS: dict[str, Callable[[TaskHost, int, int, int], None]] = {
    "tensor_read": _tensor_read,
    "tensor_publish": _tensor_publish,
}
