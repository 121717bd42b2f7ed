"""llm-decode: the LLM engine's decode throughput, 1 stream vs 8 concurrent streams, one run.

In-process, CPU (or whatever ``--device`` gets): the same 8 prompts, greedy, ``--max-tokens``
each, (a) one after another through ``LLMEngine.generate`` (batch 1) and (b) all 8 added at once
to the same engine and stepped together (continuous batched decode). Greedy batched output is
token-for-token the batch-1 output, so both runs produce the same tokens; the bench checks that.
Figures: aggregate tokens/s (prefill included), time to first token; ``--repeat`` alternating
rounds, medians. Ratio ``concurrent_gain`` = batch-8 tokens/s / batch-1 tokens/s.

Through the stack (a real orchestrator + inference-worker process, tokens streamed back as
events to a ``Client``): the same 8 prompts one stream at a time, and all 8 at once.
``stack_vs_inprocess`` = one stream's tokens/s through the stack / in-process batch 1;
``stack_concurrent_gain`` = 8 streams / 1 stream, both through the stack. The in-process
engine is idle while the stack runs, and the other way round.

    .venv/bin/wasm-engine bench llm-decode --json [--max-tokens 64] [--repeat 3]
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from typing import Any

from inference_worker.build import build_model
from inference_worker.device import default_threads
from inference_worker.llm import GenerateParams, LLMEngine
from wasm_engine import Client
from wasm_engine.benchmark import report
from wasm_engine.local import LocalStack

PROMPTS = [
    "Write a short story about a lighthouse keeper.",
    "Explain how rainbows form.",
    "Describe a walk through a forest in autumn.",
    "Write a letter to a friend about your holidays.",
    "Explain why the sea is salty.",
    "Describe how bread is made.",
    "Write a poem about the moon.",
    "Explain what a computer does.",
]


def run_single(engine: LLMEngine, params: GenerateParams) -> tuple[float, list[list[int]]]:
    t0 = time.perf_counter()
    outs = [engine.generate(p, params).tokens for p in PROMPTS]
    return time.perf_counter() - t0, outs


def run_batched(engine: LLMEngine, params: GenerateParams) -> tuple[float, list[list[int]], float]:
    t0 = time.perf_counter()
    for i, p in enumerate(PROMPTS):
        engine.add(str(i), p, params)
    toks: dict[str, list[int]] = {str(i): [] for i in range(len(PROMPTS))}
    first: dict[str, float] = {}
    while engine.busy:
        for ev in engine.step():
            toks[ev.request_id].append(ev.token_id)
            first.setdefault(ev.request_id, time.perf_counter() - t0)
    return (
        time.perf_counter() - t0,
        [toks[str(i)] for i in range(len(PROMPTS))],
        max(first.values()),
    )


def stack_single(client: Client, max_tokens: int) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    outs = [client.generate(p, max_tokens=max_tokens)["text"] for p in PROMPTS]
    return time.perf_counter() - t0, outs


def stack_concurrent(client: Client, max_tokens: int) -> tuple[float, int, list[str]]:
    t0 = time.perf_counter()
    futures = [client.submit_generate(p, max_tokens=max_tokens) for p in PROMPTS]
    outs = [f.result(600).output for f in futures]
    return time.perf_counter() - t0, sum(o["tokens"] for o in outs), [o["text"] for o in outs]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=3, help="alternating rounds; medians count")
    ap.add_argument("--device", default="cpu_ok")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    folder = build_model("smollm2")
    engine = LLMEngine(folder, max_batch=8, max_seq=1024, device=a.device, threads=a.threads)
    params = GenerateParams(max_tokens=a.max_tokens)
    engine.warm_up(tokens=a.max_tokens)
    run_batched(engine, params)  # warm-up at the real widths
    single_tps, batch_tps, gains, ttft1 = [], [], [], []
    same = True
    for _ in range(a.repeat):
        t_single, outs_single = run_single(engine, params)
        t = time.perf_counter()
        engine.generate(PROMPTS[0], GenerateParams(max_tokens=1))
        ttft1.append(time.perf_counter() - t)
        t_batch, outs_batch, ttft_last = run_batched(engine, params)
        n = sum(len(o) for o in outs_single)
        same = same and outs_single == outs_batch
        single_tps.append(n / t_single)
        batch_tps.append(sum(len(o) for o in outs_batch) / t_batch)
        gains.append(batch_tps[-1] / single_tps[-1])
    want = [engine.tokenizer.decode(o) for o in outs_single]
    stack_1, stack_8 = [], []
    models = folder.parent
    with (
        LocalStack(0, inference_workers=1, models=str(models), credits=8, device=a.device) as stack,
        Client(stack.front, timeout=600) as client,
    ):
        stack_concurrent(client, a.max_tokens)  # warm: the worker's own widths
        for _ in range(a.repeat):
            t1, texts_1 = stack_single(client, a.max_tokens)
            t8, n8, texts_8 = stack_concurrent(client, a.max_tokens)
            stack_1.append(n / t1)
            stack_8.append(n8 / t8)
            same = same and texts_1 == texts_8
    figures: dict[str, Any] = {
        "tokens_per_s_batch1": round(statistics.median(single_tps), 1),
        "tokens_per_s_batch8": round(statistics.median(batch_tps), 1),
        "stack_tokens_per_s_1_stream": round(statistics.median(stack_1), 1),
        "stack_tokens_per_s_8_streams": round(statistics.median(stack_8), 1),
        "ttft_s_one_prompt": round(statistics.median(ttft1), 4),
        "ttft_s_last_of_8": round(ttft_last, 4),
        "tokens_per_round": n,
        "batched_equals_batch1": same,
        "stack_text_equals_inprocess": texts_1 == [w.strip() for w in want] or texts_1 == want,
        "device": engine.device,
        "threads": a.threads or default_threads(),
        "max_tokens": a.max_tokens,
        "model": "SmolLM2-135M-Instruct int4 (GQA, shared KV buffer)",
    }
    ratios = {
        "concurrent_gain": round(statistics.median(gains), 2),
        "stack_vs_inprocess": round(statistics.median(stack_1) / statistics.median(single_tps), 3),
        "stack_concurrent_gain": round(statistics.median(stack_8) / statistics.median(stack_1), 2),
    }
    report("llm-decode", figures, ratios)


if __name__ == "__main__":
    main()
