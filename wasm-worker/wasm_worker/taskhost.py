"""What the host calls of one task see: :class:`TaskHost`.

One per call of a :class:`~wasm_worker.hostagent.HostAgent`, registered under
its store's slot key while the call runs (see
:class:`~wasm_worker.hostcalls.HostCalls`). It owns the task's caps
(:class:`~wasm_worker.agent.Limits`) and the counters charged against them,
the keyed ``we.random`` stream, the emit sink, the child-request and tensor
links, the tensors the task published, and the error a failing host call
recorded. It is also the host calls' only way into guest memory:
:meth:`TaskHost.memory` checks ``[ptr, ptr + len)`` against the memory's
current size before any byte is touched, and :meth:`TaskHost.to_guest` writes a
reply through the guest's own ``alloc``.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
from typing import TYPE_CHECKING, Any

from wasm_engine import errors as E
from wasm_engine.tasks import Calls, Emit
from wasm_worker import capi
from wasm_worker.failures import failure

if TYPE_CHECKING:
    from wasm_engine.tensors import TensorPlane, TensorRef

    from .agent import Limits

log = logging.getLogger("wasm_worker.agent")


class TaskHost:
    """What the host calls of one task see: its caps, PRNG, emit sink and counters."""

    def __init__(
        self,
        slot: capi.Slot,
        digest: str,
        task_id: str,
        limits: Limits,
        emit: Emit | None,
        calls: Calls | None = None,
        tensors: TensorPlane | None = None,
    ) -> None:
        self.slot, self.digest, self.task_id, self.limits = slot, digest, task_id, limits
        self.sink, self.calls, self.tensors = emit, calls, tensors
        self.published: list[TensorRef] = []  # we.tensor_publish slots, the task's until it ends
        self.tensor_bytes = 0
        self.error: BaseException | None = None  # set by a failing call, read by the runtime
        self.log_bytes = self.log_dropped = self.events = self.emit_bytes = 0
        self.random_bytes = 0
        self._rng: Any = None  # the keyed BLAKE2b state, made on the first we.random
        self._rng_next, self._rng_left = 0, b""

    def memory(self, caller: int, ctx: int, ptr: int, n: int, call: str) -> int:
        """The host address of guest bytes ``[ptr, ptr + n)``, checked in bounds."""
        s = self.slot
        if s.base:  # the slot's memory export is bound (after instantiation)
            base, size = s.base, capi.memory_data_size(ctx, s.mem)
        else:  # a start function: ask the caller for its memory
            scratch = capi.Extern()
            ext = ctypes.addressof(scratch)
            found = capi.caller_export_get(caller, b"memory", 6, ext)
            if not found or ctypes.c_uint8.from_address(ext).value != capi.EXTERN_KIND_MEMORY:
                raise failure(E.WASM_TRAP, f"we.{call}: no memory export", trap="host_bad_pointer")
            mem = ext + capi.EXTERN_OF
            base, size = capi.memory_data(ctx, mem) or 0, capi.memory_data_size(ctx, mem)
        if ptr + n > size:
            msg = f"we.{call}: {ptr:#x}+{n} lies outside memory of {size} bytes"
            detail = {"call": f"we.{call}", "ptr": ptr, "len": n, "memory_bytes": size}
            raise failure(E.WASM_TRAP, msg, trap="host_bad_pointer", **detail)
        return int(base) + ptr

    def random(self, n: int) -> bytes:
        """The next ``n`` bytes of the task's stream: BLAKE2b-512 blocks keyed by
        the seed (8 bytes little-endian) over a block counter (8 bytes little-endian)."""
        left = self._rng_left
        if n > len(left):
            if self._rng is None:
                key = (self.limits.seed & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")
                self._rng = hashlib.blake2b(key=key)
            first, count = self._rng_next, (n - len(left) + 63) // 64
            blocks = []
            for i in range(first, first + count):
                h = self._rng.copy()
                h.update(i.to_bytes(8, "little"))
                blocks.append(h.digest())
            self._rng_next = first + count
            left += b"".join(blocks)
        self._rng_left = left[n:]
        return left[:n]

    def to_guest(self, caller: int, ctx: int, data: bytes, call: str) -> int:
        """Copy ``data`` into memory the guest's ``alloc`` gives; ``(ptr << 32) | len``."""
        s, n = self.slot, len(data)
        if not s.store or not s.base:
            raise failure(E.WASM_TRAP, f"we.{call}: called before the instance was ready")
        vals, trap = (capi.ValRaw * 1)(), ctypes.c_void_p()
        capi.i32_at(ctypes.addressof(vals)).value = n
        err = capi.func_call_unchecked(
            ctx, s.alloc_fn, ctypes.addressof(vals), 1, ctypes.addressof(trap)
        )
        if err or trap.value:
            if trap.value:
                capi.take_trap(trap.value)
            if err:
                capi.take_error(err)
            msg = f"we.{call}: the guest's alloc({n}) for the reply failed"
            raise failure(E.WASM_MEMORY_LIMIT, msg, call=f"we.{call}", size=n)
        ptr = capi.arg_u32(ctypes.addressof(vals), 0)
        at = self.memory(caller, ctx, ptr, n, call)
        ctypes.memmove(at, data, n)
        return (ptr << 32) | n

    def drop_published(self) -> None:
        """The task failed: give back the slots it published (nobody was told of them)."""
        if self.tensors is not None:
            for ref in self.published:
                self.tensors.release(ref)
        self.published.clear()

    def finish(self) -> None:
        if self.log_dropped:
            log.warning(
                "task %s: %d bytes of agent log dropped over the %d-byte cap",
                self.task_id,
                self.log_dropped,
                self.limits.log_bytes,
            )
