"""`make demo`: start the local stack, run a real workflow of WASM agents, stop it.

The workflow, map/reduce over agents written in C (agents/src, built to
agents/build): the repository's docs are split into chunks, the ``textstats``
agent counts words, lines and the most frequent words of each chunk on the
wasm-worker pool, the ``reduce_stats`` agent merges the partial results, and
the word count is checked against Python's. A burst of no-op tasks then shows
the per-task overhead. It prints the results, the per-worker distribution and
timings, then stops the stack (or leaves it up with ``--keep``).

What is not in this build yet is said, not faked: agents calling each other
(``spawn``) and the LLM step land with the sandbox and inference issues.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from wasm_engine import Client
from wasm_engine.benchmark import percentile
from wasm_engine.config import from_env
from wasm_engine.stack import monitor_url

ROOT = Path(__file__).resolve().parent.parent
WAT = ROOT / "agents" / "wat"
BUILD = ROOT / "agents" / "build"
log = logging.getLogger("demo")


def wasm_engine(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "wasm-engine"), *args]
    subprocess.run(cmd, check=True)


def split_lines(text: str, size: int) -> list[str]:
    chunks, current, length = [], [], 0
    for line in text.splitlines(keepends=True):
        if current and length + len(line) > size:
            chunks.append("".join(current))
            current, length = [], 0
        current.append(line)
        length += len(line)
    return [*chunks, "".join(current)] if current else chunks


def workflow(front: str) -> None:
    with Client(front, timeout=120) as client:
        textstats = client.put_agent(BUILD / "textstats.wasm")
        reduce_stats = client.put_agent(BUILD / "reduce_stats.wasm")
        noop = client.put_agent(WAT / "noop.wat", reuse=True)

        docs = sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").glob("*.md"))
        docs += sorted((ROOT / "agents").glob("*.md"))
        text = "\n".join(p.read_text(errors="replace") for p in docs)
        chunks = split_lines(text, 8192)  # whole lines: no word is cut in two
        log.info("map: %d chunks of %d docs (%d chars) -> textstats (C, wasm)", len(chunks),
                 len(docs), len(text))  # fmt: skip
        t0 = time.perf_counter()
        parts = client.run_many(textstats, chunks, window=32)
        t_map = time.perf_counter() - t0
        log.info("reduce: %d partial results -> reduce_stats (C, wasm)", len(parts))
        t0 = time.perf_counter()
        total = client.run(reduce_stats, [p.output for p in parts])
        t_reduce = time.perf_counter() - t0
        stats = total.output
        by_worker = Counter(p.stats["worker"] for p in parts)
        fuel = sum(p.stats["fuel_used"] for p in parts) + total.stats["fuel_used"]
        words = len(re.findall(rb"[A-Za-z0-9]+", text.encode()))
        print(f"text statistics of the docs: {stats['words']} words (Python counts {words}), "
              f"{stats['lines']} lines, {stats['bytes']} bytes")  # fmt: skip
        top = ", ".join(f"{w} {n}" for w, n in stats["top"][:8])
        print(f"top words: {top}")
        print(f"map {t_map * 1000:.1f} ms on {dict(by_worker)}, reduce {t_reduce * 1000:.1f} ms, "
              f"{fuel:,} fuel in all")  # fmt: skip
        if stats["words"] != words:
            raise SystemExit("word count differs from Python's")

        n = 5000
        t0 = time.perf_counter()
        client.run_many(noop, range(n), window=64)
        rate = n / (time.perf_counter() - t0)
        lat = []
        for i in range(300):
            t = time.perf_counter()
            client.run(noop, i)
            lat.append((time.perf_counter() - t) * 1e6)
        print(f"no-op burst: {n} tasks at {rate:,.0f} tasks/s; one in flight: p50 "
              f"{percentile(lat, 50):.0f} us, p99 {percentile(lat, 99):.0f} us")  # fmt: skip
        status = client.status()
        print(f"orchestrator counters: {status['counters']}")
    print(
        "not in this build yet: agents spawning agents and the LLM `generate` step "
        "(they land with the orchestrator host calls and the inference issue)"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    ap.add_argument("--wasm-workers", type=int, default=2)
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo: %(message)s")
    os.environ.setdefault("WASM_ENGINE_WASM_WORKERS", str(a.wasm_workers))
    settings = from_env()
    wasm_engine("up")
    try:
        workflow(settings.front)
    finally:
        if a.keep:
            url = monitor_url(settings) or "off"
            print(f"stack left running: front {settings.front}, monitor {url}; `make down` stops")
        else:
            wasm_engine("down")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
