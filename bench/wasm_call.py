"""Micro-benchmark: per-call cost of the no-op agent through WasmRuntime.

Prints JSON {"fresh_us", "reuse_us", "ondemand_fresh_us", "ondemand_reuse_us",
"hostcalls_fresh_us", "hostcalls_reuse_us", "highlevel_fresh_us",
"highlevel_reuse_us", "pool_instances"}: medians over repeats of the mean
per-call time. ``ondemand_*`` is the same C-API path without wasmtime's pooling
allocator; ``hostcalls_*`` is ``agents/wat/hostcalls.wat`` (six host calls per
call: log, three emits, now, random of 16 bytes; pooled); ``highlevel_*`` is the
same ABI round as the no-op (instantiate, alloc, write input, handle, read
output, read fuel) through wasmtime-py's high-level API (on-demand memory), for
comparison inside one run.

    .venv/bin/python bench/wasm_call.py [--n 20000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import wasmtime

from wasm_engine.benchmark import report
from wasm_worker.runtime import Limits, WasmRuntime

ROOT = Path(__file__).resolve().parent.parent
DATA = b"\x82\xa4task\xa3noop\xa4args\x90"  # a small msgpack map


def _per_call_us(fn: Callable[[], object], n: int, repeats: int) -> float:
    for _ in range(min(n, 1000)):
        fn()  # warm up
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return round(statistics.median(runs), 2)


def _highlevel(wasm: bytes, limits: Limits) -> tuple[Callable[[], bytes], Callable[[], bytes]]:
    cfg = wasmtime.Config()
    cfg.consume_fuel = True
    cfg.epoch_interruption = True
    engine = wasmtime.Engine(cfg)
    pre = wasmtime.Linker(engine).instantiate_pre(wasmtime.Module(engine, wasm))

    def new() -> tuple[wasmtime.Store, wasmtime.Func, wasmtime.Func, wasmtime.Memory]:
        store = wasmtime.Store(engine)
        store.set_limits(memory_size=limits.memory_bytes)
        store.set_fuel(limits.fuel)
        store.set_epoch_deadline(1000)
        ex = pre.instantiate(store).exports(store)
        return store, ex["alloc"], ex["handle"], ex["memory"]  # type: ignore[return-value]

    def round_(
        store: wasmtime.Store, alloc: wasmtime.Func, handle: wasmtime.Func, mem: wasmtime.Memory
    ) -> bytes:
        store.set_fuel(limits.fuel)
        store.set_epoch_deadline(1000)
        ptr = alloc(store, len(DATA)) & 0xFFFFFFFF
        mem.write(store, DATA, ptr)
        packed = handle(store, ptr, len(DATA)) & 0xFFFFFFFFFFFFFFFF
        out = bytes(mem.read(store, packed >> 32, (packed >> 32) + (packed & 0xFFFFFFFF)))
        store.get_fuel()
        return out

    kept = new()
    return (lambda: round_(*new())), (lambda: round_(*kept))


def _wasm(name: str) -> bytes:
    return bytes(wasmtime.wat2wasm((ROOT / f"agents/wat/{name}.wat").read_text()))


def _discard(_: bytes) -> None:
    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    wasm = _wasm("noop")
    limits = Limits()
    result: dict[str, float | int] = {}
    for prefix, pool in [("", 128), ("ondemand_", 0)]:
        rt = WasmRuntime(pool_instances=pool)
        try:
            agent = rt.load(wasm)
            fresh = _per_call_us(partial(agent.call, DATA, limits), args.n, args.repeats)
            reuse = _per_call_us(
                partial(agent.call, DATA, limits, reuse=True), args.n, args.repeats
            )
            result |= {f"{prefix}fresh_us": fresh, f"{prefix}reuse_us": reuse}
            result.setdefault("pool_instances", rt.pool_instances)
            if pool:
                host = rt.load(_wasm("hostcalls"))
                for mode, reuse_ in (("fresh", False), ("reuse", True)):
                    call = partial(host.call, DATA, limits, reuse=reuse_, emit=_discard)
                    result[f"hostcalls_{mode}_us"] = _per_call_us(call, args.n, args.repeats)
        finally:
            rt.close()
    hl_fresh, hl_reuse = _highlevel(wasm, limits)
    result["highlevel_fresh_us"] = _per_call_us(hl_fresh, args.n // 4, args.repeats)
    result["highlevel_reuse_us"] = _per_call_us(hl_reuse, args.n // 4, args.repeats)
    ratios = {
        "highlevel_vs_capi_fresh": round(result["highlevel_fresh_us"] / result["fresh_us"], 2),
        "highlevel_vs_capi_reuse": round(result["highlevel_reuse_us"] / result["reuse_us"], 2),
    }
    report("wasm-call", result, ratios)


if __name__ == "__main__":
    main()
