"""Sandboxed agent calls in wasmtime: agent ABI v1 on a fast C-API path.

ABI v1: the guest exports ``memory`` (one 32-bit unshared memory),
``alloc(len: i32) -> i32`` (a pointer to ``len`` writable bytes) and
``handle(ptr: i32, len: i32) -> i64``, whose i64 packs the output as
``(out_ptr << 32) | out_len``: bits 63..32 the pointer, bits 31..0 the length,
both unsigned 32-bit (the host masks with ``& 0xFFFFFFFF``). Input and output
are opaque bytes. The only imports are the host calls of module ``we``
(:mod:`wasm_worker.hostcalls`); no WASI. A module importing any of them loads as
a :class:`HostAgent`, which sets the task's host context around each call; the
others take the unchanged fast path below. ``docs/agents.md`` is the contract.

Per call: arm fuel, epoch deadline and memory cap (before instantiating: a start
function is guest code), instantiate unless reusing, ``alloc(len(data))``, copy
the input in, ``handle``, check ``out_len <= max_output`` then ``out_ptr +
out_len <= memory size`` in Python ints, copy the output out, read fuel left.

Speed (``bench/wasm_call.py``, no-op agent, 2-core dev box, µs per call, one
run): fresh Store + instance 12.6 (pooling allocator; 33 with on-demand memory),
reused instance 4.7; wasmtime-py's high-level API in the same run: 105 fresh,
50 reused. ``hostcalls.wat`` (six host calls a call): 30.7 fresh, 21.7 reused,
about 3 µs a host call. Loading uses wasmtime-py; calls go through
:mod:`wasm_worker.capi` (instance-pre instantiate, unchecked calls on exports
whose types were checked at load, memmove/string_at at a fixed memory base).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import threading
from pathlib import Path
from typing import Any

import wasmtime

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_worker import capi
from wasm_worker.agent import Agent, CallResult, Limits
from wasm_worker.failures import failure
from wasm_worker.hostagent import HostAgent
from wasm_worker.hostcalls import BLOCKING, HostCalls, check_imports

__all__ = ["Agent", "CallResult", "HostAgent", "Limits", "WasmRuntime"]
log = logging.getLogger("wasm_worker.runtime")
_POOL_SPARE = 8  # pool slots kept free of reused instances, for fresh calls
_ABI = {"alloc": (["i32"], ["i32"]), "handle": (["i32", "i32"], ["i64"])}


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
        cache_dir: str | Path | None = None,
    ) -> None:
        if epoch_tick_s <= 0:
            raise ValueError("epoch_tick_s must be > 0")
        self._engine, self.pool_instances = capi.engine(pool_instances)
        self._engine_ptr = capi.addr(self._engine.ptr())
        self._linker = wasmtime.Linker(self._engine)
        self._hosts = HostCalls(capi.addr(self._linker.ptr()))
        self._cache: dict[str, Agent] = {}  # key (the agent digest, or the module's) -> agent
        self._compiled: dict[str, tuple[Any, ...]] = {}  # module digest -> Agent args
        self.disk = DiskCache(Path(cache_dir), self.pool_instances) if cache_dir else None
        self._live = 0  # stores alive (reused instances and calls running)
        self._live_lock = threading.RLock()  # an eviction releases under it
        self.epoch_tick_s = epoch_tick_s
        self.max_module_bytes = max_module_bytes
        self.closed = False
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="wasm-epoch", daemon=True)
        self._ticker.start()

    def _tick(self) -> None:
        while not self._stop.wait(self.epoch_tick_s):
            capi.increment_epoch(self._engine_ptr)

    def load(self, wasm: bytes, key: str | None = None) -> Agent:
        """Compile (once per sha256 digest) and ABI-check a binary module; one
        :class:`Agent` (its reused instance) per ``key``, the module digest by default."""
        if self.closed:
            raise failure(E.INTERNAL, "runtime is closed")
        if not isinstance(wasm, bytes | bytearray | memoryview):
            raise failure(E.WASM_BAD_MODULE, f"module must be bytes, not {type(wasm).__name__}")
        wasm, cap = bytes(wasm), self.max_module_bytes
        if len(wasm) > cap:
            raise failure(
                E.WASM_BAD_MODULE, f"module of {len(wasm)} bytes is over the {cap}-byte cap"
            )
        if wasm[:4] != b"\0asm":
            raise failure(E.WASM_BAD_MODULE, "not a wasm binary (no \\0asm magic; WAT is refused)")
        digest = "sha256:" + hashlib.sha256(wasm).hexdigest()
        key = key or digest
        found = self._cache.get(key)
        if found is None:
            args = self._compiled.get(digest)
            if args is None:
                args = self._compiled[digest] = self._compile(wasm, digest)
            kind, *rest = args
            found = self._cache[key] = kind(self, digest, *rest)
        return found

    def forget(self, key: str) -> None:
        """Drop the agent loaded under ``key``: its idle instances now, its compiled
        module once no other key uses it (a running call keeps what it holds)."""
        agent = self._cache.pop(key, None)
        if agent is None:
            return
        agent.retire()
        if all(other.digest != agent.digest for other in self._cache.values()):
            self._compiled.pop(agent.digest, None)

    def _module(self, wasm: bytes, digest: str) -> wasmtime.Module:
        if self.disk is not None:
            cached = self.disk.load(self._engine, digest)
            if cached is not None:
                return cached
        module = wasmtime.Module(self._engine, wasm)
        if self.disk is not None:
            self.disk.store(digest, module)
        return module

    def _compile(self, wasm: bytes, digest: str) -> tuple[Any, ...]:
        def bad(message: str, **detail: Any) -> WasmEngineError:
            return failure(E.WASM_BAD_MODULE, message, digest=digest, **detail)

        try:
            module = self._module(wasm, digest)
        except wasmtime.WasmtimeError as e:
            raise bad(f"invalid module: {e}") from None
        imports = check_imports(module, digest)
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
        kind = HostAgent if imports else Agent
        return kind, (module, pre), idx, mem.limits.min * mem.page_size, bool(imports & BLOCKING)

    def _admit(self, agent: Agent) -> None:
        """A reused instance is about to be made: past the cap, drop the oldest idle one."""
        with self._live_lock:
            if self.pool_instances and self._live >= self.pool_instances - _POOL_SPARE:
                for victim in list(self._cache.values()):
                    if victim.drop_idle():
                        break
            self._live += 1

    def _release(self, agent: Agent) -> None:
        with self._live_lock:
            self._live -= 1

    def close(self) -> None:
        """Stop the ticker; drop reused instances and the module cache."""
        if not self.closed:
            self.closed = True
            self._stop.set()
            self._ticker.join()
            for agent in self._cache.values():
                agent.reset()
            self._cache.clear()
            self._compiled.clear()


class DiskCache:
    """Compiled modules (``Module.serialize()``) on disk, one file per module digest,
    wasmtime version and engine configuration, all three in the file name. A file
    starts with the sha256 of the rest: only a file this cache wrote whole is ever
    deserialized (deserializing runs native code unchecked); a torn, corrupt or
    refused file is removed and the module compiled again. Writes are atomic
    (temp file + rename), so workers sharing the folder never see half a file.
    """

    MAGIC = b"we-cwasm1\n"

    def __init__(self, root: Path, pool_instances: int) -> None:
        self.root = root
        version = importlib.metadata.version("wasmtime")
        flags = (capi.TABLE_ELEMENTS, capi.KEEP_RESIDENT, pool_instances, *capi.ENGINE_FLAGS)
        config = repr((version, platform.machine(), *flags))
        self.suffix = f"-wt{version}-{hashlib.sha256(config.encode()).hexdigest()[:16]}.cwasm"
        self.hits = self.misses = 0

    def path(self, digest: str) -> Path:
        return self.root / (digest.removeprefix("sha256:") + self.suffix)

    def load(self, engine: wasmtime.Engine, digest: str) -> wasmtime.Module | None:
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except OSError:
            self.misses += 1
            return None
        head, body = data[: len(self.MAGIC) + 32], data[len(self.MAGIC) + 32 :]
        try:
            if head != self.MAGIC + hashlib.sha256(body).digest():
                raise ValueError("checksum mismatch")
            module = wasmtime.Module.deserialize(engine, body)
        except (ValueError, wasmtime.WasmtimeError) as exc:
            log.warning("compiled-module cache: dropping %s (%s)", path.name, exc)
            path.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return module

    def store(self, digest: str, module: wasmtime.Module) -> None:
        path = self.path(digest)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            body = bytes(module.serialize())
            tmp.write_bytes(self.MAGIC + hashlib.sha256(body).digest() + body)
            os.replace(tmp, path)
        except (OSError, wasmtime.WasmtimeError) as exc:  # a cache: never fail the task
            log.warning("compiled-module cache: cannot write %s (%s)", path, exc)
            tmp.unlink(missing_ok=True)
