"""Bench: the textstats C agent in WASM vs the same algorithm in Python, on the same 1 MB text.

One run, one process. The wasm side is the whole round a caller pays in-process:
msgpack-pack the text, ``Agent.call`` through WasmRuntime (fresh instance per call, and
a reused instance), unpack the result. The Python side is the same tokenisation and
ranking written two ways: idiomatic (``re`` + ``bytes.lower`` + ``Counter``, C loops
underneath: what a Python agent would do) and as a byte loop (the C code's algorithm
step by step, interpreted). Both must give the agent's exact output, checked first.

Figures: ms per run (median of ``--repeats``) and MB/s for each, fuel per run and per
byte. Ratios: ``wasm_vs_python`` = idiomatic Python time / wasm time (fresh instance),
``wasm_vs_python_loop``, ``reuse_vs_fresh``.

    .venv/bin/python bench/textstats.py [--mb 1] [--repeats 7] [--text FILE]
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgpack

from wasm_engine.benchmark import report
from wasm_worker.runtime import Limits, WasmRuntime

ROOT = Path(__file__).resolve().parent.parent
AGENT = ROOT / "agents" / "build" / "textstats.wasm"
WORD = re.compile(rb"[A-Za-z0-9]+")
LIMITS = Limits(fuel=50_000_000_000, timeout_s=60.0, memory_bytes=256 << 20)


def corpus(n_bytes: int, seed: int = 7, vocab: int = 20_000) -> bytes:
    """Seeded Zipf-distributed text over made-up words, lines of 5-15 words."""
    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    words = ["".join(rnd.choices(letters, k=rnd.randint(1, 12))) for _ in range(vocab)]
    weights = [1 / (i + 1) for i in range(vocab)]
    out, size = [], 0
    while size < n_bytes:
        k = rnd.randint(5, 15)
        line = " ".join(rnd.choices(words, weights, k=k)) + rnd.choice([".\n", ",\n", "\n"])
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n_bytes]


def _result(counts: Counter[bytes], words: int, data: bytes) -> dict[str, Any]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return {
        "bytes": len(data),
        "words": words,
        "lines": lines,
        "unique_words": len(counts),
        "top": [[w.decode(), c] for w, c in ranked],
    }


def python_idiomatic(data: bytes) -> dict[str, Any]:
    words = WORD.findall(data.lower())
    return _result(Counter(words), len(words), data)


_WORD_BYTE = bytes(
    c if chr(c).isascii() and chr(c).isalnum() else 0 for c in bytes(range(256)).lower()
)


def python_loop(data: bytes) -> dict[str, Any]:
    """The C agent's loop: classify each byte, lowercase, count words in a dict."""
    counts: Counter[bytes] = Counter()
    word = bytearray()
    words = 0
    for b in data:
        c = _WORD_BYTE[b]
        if c:
            word.append(c)
        elif word:
            counts[bytes(word)] += 1
            words += 1
            word.clear()
    if word:
        counts[bytes(word)] += 1
        words += 1
    return _result(counts, words, data)


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm up (compiles the module, fills caches)
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        runs.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mb", type=float, default=1.0, help="text size in MB (10^6 bytes)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--text", type=Path, help="a text file, repeated to size (default: seeded)")
    args = ap.parse_args()
    n = int(args.mb * 1e6)
    if args.text:
        raw = args.text.read_bytes()
        data = (raw * (n // max(1, len(raw)) + 1))[:n]
    else:
        data = corpus(n)

    rt = WasmRuntime()
    try:
        agent = rt.load(AGENT.read_bytes())

        def wasm(reuse: bool) -> dict[str, Any]:
            out = agent.call(msgpack.packb(data), LIMITS, reuse=reuse).output
            result: dict[str, Any] = msgpack.unpackb(out)
            return result

        want = wasm(False)
        if python_idiomatic(data) != want or python_loop(data) != want:
            raise SystemExit("textstats: the Python baselines disagree with the agent")
        fuel = agent.call(msgpack.packb(data), LIMITS).fuel_used
        fresh = median_ms(lambda: wasm(False), args.repeats)
        reuse = median_ms(lambda: wasm(True), args.repeats)
        agent.reset()
    finally:
        rt.close()
    idiomatic = median_ms(lambda: python_idiomatic(data), args.repeats)
    loop = median_ms(lambda: python_loop(data), max(1, args.repeats // 3))

    mb = len(data) / 1e6
    figures: dict[str, Any] = {"text_bytes": len(data), "unique_words": want["unique_words"]}
    for name, ms in [
        ("wasm_fresh", fresh),
        ("wasm_reuse", reuse),
        ("python", idiomatic),
        ("python_loop", loop),
    ]:
        figures[f"{name}_ms"] = round(ms, 2)
        figures[f"{name}_mb_s"] = round(mb / (ms / 1e3), 1)
    figures["fuel"] = fuel
    figures["fuel_per_byte"] = round(fuel / len(data), 2)
    ratios = {
        "wasm_vs_python": round(idiomatic / fresh, 2),
        "wasm_vs_python_loop": round(loop / fresh, 2),
        "reuse_vs_fresh": round(fresh / reuse, 2),
    }
    report("textstats", figures, ratios)


if __name__ == "__main__":
    main()
