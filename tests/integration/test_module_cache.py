"""The worker's on-disk cache of compiled modules: miss, hit, corrupt file, other key."""

from __future__ import annotations

import time
from pathlib import Path

import msgpack

from wasm_worker.runtime import Limits, WasmRuntime

ROOT = Path(__file__).resolve().parents[2]
TEXTSTATS = (ROOT / "agents" / "build" / "textstats.wasm").read_bytes()
LIMITS = Limits(fuel=2_000_000_000, timeout_s=20.0, memory_bytes=64 << 20)


def _load(cache: Path) -> tuple[WasmRuntime, float, dict[str, object]]:
    rt = WasmRuntime(pool_instances=0, cache_dir=cache)
    start = time.perf_counter()
    agent = rt.load(TEXTSTATS)
    took = time.perf_counter() - start
    out = msgpack.unpackb(agent.call(msgpack.packb(b"a b a\n"), LIMITS).output)
    return rt, took, out


def test_compile_once_then_load_from_disk_and_recover_from_a_bad_file(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    rt, compile_s, out = _load(cache)
    assert rt.disk is not None and (rt.disk.hits, rt.disk.misses) == (0, 1)
    files = list(cache.glob("*.cwasm"))
    assert len(files) == 1 and "-wt" in files[0].name
    assert not list(cache.glob(".*.tmp"))  # written atomically
    rt.close()

    rt, cached_s, out2 = _load(cache)
    assert rt.disk is not None and (rt.disk.hits, rt.disk.misses) == (1, 0)
    assert out2 == out and out["words"] == 3
    rt.close()
    print(f"textstats.wasm: compile {compile_s * 1e3:.1f} ms, cached load {cached_s * 1e3:.1f} ms")

    data = bytearray(files[0].read_bytes())
    data[-100] ^= 0xFF  # a corrupt file is not deserialized: removed, compiled again
    files[0].write_bytes(bytes(data))
    rt, _, out3 = _load(cache)
    assert rt.disk is not None and (rt.disk.hits, rt.disk.misses) == (0, 1) and out3 == out
    rt.close()
    rt, _, _ = _load(cache)
    assert rt.disk is not None and rt.disk.hits == 1  # rewritten whole
    rt.close()

    # another engine configuration is another key: a miss, not a deserialize
    other = WasmRuntime(pool_instances=0, cache_dir=cache)
    other.disk.suffix = "-other.cwasm"  # type: ignore[union-attr]
    other.load(TEXTSTATS)
    assert other.disk is not None and (other.disk.hits, other.disk.misses) == (0, 1)
    other.close()
    assert len(list(cache.glob("*.cwasm"))) == 2


def test_one_agent_per_key_shares_one_compiled_module() -> None:
    rt = WasmRuntime(pool_instances=0)
    a, b = rt.load(TEXTSTATS, key="sha256:a"), rt.load(TEXTSTATS, key="sha256:b")
    assert a is not b and a.digest == b.digest and a._keep is b._keep
    assert rt.load(TEXTSTATS, key="sha256:a") is a
    rt.close()
