"""Thin ctypes bindings to wasmtime's C API for the per-call hot path.

The library is the one wasmtime-py already loaded (``wasmtime._ffi.dll``), so
handles made through wasmtime-py (engine, instance-pre) are valid here. Each
function is a *fresh* ctypes function object (``dll[name]``), never the cached
attribute wasmtime-py configured, so redeclaring argument types here cannot
break wasmtime-py. Every pointer is declared ``c_void_p`` and passed as a plain
``int`` address: that is the cheapest ctypes call there is.

ctypes releases the GIL around each call, so the epoch ticker thread keeps
running while guest code does.

A :class:`Slot` owns the store it holds (freed by ``drop``); traps and errors
are freed by ``take_trap`` / ``take_error``. Everything else is borrowed.
"""

from __future__ import annotations

import ctypes
import sys
from ctypes import c_bool, c_int64, c_size_t, c_uint8, c_uint64, c_void_p
from typing import Any

import wasmtime
from wasmtime import _ffi

_dll = _ffi.dll

#: ``wasmtime_extern_t``: kind byte, then a union; func and memory handles are
#: 16 bytes each (store id + private index), read in place at ``EXTERN_OF``.
Extern = _ffi.wasmtime_extern_t
EXTERN_OF: int = _ffi.wasmtime_extern_t.of.offset
EXTERN_KIND_FUNC: int = 0
EXTERN_KIND_MEMORY: int = 3

#: ``wasmtime_instance_t``: store id + private index, filled by instantiate.
Instance = _ffi.wasmtime_instance_t

#: ``wasmtime_val_raw_t``: 16-byte untyped slot for ``wasmtime_func_call_unchecked``.
ValRaw = _ffi.wasmtime_val_raw_t

# A host callback's arguments and results are consecutive ValRaw slots at ``args``:
# read argument ``i`` with :func:`arg_u32` (or ``i64_at(args + i * RAW_SIZE)``), write
# the result with ``i32_at(args).value = …`` / ``i64_at(args).value = …``.
RAW_SIZE = ctypes.sizeof(ValRaw)
i32_at = ctypes.c_int32.from_address
i64_at = ctypes.c_int64.from_address


def arg_u32(args: int, i: int) -> int:
    """Argument ``i`` of a host call as an unsigned 32-bit int (a guest pointer or length)."""
    return int(i32_at(args + i * RAW_SIZE).value) & 0xFFFFFFFF


#: Trap codes of interest (``wasmtime_trap_code_t``).
TRAP_STACK_OVERFLOW: int = 0
TRAP_INTERRUPT: int = 10
TRAP_OUT_OF_FUEL: int = 11


class ByteVec(ctypes.Structure):
    """``wasm_byte_vec_t`` (also ``wasm_message_t`` and ``wasm_name_t``)."""

    _fields_ = [("size", c_size_t), ("data", c_void_p)]
    size: int
    data: int | None


def _fn(name: str, restype: Any, *argtypes: Any) -> Any:
    f = _dll[name]
    f.restype = restype
    f.argtypes = list(argtypes)
    return f


_P = c_void_p
store_new = _fn("wasmtime_store_new", _P, _P, _P, _P)
store_context = _fn("wasmtime_store_context", _P, _P)
store_limiter = _fn("wasmtime_store_limiter", None, _P, c_int64, c_int64, c_int64, c_int64, c_int64)
store_delete = _fn("wasmtime_store_delete", None, _P)
set_fuel = _fn("wasmtime_context_set_fuel", _P, _P, c_uint64)
get_fuel = _fn("wasmtime_context_get_fuel", _P, _P, _P)
set_epoch_deadline = _fn("wasmtime_context_set_epoch_deadline", None, _P, c_uint64)
increment_epoch = _fn("wasmtime_engine_increment_epoch", None, _P)
instance_pre_instantiate = _fn("wasmtime_instance_pre_instantiate", _P, _P, _P, _P, _P)
instance_export_nth = _fn("wasmtime_instance_export_nth", c_bool, _P, _P, c_size_t, _P, _P, _P)
func_call_unchecked = _fn("wasmtime_func_call_unchecked", _P, _P, _P, _P, c_size_t, _P)
memory_data = _fn("wasmtime_memory_data", _P, _P, _P)
memory_data_size = _fn("wasmtime_memory_data_size", c_size_t, _P, _P)
trap_code = _fn("wasmtime_trap_code", c_bool, _P, _P)
trap_message = _fn("wasm_trap_message", None, _P, _P)
trap_delete = _fn("wasm_trap_delete", None, _P)
error_message = _fn("wasmtime_error_message", None, _P, _P)
error_delete = _fn("wasmtime_error_delete", None, _P)
byte_vec_delete = _fn("wasm_byte_vec_delete", None, _P)
# host functions (module ``we``): defined once on the runtime's linker
linker_define_func_unchecked = _fn(
    "wasmtime_linker_define_func_unchecked", _P, _P, _P, c_size_t, _P, c_size_t, _P, _P, _P, _P
)
caller_context = _fn("wasmtime_caller_context", _P, _P)
caller_export_get = _fn("wasmtime_caller_export_get", c_bool, _P, _P, c_size_t, _P)
context_get_data = _fn("wasmtime_context_get_data", _P, _P)
trap_new = _fn("wasmtime_trap_new", _P, _P, c_size_t)

#: ``wasmtime_func_unchecked_callback_t``: (env, caller, args_and_results, n) ->
#: a ``wasm_trap_t *`` (0: returned normally). Params are read from, and results
#: written to, the same ``ValRaw`` slots.
UncheckedCallback = ctypes.CFUNCTYPE(c_size_t, c_void_p, c_void_p, c_void_p, c_size_t)


#: Per-table element cap (pool slots and StoreLimits); a funcref slot is 8 bytes.
TABLE_ELEMENTS = 1 << 20
#: Bytes of each pooled memory and table reset by memset rather than madvise.
KEEP_RESIDENT = 128 << 10


#: The Config settings of :func:`engine` (part of the compiled-module cache key).
ENGINE_FLAGS = ("fuel", "epoch", "fixed-memory", "no-multi-memory/memory64/threads/gc")


def engine(pool_instances: int) -> tuple[Any, int]:
    """The runtime's wasmtime-py ``Engine`` (fuel, epochs, fixed memory bases) and
    its pool size: 0 when the pool cannot be reserved and memory is on demand.

    ``pool_instances`` > 0 selects the pooling instance allocator: that many slots,
    each with one linear memory of up to 4 GiB (address space only: a 32-bit
    memory reserves 4 GiB anyway) and one table; ``KEEP_RESIDENT`` bytes of each
    are reset with memset rather than handed back to the kernel, so the next
    instance does not page-fault on them.
    """
    cfg = wasmtime.Config()
    cfg.consume_fuel = True
    cfg.epoch_interruption = True
    cfg.memory_may_move = False  # a memory's base address is fixed for its store's life
    # StoreLimits caps each memory: allow one 32-bit unshared memory, no GC heap.
    cfg.wasm_multi_memory = cfg.wasm_memory64 = cfg.wasm_threads = cfg.wasm_gc = False
    # wasmtime aborts the process (no error) when it cannot map the pool: probe first.
    if pool_instances and not _can_reserve(pool_instances * ((4 << 30) + (128 << 20))):
        pool_instances = 0
    if pool_instances:
        f, n = _ffi, pool_instances
        pc = f.wasmtime_pooling_allocation_config_new()
        try:
            f.wasmtime_pooling_allocation_config_total_core_instances_set(pc, n)
            f.wasmtime_pooling_allocation_config_total_memories_set(pc, n)
            f.wasmtime_pooling_allocation_config_total_tables_set(pc, n)
            f.wasmtime_pooling_allocation_config_max_memory_size_set(pc, 4 << 30)
            f.wasmtime_pooling_allocation_config_table_elements_set(pc, TABLE_ELEMENTS)
            f.wasmtime_pooling_allocation_config_linear_memory_keep_resident_set(pc, KEEP_RESIDENT)
            f.wasmtime_pooling_allocation_config_table_keep_resident_set(pc, KEEP_RESIDENT)
            f.wasmtime_pooling_allocation_strategy_set(cfg.ptr(), pc)
        finally:
            f.wasmtime_pooling_allocation_config_delete(pc)
    return wasmtime.Engine(cfg), pool_instances


def _can_reserve(nbytes: int) -> bool:
    """Whether ``nbytes`` of address space can be reserved now (Linux only)."""
    if sys.platform != "linux":
        return False
    libc = ctypes.CDLL(None)
    mmap, munmap = libc.mmap, libc.munmap
    mmap.restype, munmap.restype = c_void_p, ctypes.c_int
    mmap.argtypes = [c_void_p, c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    munmap.argtypes = [c_void_p, c_size_t]
    # PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE: address space only
    ptr = mmap(None, nbytes, 0, 0x02 | 0x20 | 0x4000, -1, 0)
    if ptr is None or ptr == 2**64 - 1:  # MAP_FAILED
        return False
    munmap(ptr, nbytes)
    return True


#: The ABI exports, in the order ``Slot.ext`` holds them, with their extern kinds.
_EXPORTS = (
    (b"alloc", EXTERN_KIND_FUNC),
    (b"handle", EXTERN_KIND_FUNC),
    (b"memory", EXTERN_KIND_MEMORY),
)
EXPORT_NAMES = tuple(n.decode() for n, _ in _EXPORTS)


class Slot:
    """Scratch for one live store: its handles, export cells, trap and value slots.

    Addresses are computed once, so the hot path passes plain ints. ``ext`` holds
    the ``alloc``, ``handle`` and ``memory`` exports of the current instance;
    using one after its store is deleted aborts the process (wasmtime panics on
    a store mismatch), so :meth:`drop` clears ``store`` and callers check it.
    """

    def __init__(self) -> None:
        self.store = self.ctx = self.base = self.size = 0  # size: a lower bound (never shrinks)
        self.key = id(self)  # the store's data: host calls find their task by it
        self.mem_cap = -1
        self.inst = Instance()
        self.ext = (Extern * 3)()
        self.trap = c_void_p()
        self.vals = (ValRaw * 2)()
        self.fuel = c_uint64()
        self.fuel_addr = ctypes.addressof(self.fuel)
        self.name_ptr, self.name_len = c_void_p(), c_size_t()
        self.np_addr, self.nl_addr = (
            ctypes.addressof(self.name_ptr),
            ctypes.addressof(self.name_len),
        )
        first, size = ctypes.addressof(self.ext), ctypes.sizeof(Extern)
        self.ext_addrs = [first + i * size for i in range(3)]
        self.alloc_fn, self.handle_fn, self.mem = (a + EXTERN_OF for a in self.ext_addrs)
        self.inst_addr = ctypes.addressof(self.inst)
        self.trap_addr = ctypes.addressof(self.trap)
        self.vals_addr = ctypes.addressof(self.vals)
        self.v0_i32 = ctypes.c_int32.from_address(self.vals_addr)
        self.v1_i32 = ctypes.c_int32.from_address(self.vals_addr + ctypes.sizeof(ValRaw))
        self.v0_i64 = ctypes.c_int64.from_address(self.vals_addr)

    def bind_exports(self, indices: tuple[int, ...], check: bool) -> bool:
        """Fetch the ABI exports of a just-made instance by export index (cheaper
        than by name) and cache the memory base. ``check`` also verifies names
        and kinds: a module's export order is fixed, so checking once is enough.
        """
        ctx, inst, name_ptr, name_len = self.ctx, self.inst_addr, self.np_addr, self.nl_addr
        for k, (i, (want, kind)) in enumerate(zip(indices, _EXPORTS, strict=True)):
            if not instance_export_nth(ctx, inst, i, name_ptr, name_len, self.ext_addrs[k]):
                return False
            if check and (
                ctypes.string_at(self.name_ptr.value or 0, self.name_len.value) != want
                or c_uint8.from_address(self.ext_addrs[k]).value != kind
            ):
                return False
        self.base = memory_data(ctx, self.mem) or 0
        return True

    def drop(self) -> None:
        """Delete the store (and so its instance), if any."""
        if self.store:
            store_delete(self.store)
            self.store = self.ctx = self.base = self.size = 0
            self.mem_cap = -1


def addr(obj: Any) -> int:
    """The integer address of a ctypes pointer (or ``None`` -> 0)."""
    return ctypes.cast(obj, c_void_p).value or 0


def _take_vec(vec: ByteVec) -> str:
    text = ctypes.string_at(vec.data, vec.size).decode("utf-8", "replace") if vec.data else ""
    byte_vec_delete(ctypes.addressof(vec))
    return text


def take_trap(trap: int) -> tuple[int, str]:
    """Read a trap's code (-1 if it has none) and cause, then free it.

    The message is a backtrace that ends with the cause; only that line is kept.
    """
    code = c_uint8(0)
    has_code = trap_code(trap, ctypes.addressof(code))
    vec = ByteVec()
    trap_message(trap, ctypes.addressof(vec))
    trap_delete(trap)
    lines = [ln.strip() for ln in _take_vec(vec).rstrip("\0").splitlines() if ln.strip()]
    return (code.value if has_code else -1), (lines[-1] if lines else "")


def take_error(err: int) -> str:
    """Read a ``wasmtime_error_t``'s message, then free it."""
    vec = ByteVec()
    error_message(err, ctypes.addressof(vec))
    error_delete(err)
    return _take_vec(vec)


def trap_kind(code: int) -> str:
    """A stable lower-case name for a trap code, e.g. ``unreachable_code_reached``."""
    return _TRAP_NAMES.get(code, f"code_{code}") if code >= 0 else "unknown"


_TRAP_NAMES: dict[int, str] = {
    m.value: m.name.removeprefix("WASMTIME_TRAP_CODE_").removeprefix("WASMTIME_TRAP_").lower()
    for m in _ffi.wasmtime_trap_code_enum
}
