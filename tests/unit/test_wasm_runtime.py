"""WasmRuntime on real wasmtime: ABI round trips, limits, hostile agents, load checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import wasmtime

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_worker.runtime import Agent, CallResult, Limits, WasmRuntime

WAT = Path(__file__).resolve().parents[2] / "agents" / "wat"
FAST = Limits(fuel=10_000_000, timeout_s=2.0, memory_bytes=4 << 20, max_output=1 << 20)


def wat2wasm(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def wasm(name: str) -> bytes:
    return wat2wasm((WAT / f"{name}.wat").read_text())


@pytest.fixture(scope="module")
def echo(rt: WasmRuntime) -> Agent:
    return rt.load(wasm("echo"))


def check_echo(agent: Agent, reuse: bool) -> None:
    assert agent.call(b"still alive", FAST, reuse=reuse).output == b"still alive"


@pytest.mark.parametrize("reuse", [False, True])
def test_echo_roundtrip(echo: Agent, reuse: bool) -> None:
    for data in [b"", b"hello", bytes(range(256)) * 300]:  # the last one grows memory
        res = echo.call(data, FAST, reuse=reuse)
        assert isinstance(res, CallResult)
        assert res.output == data
        assert res.fuel_used > 0
        assert res.run_ns > 0


def test_digest_and_cache(rt: WasmRuntime, echo: Agent) -> None:
    assert echo.digest.startswith("sha256:") and len(echo.digest) == 7 + 64
    assert rt.load(wasm("echo")) is echo


def test_noop_returns_empty(rt: WasmRuntime) -> None:
    noop = rt.load(wasm("noop"))
    assert noop.call(b"ignored", FAST).output == b""
    assert noop.call(b"ignored", FAST, reuse=True).output == b""


@pytest.mark.parametrize("reuse", [False, True])
def test_fuel_is_deterministic(echo: Agent, reuse: bool) -> None:
    a = echo.call(b"x" * 100, FAST, reuse=reuse)
    b = echo.call(b"x" * 100, FAST, reuse=reuse)
    assert a.fuel_used == b.fuel_used > 0


COUNTER = """(module
  (memory (export "memory") 1)
  (global $n (mut i32) (i32.const 0))
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  ;; bumps a global and returns it as one byte at address 0
  (func (export "handle") (param i32 i32) (result i64)
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (i32.store8 (i32.const 0) (global.get $n))
    i64.const 1))"""


def test_reuse_keeps_state_fresh_does_not(rt: WasmRuntime) -> None:
    counter = rt.load(wat2wasm(COUNTER))
    counter.reset()
    assert [counter.call(b"", FAST).output for _ in range(3)] == [b"\x01"] * 3
    assert [counter.call(b"", FAST, reuse=True).output for _ in range(3)] == [
        b"\x01",
        b"\x02",
        b"\x03",
    ]
    counter.reset()
    assert counter.call(b"", FAST, reuse=True).output == b"\x01"


def test_reused_memory_stays_over_a_lower_cap(rt: WasmRuntime) -> None:
    agent = rt.load(wasm("echo"))
    agent.reset()
    agent.call(b"y" * 200_000, FAST, reuse=True)  # echo grows its memory to 4 pages
    small = Limits(fuel=FAST.fuel, memory_bytes=64 << 10)
    assert agent.call(b"z", small, reuse=True).output == b"z"  # pages already there
    assert agent.call(b"z", small).output == b"z"  # a fresh one-page instance
    with pytest.raises(WasmEngineError) as exc:
        agent.call(b"y" * 200_000, small)
    assert exc.value.code == E.WASM_MEMORY_LIMIT


HOSTILE = [
    ("loop", Limits(fuel=100_000), E.WASM_OUT_OF_FUEL, None),
    ("loop", Limits(fuel=10**15, timeout_s=0.02), E.TASK_DEADLINE, None),
    ("grow", Limits(memory_bytes=1 << 20), E.WASM_MEMORY_LIMIT, None),
    ("badptr", FAST, E.WASM_BAD_OUTPUT, None),
    ("unreachable", FAST, E.WASM_TRAP, "unreachable_code_reached"),
    ("bigout", FAST, E.WASM_OUTPUT_TOO_LARGE, None),
    ("bigout", Limits(memory_bytes=1 << 20, max_output=200 << 20), E.WASM_BAD_OUTPUT, None),
    ("recurse", FAST, E.WASM_TRAP, "stack_overflow"),
]


@pytest.mark.parametrize("reuse", [False, True], ids=["fresh", "reuse"])
@pytest.mark.parametrize(("name", "limits", "code", "trap"), HOSTILE)
def test_hostile_agent(
    rt: WasmRuntime,
    echo: Agent,
    name: str,
    limits: Limits,
    code: str,
    trap: str | None,
    reuse: bool,
) -> None:
    agent = rt.load(wasm(name))
    for _ in range(2):  # a reused instance that failed is replaced
        with pytest.raises(WasmEngineError) as exc:
            agent.call(b"input", limits, reuse=reuse)
        assert exc.value.code == code, exc.value
        if trap:
            assert exc.value.detail["trap"] == trap
        check_echo(echo, reuse)


def test_out_of_bounds_load_traps(rt: WasmRuntime, echo: Agent) -> None:
    oob = f'(module {MEM} {ALLOC} (func (export "handle") (param i32 i32) (result i64)'
    oob += " (i64.load (i32.const -8))))"
    with pytest.raises(WasmEngineError) as exc:
        rt.load(wat2wasm(oob)).call(b"", FAST)
    assert exc.value.code == E.WASM_TRAP
    assert exc.value.detail["trap"] == "memory_out_of_bounds"
    check_echo(echo, False)


def test_call_result_is_frozen(echo: Agent) -> None:
    res = echo.call(b"a", FAST)
    with pytest.raises(AttributeError):
        res.output = b"b"  # type: ignore[misc]
    assert res == CallResult(b"a", res.fuel_used, res.run_ns)


def test_badptr_detail_is_unsigned(rt: WasmRuntime) -> None:
    with pytest.raises(WasmEngineError) as exc:
        rt.load(wasm("badptr")).call(b"", FAST)
    assert exc.value.detail["ptr"] == 0xFFFFFFF0 and exc.value.detail["len"] == 0x100


def test_deadline_is_wall_clock_bounded(rt: WasmRuntime) -> None:
    loop = rt.load(wasm("loop"))
    with pytest.raises(WasmEngineError) as exc:
        loop.call(b"", Limits(fuel=10**15, timeout_s=0.0))
    assert exc.value.code == E.TASK_DEADLINE


def test_alloc_beyond_memory_cap(rt: WasmRuntime, echo: Agent) -> None:
    # echo's alloc gets -1 from memory.grow and returns it as a pointer.
    with pytest.raises(WasmEngineError) as exc:
        echo.call(b"q" * (2 << 20), Limits(memory_bytes=1 << 20))
    assert exc.value.code == E.WASM_MEMORY_LIMIT
    check_echo(echo, False)


def test_start_function_runs_under_fuel(rt: WasmRuntime) -> None:
    src = (
        (WAT / "loop.wat")
        .read_text()
        .replace("(memory", "(func $spin (loop $l (br $l))) (start $spin) (memory", 1)
    )
    agent = rt.load(wat2wasm(src))
    with pytest.raises(WasmEngineError) as exc:
        agent.call(b"", Limits(fuel=50_000))
    assert exc.value.code == E.WASM_OUT_OF_FUEL


def bad_module(rt: WasmRuntime, data: bytes) -> WasmEngineError:
    with pytest.raises(WasmEngineError) as exc:
        rt.load(data)
    assert exc.value.code == E.WASM_BAD_MODULE
    return exc.value


def test_wat_text_rejected(rt: WasmRuntime) -> None:
    assert "magic" in bad_module(rt, (WAT / "echo.wat").read_bytes()).message


def test_garbage_rejected(rt: WasmRuntime) -> None:
    bad_module(rt, b"\x00asm\x01\x00\x00\x00garbage!")
    bad_module(rt, b"\x7fELF not wasm at all")
    bad_module(rt, b"")


def test_oversized_module_rejected() -> None:
    small = WasmRuntime(max_module_bytes=64, pool_instances=0)
    try:
        err = bad_module(small, wasm("echo"))
        assert "cap" in err.message
    finally:
        small.close()


def test_unknown_import_rejected(rt: WasmRuntime) -> None:
    err = bad_module(rt, wasm("imports"))
    assert "we.open" in err.message and err.detail["imports"] == ["we.open"]
    wasi = '(module (import "wasi_snapshot_preview1" "fd_write" (func)))'
    assert "wasi_snapshot_preview1.fd_write" in bad_module(rt, wat2wasm(wasi)).message


MEM = '(memory (export "memory") 1)'
ALLOC = '(func (export "alloc") (param i32) (result i32) i32.const 0)'
HANDLE = '(func (export "handle") (param i32 i32) (result i64) i64.const 0)'


@pytest.mark.parametrize(
    "fields",
    [
        [MEM, ALLOC],
        [MEM, ALLOC, HANDLE.replace("i64", "i32")],
        [MEM, ALLOC.replace("(param i32)", ""), HANDLE],
        [ALLOC, HANDLE],
        [MEM, '(global (export "alloc") i32 (i32.const 0))', HANDLE],
        [MEM.replace('"memory"', '"mem"'), ALLOC, HANDLE],
        [MEM.replace("1)", "i64 1)"), ALLOC, HANDLE],
    ],
    ids=[
        "no-handle",
        "handle-i32",
        "alloc-no-param",
        "no-memory",
        "alloc-global",
        "mem-name",
        "mem64",
    ],
)
def test_abi_mismatch_rejected(rt: WasmRuntime, fields: list[str]) -> None:
    with_all = f"(module {MEM} {ALLOC} {HANDLE})"
    assert rt.load(wat2wasm(with_all)).call(b"", FAST).output == b""
    bad_module(rt, wat2wasm(f"(module {' '.join(fields)})"))


def test_pool_eviction_keeps_working() -> None:
    small = WasmRuntime(pool_instances=10)  # 2 slots for reused instances, 8 spare
    try:
        if not small.pool_instances:
            pytest.skip("no pooling allocator on this machine")
        # a custom section (id 0, size 2, name "a".."e") makes 5 distinct digests
        agents = [small.load(wasm("echo") + bytes([0, 2, 1, 97 + i])) for i in range(5)]
        for _ in range(3):
            for i, agent in enumerate(agents):
                assert agent.call(bytes([i]), FAST, reuse=True).output == bytes([i])
                assert agent.call(bytes([i]), FAST).output == bytes([i])
    finally:
        small.close()


def test_closed_runtime_refuses() -> None:
    tmp = WasmRuntime(pool_instances=0)
    agent = tmp.load(wasm("noop"))
    tmp.close()
    tmp.close()
    for thunk in (lambda: tmp.load(wasm("noop")), lambda: agent.call(b"", FAST)):
        with pytest.raises(WasmEngineError) as exc:
            thunk()
        assert exc.value.code == E.INTERNAL


def test_limits_validated() -> None:
    with pytest.raises(ValueError):
        Limits(fuel=-1)


def test_a_forgotten_agent_drops_the_instance_its_running_call_gives_back(
    rt: WasmRuntime,
) -> None:
    """The worker's table drops an agent while one of its reused instances is in a call:
    that instance ends with the call, and the pool's count of live instances is right."""
    agent = rt.load(wasm("echo"), key="to-forget")
    live = rt._live
    slot = agent.take(True)
    assert agent.call_in(slot, b"\x01", FAST, reuse=True).output == b"\x01"
    assert rt._live == live + 1 and slot.store
    rt.forget("to-forget")  # meanwhile, on another thread: the table's cap
    agent.give(slot, reuse=True)  # the call ends
    assert rt._live == live and not agent._idle
    assert rt.load(wasm("echo"), key="to-forget") is not agent  # loaded afresh if sent again
