"""The C SDK's msgpack reader and writer, through the ``msgpack_norm`` agent on real wasmtime:
it re-encodes like Python on edge and random values, normalises non-minimal encodings, and
answers bad input (every truncation, invalid bytes, 4 GiB headers) with an error, no trap."""

from __future__ import annotations

import random
from typing import Any

import msgpack
from c_agents import LIMITS, load

from wasm_worker.runtime import WasmRuntime

EDGE_INTS = [
    0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -(2**31), -(2**31) - 1, -(2**63),
]  # fmt: skip


def random_value(rnd: random.Random, depth: int = 0) -> Any:
    kind = rnd.randrange(10 if depth < 4 else 7)
    if kind == 0:
        return rnd.choice([None, True, False])
    if kind == 1:
        return rnd.choice(EDGE_INTS)
    if kind == 2:
        return rnd.randint(-(2**63), 2**64 - 1)
    if kind == 3:
        return rnd.choice([0.0, -1.5, 1e300, float("inf"), rnd.random()])
    if kind == 4:
        return "\u00e9" * rnd.choice([0, 1, 15, 16, 31, 127, 128, 40000])
    if kind == 5:
        return rnd.randbytes(rnd.choice([0, 1, 255, 256, 65535, 65536]))
    if kind == 6:
        return rnd.choice(["", "a", "x" * 31, "x" * 32, "y" * 255, "y" * 256, "z" * 65536])
    if kind == 7:
        return [random_value(rnd, depth + 1) for _ in range(rnd.choice([0, 1, 15, 16, 17]))]
    if kind == 8:
        return {f"k{i}": random_value(rnd, depth + 1) for i in range(rnd.choice([0, 1, 15, 16]))}
    return {rnd.choice(EDGE_INTS): random_value(rnd, depth + 1)}


def test_msgpack_norm_reencodes_like_python(rt: WasmRuntime) -> None:
    agent = load(rt, "msgpack_norm")
    rnd = random.Random(1)
    values: list[Any] = [*EDGE_INTS, [0] * 70000, {str(i): i for i in range(70000)}]
    values += [random_value(rnd) for _ in range(300)]
    for value in values:
        packed = msgpack.packb(value)
        assert agent.call(packed, LIMITS).output == packed


def test_msgpack_norm_normalises_encodings(rt: WasmRuntime) -> None:
    agent = load(rt, "msgpack_norm")
    cases = {
        b"\xd0\x05": 5,  # int8 holding a small positive
        b"\xcd\x00\x01": 1,  # uint16 holding 1
        b"\xd3" + (2**40).to_bytes(8, "big"): 2**40,
        b"\xca\x3f\xc0\x00\x00": 1.5,  # float32 -> float64
        b"\xda\x00\x01a": "a",  # str16
        b"\xc6\x00\x00\x00\x01b": b"b",  # bin32
        b"\xdc\x00\x01\x01": [1],  # array16
        b"\xdf\x00\x00\x00\x01\xa1k\xc0": {"k": None},  # map32
    }
    for raw, value in cases.items():
        assert agent.call(raw, LIMITS).output == msgpack.packb(value)


def test_msgpack_norm_refuses_bad_input_without_trapping(rt: WasmRuntime) -> None:
    agent = load(rt, "msgpack_norm")
    packed = msgpack.packb({"a": [1, 2.5, "xyz", b"\x00" * 300, {"b": None}], "c": 2**64 - 1})
    for cut in range(len(packed)):  # every truncation
        out = msgpack.unpackb(agent.call(packed[:cut], LIMITS).output)
        assert out["code"] == 1 and "truncated or invalid" in out["error"], cut
    for raw, why in [
        (b"\xc1", "invalid"),
        (b"\x01\x02", "bytes after"),
        (b"\xd4\x01\x02", "ext"),
        (b"\xdd\xff\xff\xff\xff", "truncated"),  # a 4G-element array header, nothing after
        (b"\xdb\xff\xff\xff\xff", "truncated"),  # a 4 GiB str header
    ]:
        assert why in msgpack.unpackb(agent.call(raw, LIMITS).output)["error"]
