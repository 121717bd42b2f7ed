"""Bench: what the stack costs a WASM agent task, and how the pool scales. One run.

1. ``stack_cost_vs_bare``: the textstats C agent on 16 KB chunks of text.
   Bare: in one process, wasmtime-py's own API per task, as a program embedding
   wasmtime would do it: ``Module.deserialize`` of the precompiled module +
   ``Instance`` + ``alloc``/copy/``handle``/read the output + msgpack both ways.
   Stack: the same tasks through a real local stack (client -> orchestrator ->
   one wasm-worker process and back, ZeroMQ + msgpack), 64 in flight. Ratio =
   per-task time through the stack / per-task time bare (lower is better; the
   two alternate for ``--repeat`` rounds and the ratio is the median of the
   rounds' ratios).
2. ``scaling_2_workers``: a CPU-bound task (the spin agent, ~10 ms of guest code on
   a 9-byte input) through a stack with 1 vs 2 wasm-workers: throughput ratio; and
   ``scaling_concurrency_2``: one worker computing 2 tasks at once on threads
   (``--concurrency 2``) vs 1. The same for textstats on 1 MB of text
   (``scaling_2_workers_textstats_1mb``), where moving 1 MB through three
   processes per task also takes CPU from the 2 cores.
3. ``wasm_vs_python``: textstats in wasm (in-process, fresh instance) vs the same
   algorithm in Python (``re`` + ``Counter``): time ratio (higher: wasm faster).

    .venv/bin/wasm-engine bench wasm-overhead --json [--tasks 2000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import msgpack
import wasmtime
from textstats import corpus, python_idiomatic

from wasm_engine import Client
from wasm_engine.benchmark import report
from wasm_engine.local import LocalStack
from wasm_worker.runtime import Limits, WasmRuntime

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "agents" / "build" / "textstats.wasm"
FUEL = 50_000_000_000
SPIN_N = 12_000_000  # iterations of the spin agent: ~10 ms of guest code


class Bare:
    """wasmtime-py's high-level API, per task: deserialize, instantiate, call."""

    def __init__(self, wasm: bytes) -> None:
        config = wasmtime.Config()
        config.consume_fuel = True
        self.engine = wasmtime.Engine(config)
        self.blob = wasmtime.Module(self.engine, wasm).serialize()

    def run(self, data: bytes) -> Any:
        module = wasmtime.Module.deserialize(self.engine, self.blob)
        store = wasmtime.Store(self.engine)
        store.set_fuel(FUEL)
        inst = wasmtime.Instance(store, module, [])
        ex = inst.exports(store)
        memory, alloc, handle = ex["memory"], ex["alloc"], ex["handle"]
        raw = msgpack.packb(data)
        ptr = alloc(store, len(raw))
        memory.write(store, raw, ptr)
        packed = handle(store, ptr, len(raw))
        out_ptr, out_len = packed >> 32 & 0xFFFFFFFF, packed & 0xFFFFFFFF
        return msgpack.unpackb(memory.read(store, out_ptr, out_ptr + out_len))


def per_task_bare(bare: Bare, chunks: list[bytes]) -> float:
    t0 = time.perf_counter()
    for c in chunks:
        bare.run(c)
    return (time.perf_counter() - t0) / len(chunks)


def per_task_stack(client: Client, agent: Any, chunks: list[bytes], window: int) -> float:
    t0 = time.perf_counter()
    client.run_many(agent, chunks, window=window, fuel=FUEL)
    return (time.perf_counter() - t0) / len(chunks)


def stack_rates(
    workers: int, jobs: dict[str, tuple[bytes, Any]], tasks: int, repeat: int, concurrency: int = 1
) -> dict[str, float]:
    """Tasks/s of each job (agent module, input) through one stack, medians of rounds."""
    out: dict[str, list[float]] = {name: [] for name in jobs}
    with (
        LocalStack(workers, concurrency=concurrency) as stack,
        Client(stack.front, timeout=600) as client,
    ):
        agents = {name: client.put_agent(wasm, name=name) for name, (wasm, _) in jobs.items()}
        window = 4 * workers * concurrency
        for name, (_, data) in jobs.items():  # warm: modules compiled on every worker
            client.run_many(agents[name], [data] * window, window=window, fuel=FUEL)
        for _ in range(repeat):
            for name, (_, data) in jobs.items():
                t0 = time.perf_counter()
                client.run_many(agents[name], [data] * tasks, window=window, fuel=FUEL)
                out[name].append(tasks / (time.perf_counter() - t0))
    return {name: statistics.median(v) for name, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--tasks", type=int, default=2000, help="tasks per round, part 1")
    ap.add_argument("--chunk-kb", type=int, default=16)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--cpu-tasks", type=int, default=60, help="CPU-bound tasks per round, part 2")
    a = ap.parse_args()
    wasm = AGENT.read_bytes()
    text = corpus(a.tasks * a.chunk_kb * 1000 // 8 + 1_000_000)
    size = a.chunk_kb * 1000
    chunks = [text[i * size // 8 : i * size // 8 + size] for i in range(a.tasks)]
    big = text[:1_000_000]

    bare = Bare(wasm)
    want = [bare.run(c) for c in chunks[:20]]
    bare_s, stack_s, ratios = [], [], []
    with LocalStack(1) as stack, Client(stack.front, timeout=600) as client:
        agent = client.put_agent(wasm, name="textstats")
        got = [r.output for r in client.run_many(agent, chunks[:20], window=a.window, fuel=FUEL)]
        if got != want:
            raise SystemExit("wasm-overhead: the stack and bare wasmtime disagree")
        per_task_stack(client, agent, chunks[:200], a.window)  # warm
        for _ in range(a.repeat):
            bare_s.append(per_task_bare(bare, chunks))
            stack_s.append(per_task_stack(client, agent, chunks, a.window))
            ratios.append(stack_s[-1] / bare_s[-1])

    spin = bytes(wasmtime.wat2wasm((ROOT / "agents" / "wat" / "spin.wat").read_text()))
    jobs = {"spin": (spin, SPIN_N), "textstats": (wasm, big)}
    one = stack_rates(1, jobs, a.cpu_tasks, a.repeat)
    two = stack_rates(2, jobs, a.cpu_tasks, a.repeat)
    threads = stack_rates(1, jobs, a.cpu_tasks, a.repeat, concurrency=2)

    rt = WasmRuntime()
    try:
        loaded = rt.load(wasm)
        limits = Limits(fuel=FUEL, timeout_s=60.0, memory_bytes=256 << 20)
        packed = msgpack.packb(big)
        wasm_runs, py_runs = [], []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            out = msgpack.unpackb(loaded.call(packed, limits).output)
            wasm_runs.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            py = python_idiomatic(big)
            py_runs.append(time.perf_counter() - t0)
        if out != py:
            raise SystemExit("wasm-overhead: wasm and Python textstats disagree")
    finally:
        rt.close()

    figures = {
        "tasks": a.tasks,
        "chunk_bytes": size,
        "window": a.window,
        "repeat": a.repeat,
        "bare_us_per_task": round(statistics.median(bare_s) * 1e6, 1),
        "stack_us_per_task": round(statistics.median(stack_s) * 1e6, 1),
        "cpu_task": f"spin agent, {SPIN_N:,} iterations (pure guest compute, 9-byte input)",
        "cpu_1_worker_tasks_per_s": round(one["spin"], 2),
        "cpu_2_workers_tasks_per_s": round(two["spin"], 2),
        "cpu_1_worker_concurrency_2_tasks_per_s": round(threads["spin"], 2),
        "textstats_1mb_1_worker_tasks_per_s": round(one["textstats"], 2),
        "textstats_1mb_2_workers_tasks_per_s": round(two["textstats"], 2),
        "textstats_1mb_concurrency_2_tasks_per_s": round(threads["textstats"], 2),
        "wasm_1mb_ms": round(statistics.median(wasm_runs) * 1e3, 2),
        "python_1mb_ms": round(statistics.median(py_runs) * 1e3, 2),
    }
    result = {
        "stack_cost_vs_bare": round(statistics.median(ratios), 3),
        "scaling_2_workers": round(two["spin"] / one["spin"], 3),
        "scaling_concurrency_2": round(threads["spin"] / one["spin"], 3),
        "scaling_2_workers_textstats_1mb": round(two["textstats"] / one["textstats"], 3),
        "wasm_vs_python": round(statistics.median(py_runs) / statistics.median(wasm_runs), 2),
    }
    report("wasm-overhead", figures, result)


if __name__ == "__main__":
    main()
