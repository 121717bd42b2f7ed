"""`make demo`: start the local stack, run a real workflow of WASM agents, stop it.

The workflow: the text of this repository's docs is split into chunks; each chunk
is hashed by the ``checksum`` agent (FNV-1a in WASM) on the wasm-worker pool and
checked against the same hash computed here; the ``echo`` agent round-trips
structured data; a burst of no-op tasks shows the per-task overhead. It prints
the results, per-worker distribution and timings, then stops the stack (or
leaves it up with ``--keep``).

What is not in this build yet is said, not faked: agents calling each other
(``spawn``) and the LLM step land with the sandbox and inference issues.
"""

from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from wasm_engine import Client
from wasm_engine.benchmark import percentile
from wasm_engine.config import from_env

ROOT = Path(__file__).resolve().parent.parent
WAT = ROOT / "agents" / "wat"
log = logging.getLogger("demo")


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def wasm_engine(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "wasm-engine"), *args]
    subprocess.run(cmd, check=True)


def workflow(front: str) -> None:
    import msgpack

    with Client(front, timeout=120) as client:
        checksum = client.put_agent(WAT / "checksum.wat")
        echo = client.put_agent(WAT / "echo.wat")
        noop = client.put_agent(WAT / "noop.wat", reuse=True)

        text = b"".join(p.read_bytes() for p in sorted((ROOT / "docs").glob("*.md")))
        chunks = [text[i : i + 4096].decode(errors="replace") for i in range(0, len(text), 4096)]
        log.info(
            "step 1: hashing %d chunks of the docs (%d bytes) on the wasm pool",
            len(chunks),
            len(text),
        )
        t0 = time.perf_counter()
        results = client.run_many(checksum, chunks, window=32)
        elapsed = time.perf_counter() - t0
        wrong = [
            i
            for i, (c, r) in enumerate(zip(chunks, results, strict=True))
            if r.output != fnv1a64(msgpack.packb(c))
        ]
        per_worker = Counter(r.stats["worker"] for r in results)
        fuel = sum(r.stats["fuel_used"] for r in results)
        print(
            f"checksum: {len(results)} chunks in {elapsed * 1000:.1f} ms, {fuel:,} fuel, "
            f"{len(wrong)} mismatches against Python, by worker: {dict(per_worker)}"
        )
        if wrong:
            raise SystemExit(f"checksum mismatch in chunks {wrong[:5]}")

        doc = {"agent": "echo", "nested": {"list": [1, 2.5, "three"], "bytes": b"\x00\x01"}}
        result = client.run(echo, doc, seed=7)
        print(
            f"echo: round-tripped {result.output == doc}, run {result.stats['run_us']} us on "
            f"{result.stats['worker']}"
        )

        n = 5000
        t0 = time.perf_counter()
        client.run_many(noop, range(n), window=64)
        rate = n / (time.perf_counter() - t0)
        lat = []
        for i in range(300):
            t = time.perf_counter()
            client.run(noop, i)
            lat.append((time.perf_counter() - t) * 1e6)
        print(
            f"no-op burst: {n} tasks at {rate:,.0f} tasks/s; one in flight: p50 "
            f"{percentile(lat, 50):.0f} us, p99 {percentile(lat, 99):.0f} us"
        )
        status = client.status()
        print(f"orchestrator counters: {status['counters']}")
    print(
        "not in this build yet: agents spawning agents and the LLM `generate` step "
        "(they land with the sandbox and inference issues)"
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
            print(f"stack left running: front {settings.front}; `make down` stops it")
        else:
            wasm_engine("down")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
