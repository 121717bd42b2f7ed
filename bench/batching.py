"""batching: dynamic batching on the MLP tensor model, through the stack and in-process, one run.

64 concurrent batch-1 requests (the same inputs on every path), CPU, on an MLP
512-4096x3-64 (``--hidden``; with the demo's 512-1024 MLP a batch-64 run takes ~2 ms, less
than the stack's own cost for 64 messages, and the figure below says how much that is):
(a) in-process, one at a time: 64 runs of batch 1 through ``TensorModel.run``;
(b) in-process through the dynamic batcher (``DynamicBatcher`` + ``TensorModel.run_batch``);
(c) in-process, one direct batch-64 run (the ceiling);
(d) through the stack: a real orchestrator and inference-worker process (ZeroMQ + msgpack,
    the worker's engine thread + dynamic batcher), 64 ``Client`` submits in flight at once.
``--repeat`` alternating rounds, medians. Ratios (throughputs): ``batching_gain`` = (c) / (a),
``stack_vs_inprocess_batched`` = (d) / (c), ``batcher_vs_direct_batch`` = (b) / (c).

    .venv/bin/wasm-engine bench batching --json [--repeat 7]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from inference_worker.batcher import DynamicBatcher, Limits
from inference_worker.repository import ModelRepository, TensorModel
from inference_worker.tensor_models import build_mlp
from wasm_engine import Client
from wasm_engine.benchmark import report
from wasm_engine.inference import infer_input
from wasm_engine.local import LocalStack

N = 64


def one_at_a_time(model: TensorModel, xs: list[np.ndarray]) -> float:
    t0 = time.perf_counter()
    for x in xs:
        r = model.run({"x": x}, "cpu_ok")
        assert r.error is None
    return time.perf_counter() - t0


def batched(model: TensorModel, xs: list[np.ndarray]) -> float:
    cfg = model.config
    b = DynamicBatcher({cfg.name: Limits(cfg.max_batch, cfg.max_queue_delay_s)})
    t0 = time.perf_counter()
    for i, x in enumerate(xs):
        inputs = {"x": x}
        b.submit(cfg.name, str(i), inputs, cfg.check(inputs))
    done = 0
    while done < len(xs):
        for batch in b.due():
            results = model.run_batch([m.item for m in batch.members], "cpu_ok")
            done += sum(r.error is None for r in results)
    return time.perf_counter() - t0


def direct(model: TensorModel, xs: list[np.ndarray]) -> float:
    t0 = time.perf_counter()
    r = model.run({"x": np.concatenate(xs)}, "cpu_ok")
    assert r.error is None
    return time.perf_counter() - t0


def through_stack(client: Client, xs: list[np.ndarray]) -> float:
    frames = [
        client._book.model_frames(
            "infer", "mlp", infer_input({"x": x})[0], task_id=None, timeout=None
        )
        for x in xs
    ]
    t0 = time.perf_counter()
    futures = [client._request(rid, task_id, f) for task_id, rid, f in frames]
    client.wait(futures, 60)
    for f in futures:
        assert "probs" in f.result(0).output["outputs"]
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7, help="alternating rounds; medians count")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--delay-ms", type=float, default=5.0, help="the model's max queue delay")
    ap.add_argument(
        "--hidden", type=int, default=4096, help="MLP hidden width (1024: the demo's small MLP)"
    )
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        build_mlp(Path(tmp), max_batch=N, hidden=a.hidden, max_queue_delay_ms=a.delay_ms)
        repo = ModelRepository(Path(tmp), threads=a.threads)
        repo.load_all()
        model = repo.get("mlp")
        rng = np.random.default_rng(0)
        xs = [rng.standard_normal((1, 512)).astype(np.float32) for _ in range(N)]
        rounds: dict[str, list[float]] = {"single": [], "batcher": [], "direct": [], "stack": []}
        with (
            LocalStack(0, inference_workers=1, models=tmp, credits=N, device="cpu_ok") as stack,
            Client(stack.front, timeout=60) as client,
        ):
            through_stack(client, xs)  # warm: threads made, sessions at batch widths
            for _ in range(a.repeat):
                rounds["single"].append(N / one_at_a_time(model, xs))
                rounds["batcher"].append(N / batched(model, xs))
                rounds["direct"].append(N / direct(model, xs))
                rounds["stack"].append(N / through_stack(client, xs))
        device = model.status()["devices"]
    med = {k: statistics.median(v) for k, v in rounds.items()}
    figures = {
        "requests_per_s_one_at_a_time": round(med["single"], 1),
        "requests_per_s_dynamic_batching": round(med["batcher"], 1),
        "requests_per_s_direct_batch64": round(med["direct"], 1),
        "requests_per_s_through_stack": round(med["stack"], 1),
        "requests": N,
        "model": f"MLP 512-{a.hidden}x3-64 fp32 (onnx helper, seed 0)",
        "inprocess_batch64_ms": round(N / med["direct"] * 1e3, 2),
        "max_queue_delay_ms": a.delay_ms,
        "stack_overhead_us_per_request": round((1 / med["stack"] - 1 / med["direct"]) * 1e6, 1),
        "devices": device,
    }
    ratios = {
        "batching_gain": round(med["direct"] / med["single"], 2),
        "stack_vs_inprocess_batched": round(med["stack"] / med["direct"], 2),
        "batcher_vs_direct_batch": round(med["batcher"] / med["direct"], 2),
    }
    report("batching", figures, ratios)


if __name__ == "__main__":
    main()
