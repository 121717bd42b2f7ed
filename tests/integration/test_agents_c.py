"""The C agents of agents/src on real wasmtime through WasmRuntime: results against Python
references, only the imports each uses, deterministic fuel. The SDK's msgpack reader and
writer: test_agent_msgpack_norm.py; the committed build against a fresh one:
test_agents_build.py."""

from __future__ import annotations

import random
import re
from collections import Counter
from typing import Any

import msgpack
import pytest
import wasmtime
from c_agents import AGENTS, BUILD, LIMITS, NAMES, call, load

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_worker.runtime import Limits, WasmRuntime

# --- Python reference of textstats and reduce_stats (the rules in agents/README.md) ---

WORD = re.compile(rb"[A-Za-z0-9]+")


def top10(counts: Counter[bytes]) -> list[list[Any]]:
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    return [[w.decode(), c] for w, c in ranked]


def textstats_ref(data: bytes) -> dict[str, Any]:
    words = [w.lower() for w in WORD.findall(data)]
    counts = Counter(words)
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    return {
        "bytes": len(data),
        "words": len(words),
        "lines": lines,
        "unique_words": len(counts),
        "top": top10(counts),
    }


def reduce_ref(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: Counter[bytes] = Counter()
    for p in parts:
        for word, count in p.get("top", []):
            merged[word.encode()] += count
    return {
        "bytes": sum(p.get("bytes", 0) for p in parts),
        "words": sum(p.get("words", 0) for p in parts),
        "lines": sum(p.get("lines", 0) for p in parts),
        "unique_words": max((p.get("unique_words", 0) for p in parts), default=0),
        "unique_words_max": sum(p.get("unique_words_max", p.get("unique_words", 0)) for p in parts),
        "parts": sum(p.get("parts", 1) for p in parts),
        "top": top10(merged),
    }


KNOWN = (
    "The quick brown fox -- the QUICK one -- jumps over the lazy dog.\r\n"
    "Dogs don't jump; foxes do. 42 foxes, 42 dogs & 7 cats!\n"
    "\n"
    "Caf\u00e9 na\u00efve r\u00e9sum\u00e9: non-ASCII bytes split words (caf, na, ve, r, sum).\n"
    "tie1 tie2 tie2 tie1 TIE3 tie3 x_y x-y x.y x y\tZ\x00z"
).encode()


def corpus(n_bytes: int, seed: int = 7, vocab: int = 5000) -> bytes:
    """Zipf-ish text over a vocabulary of made-up words, lines of 5-15 words."""
    rnd = random.Random(seed)
    letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
    words = ["".join(rnd.choices(letters, k=rnd.randint(1, 12))) for _ in range(vocab)]
    weights = [1 / (i + 1) for i in range(vocab)]
    out: list[str] = []
    size = 0
    while size < n_bytes:
        line = " ".join(rnd.choices(words, weights, k=rnd.randint(5, 15))) + rnd.choice(
            [".\n", ",\n", "!\n", "\n"]
        )
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n_bytes]


# --- fixtures ---


# --- the committed modules ---


#: the host calls each agent imports: only what it calls (clang drops unused declarations)
IMPORTS = {
    "planner": ["we.spawn", "we.wait"],
    "summarize": ["we.generate", "we.wait"],
    "tensor_ops": ["we.tensor_read", "we.tensor_publish"],
}


@pytest.mark.parametrize("name", NAMES)
def test_committed_module_has_abi_exports_and_only_the_imports_it_uses(name: str) -> None:
    module = wasmtime.Module(wasmtime.Engine(), (BUILD / f"{name}.wasm").read_bytes())
    assert [f"{i.module}.{i.name}" for i in module.imports] == IMPORTS.get(name, [])
    assert sorted(e.name for e in module.exports) == ["alloc", "handle", "memory"]


def test_every_source_has_a_committed_module() -> None:
    assert sorted(p.stem for p in (AGENTS / "src").glob("*.c")) == NAMES
    assert sorted(p.stem for p in BUILD.glob("*.wasm")) == NAMES


# --- textstats ---


@pytest.mark.parametrize(
    "text",
    [
        KNOWN,
        b"",
        b"\n",
        b"one",
        b"...,;  \n\n",
        b"Ends without a newline",
        b"a\nb\n",
        b"\xff\xfeA\xc3\xa9B",
    ],
    ids=["known", "empty", "newline", "one-word", "no-words", "no-newline", "lines", "bytes"],
)
def test_textstats_matches_reference(rt: WasmRuntime, text: bytes) -> None:
    agent = load(rt, "textstats")
    assert call(agent, text) == textstats_ref(text)  # bin input
    assert call(agent, text.decode("utf-8", "replace").encode()) == textstats_ref(
        text.decode("utf-8", "replace").encode()
    )


def test_textstats_known_text_exactly(rt: WasmRuntime) -> None:
    got = call(load(rt, "textstats"), KNOWN.decode())  # str input
    assert got == {
        "bytes": 245,
        "words": 55,
        "lines": 5,
        "unique_words": 34,
        "top": [  # count descending, then the word's bytes ascending
            ["x", 4],  # x_y x-y x.y x
            ["y", 4],
            ["the", 3],
            ["42", 2],
            ["caf", 2],  # "Caf\u00e9" and "(caf,": bytes >= 0x80 split words
            ["dogs", 2],
            ["foxes", 2],
            ["na", 2],
            ["quick", 2],
            ["r", 2],
        ],
    }


def test_textstats_large_text_grows_the_table(rt: WasmRuntime) -> None:
    text = corpus(300_000, vocab=20_000)
    got = call(load(rt, "textstats"), text)
    want = textstats_ref(text)
    assert want["unique_words"] > 5000  # many rehashes of the 1024-slot table
    assert got == want


def test_textstats_rejects_other_input(rt: WasmRuntime) -> None:
    agent = load(rt, "textstats")
    for value in [12, None, ["text"], {"text": "x"}]:
        out = call(agent, value)
        assert out["code"] == 1 and "str or bin" in out["error"]
    trailing = agent.call(msgpack.packb("text") + b"\xc0", LIMITS).output
    assert "error" in msgpack.unpackb(trailing)


def test_textstats_fuel_is_deterministic(rt: WasmRuntime) -> None:
    agent = load(rt, "textstats")
    data = msgpack.packb(corpus(100_000))
    runs = [agent.call(data, LIMITS) for _ in range(2)]
    assert runs[0].output == runs[1].output
    assert runs[0].fuel_used == runs[1].fuel_used
    assert 1_000_000 < runs[0].fuel_used < 30_000_000  # ~6.0 M on 100 KB (agents/README.md)


def test_reused_instance_resets_its_heap(rt: WasmRuntime) -> None:
    """Each call on a reused instance starts from an empty bump heap: no growth per call."""
    agent = load(rt, "textstats")
    text = corpus(100_000)
    tight = Limits(fuel=LIMITS.fuel, timeout_s=20.0, memory_bytes=2 << 20)
    try:
        for _ in range(50):  # 50 x (input + table) would be far over 2 MiB if kept
            assert call(agent, text, tight, reuse=True) == textstats_ref(text)
    finally:
        agent.reset()


def test_memory_cap_is_a_memory_error(rt: WasmRuntime) -> None:
    agent = load(rt, "textstats")
    small = Limits(fuel=LIMITS.fuel, timeout_s=20.0, memory_bytes=256 << 10)
    with pytest.raises(WasmEngineError) as err:  # the input fits, the hash table cannot grow
        agent.call(msgpack.packb(corpus(100_000, vocab=20_000)), small)
    assert err.value.code == E.WASM_MEMORY_LIMIT
    with pytest.raises(WasmEngineError) as err:  # alloc(len) itself fails
        agent.call(msgpack.packb(b"x" * (1 << 20)), small)
    assert err.value.code == E.WASM_MEMORY_LIMIT


# --- reduce_stats ---


def chunks_at_lines(text: bytes, n: int) -> list[bytes]:
    lines = text.splitlines(keepends=True)
    step = -(-len(lines) // n)
    return [b"".join(lines[i : i + step]) for i in range(0, len(lines), step)]


def test_reduce_stats_merges_parts(rt: WasmRuntime) -> None:
    ts, rd = load(rt, "textstats"), load(rt, "reduce_stats")
    text = corpus(200_000)
    parts = [call(ts, chunk) for chunk in chunks_at_lines(text, 7)]
    got = call(rd, parts)
    assert got == reduce_ref(parts)
    whole = textstats_ref(text)
    for key in ["bytes", "words", "lines"]:  # exact: chunks split at line ends
        assert got[key] == whole[key]
    assert got["parts"] == 7
    assert got["unique_words"] <= whole["unique_words"] <= got["unique_words_max"]
    assert [w for w, _ in got["top"][:5]] == [w for w, _ in whole["top"][:5]]


def test_reduce_stats_nests(rt: WasmRuntime) -> None:
    ts, rd = load(rt, "textstats"), load(rt, "reduce_stats")
    parts = [call(ts, chunk) for chunk in chunks_at_lines(corpus(60_000), 6)]
    flat = call(rd, parts)
    nested = call(rd, [call(rd, parts[:2]), call(rd, parts[2:])])
    assert nested == reduce_ref([reduce_ref(parts[:2]), reduce_ref(parts[2:])])
    for key in ["bytes", "words", "lines", "unique_words", "unique_words_max", "parts"]:
        assert nested[key] == flat[key]


def test_reduce_stats_edge_inputs(rt: WasmRuntime) -> None:
    rd = load(rt, "reduce_stats")
    assert call(rd, []) == reduce_ref([])
    odd = [
        {"bytes": 5, "extra": {"nested": [1, 2.5, None, b"x", {"k": [True]}]}, "top": [["a", 2]]},
        {"words": 2**40, "top": [["b", 2], ["a", 1]], "parts": 3},
        {},
    ]
    assert call(rd, odd) == reduce_ref(odd)
    for bad in [{"bytes": 1}, [1], [{"bytes": -1}], [{"top": [["a"]]}], [{"top": 3}]]:
        out = call(rd, bad)
        assert out["code"] == 1 and out["error"].startswith("reduce_stats:")
