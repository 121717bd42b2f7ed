"""infer-batching: dynamic batching vs one request at a time on the MLP tensor model, one run.

In-process (no sockets), CPU: 64 concurrent batch-1 requests (a) run one at a time, 64 runs of
batch 1 through ``TensorModel.run``; (b) through the dynamic batcher (``DynamicBatcher`` +
``TensorModel.run_batch``: validated one by one, stacked, one run, outputs split back);
(c) one direct batch-64 run (the in-process ceiling). ``--repeat`` alternating rounds, medians.
Ratios: ``batching_gain`` = (b) / (a) and ``batcher_vs_direct_batch`` = (b) / (c), throughputs.
The stack path (``stack_vs_inprocess_batched``) joins when the worker service wires this.
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
from wasm_engine.benchmark import report

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeat", type=int, default=7, help="alternating rounds; medians count")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        build_mlp(Path(tmp), max_batch=N)
        repo = ModelRepository(Path(tmp), threads=a.threads)
        repo.load_all()
        model = repo.get("mlp")
        rng = np.random.default_rng(0)
        xs = [rng.standard_normal((1, 512)).astype(np.float32) for _ in range(N)]
        rounds: dict[str, list[float]] = {"single": [], "batcher": [], "direct": []}
        for _ in range(a.repeat):
            rounds["single"].append(N / one_at_a_time(model, xs))
            rounds["batcher"].append(N / batched(model, xs))
            rounds["direct"].append(N / direct(model, xs))
        device = model.status()["devices"]
    med = {k: statistics.median(v) for k, v in rounds.items()}
    figures = {
        "requests_per_s_one_at_a_time": round(med["single"], 1),
        "requests_per_s_dynamic_batching": round(med["batcher"], 1),
        "requests_per_s_direct_batch64": round(med["direct"], 1),
        "requests": N,
        "model": "MLP 512-1024x3-64 fp32 (onnx helper, seed 0)",
        "devices": device,
    }
    ratios = {
        "batching_gain": round(med["batcher"] / med["single"], 2),
        "batcher_vs_direct_batch": round(med["batcher"] / med["direct"], 2),
    }
    report("infer-batching", figures, ratios)


if __name__ == "__main__":
    main()
