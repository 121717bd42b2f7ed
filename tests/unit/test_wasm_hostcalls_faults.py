"""Host calls under hostile use on real wasmtime: bad guest pointers, invalid emits, caps
past their limit, host calls from a start function, child requests without a link, imports
that are not host calls, errors kept with their own store across threads. Each fails the
task with a typed error and the runtime serves on."""

from __future__ import annotations

import logging
import threading

import msgpack
import pytest
from hostcall_helpers import (
    FAST,
    STEPS,
    WAT,
    limits,
    still_serving,
    stream,
    wasm,
    wat2wasm,
)

from wasm_engine import codec
from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_worker.runtime import Agent, HostAgent, WasmRuntime


@pytest.mark.parametrize("reuse", [False, True], ids=["fresh", "reuse"])
@pytest.mark.parametrize(
    ("mode", "call", "ptr", "length"),
    [
        (0, "we.log", 0xFFFFFFF0, 0x100),  # negative as an i32
        (1, "we.random", 65000, 1000),  # straddles the end of memory
        (2, "we.emit", 0, 0xFFFFFFFF),
    ],
)
def test_bad_pointer_traps_and_the_runtime_serves_on(
    rt: WasmRuntime, host: Agent, bad: Agent, mode: int, call: str, ptr: int, length: int,
    reuse: bool,
) -> None:  # fmt: skip
    for _ in range(2):  # a reused instance that failed is replaced
        with pytest.raises(WasmEngineError) as exc:
            bad.call(bytes([mode]), FAST, reuse=reuse)
        err = exc.value
        assert err.code == E.WASM_TRAP and err.detail["trap"] == "host_bad_pointer", err
        assert err.detail["call"] == call and err.detail["memory_bytes"] == 65536
        assert (err.detail["ptr"], err.detail["len"]) == (ptr, length)
        still_serving(rt, host, reuse)


def test_emit_of_invalid_msgpack_is_bad_output(rt: WasmRuntime, host: Agent, bad: Agent) -> None:
    sent: list[bytes] = []
    with pytest.raises(WasmEngineError) as exc:
        bad.call(b"\x03", FAST, emit=sent.append)
    assert exc.value.code == E.WASM_BAD_OUTPUT and exc.value.detail["call"] == "we.emit"
    assert sent == []
    still_serving(rt, host, False)


def test_random_over_its_cap_traps(rt: WasmRuntime, host: Agent, bad: Agent) -> None:
    assert bad.call(b"\x04", limits(random_bytes=4096)).output == b""
    with pytest.raises(WasmEngineError) as exc:
        bad.call(b"\x04", limits(random_bytes=4095))
    assert exc.value.code == E.WASM_TRAP and exc.value.detail["trap"] == "host_limit"
    still_serving(rt, host, False)


def test_zero_bytes_at_the_end_of_memory_is_in_bounds(bad: Agent) -> None:
    assert bad.call(b"\x05", FAST).output == b""


def test_emit_budgets(host: Agent) -> None:
    sent: list[bytes] = []
    res = host.call(b"", limits(emit_events=2), emit=sent.append)
    assert msgpack.unpackb(res.output)[1] == [0, 0, -1] and sent == STEPS[:2] and res.events == 2
    sent.clear()
    res = host.call(b"", limits(emit_bytes=10), emit=sent.append)
    assert msgpack.unpackb(res.output)[1] == [0, -2, -2] and sent == STEPS[:1]


def test_log_cap_counts_what_it_drops(host: Agent, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wasm_worker.agent")
    res = host.call(b"", limits(log_bytes=15), task_id="quiet")
    assert res.log_dropped == 16
    (warning,) = [r for r in caplog.records if r.name == "wasm_worker.agent"]
    assert warning.levelno == logging.WARNING and "16 bytes" in warning.getMessage()


def test_a_failing_emit_sink_fails_the_task_not_the_runtime(rt: WasmRuntime, host: Agent) -> None:
    def broken(_: bytes) -> None:
        raise RuntimeError("socket gone")

    with pytest.raises(WasmEngineError) as exc:
        host.call(b"", FAST, emit=broken)
    assert exc.value.code == E.INTERNAL and "socket gone" in exc.value.message
    still_serving(rt, host, False)


START = """(module
  (import "we" "log" (func $log (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "from start")
  (func $start (call $log (i32.const PTR) (i32.const 10)))
  (start $start)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param i32 i32) (result i64) i64.const 0))"""


def test_host_calls_from_a_start_function(
    rt: WasmRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="wasm_worker.agent")
    rt.load(wat2wasm(START.replace("PTR", "0"))).call(b"", FAST, task_id="s")
    assert any(r.getMessage().endswith("from start") for r in caplog.records)
    with pytest.raises(WasmEngineError) as exc:
        rt.load(wat2wasm(START.replace("PTR", "65530"))).call(b"", FAST)
    assert exc.value.detail["trap"] == "host_bad_pointer"


@pytest.mark.parametrize("name", ["spawn", "send", "infer", "generate"])
def test_child_requests_need_a_link_to_the_orchestrator(rt: WasmRuntime, name: str) -> None:
    """An agent importing a child request loads as one that may block; called
    with no link (not through a worker loop) the request is refused, typed."""
    agent = rt.load(wat2wasm((WAT / "spawner.wat").read_text().replace('"spawn"', f'"{name}"')))
    assert isinstance(agent, HostAgent) and agent.blocking
    assert not rt.load(wasm("hostcalls")).blocking
    with pytest.raises(WasmEngineError) as exc:
        agent.call(codec.packb({"agent": "x"}), FAST)
    err = exc.value
    assert err.code == E.WASM_CAPABILITY_DENIED and err.detail["call"] == f"we.{name}"


@pytest.mark.parametrize(
    "imported",
    [
        '(import "we" "log" (func (param i32)))',
        '(import "we" "now" (func (result i32)))',
        '(import "we" "random" (global i64))',
        '(import "env" "log" (func (param i32 i32)))',
    ],
    ids=["log-arity", "now-i32", "random-global", "other-module"],
)
def test_imports_that_are_not_host_calls_are_bad_module(rt: WasmRuntime, imported: str) -> None:
    body = (WAT / "noop.wat").read_text().replace("(module", f"(module {imported}", 1)
    with pytest.raises(WasmEngineError) as exc:
        rt.load(wat2wasm(body))
    assert exc.value.code == E.WASM_BAD_MODULE and exc.value.detail["imports"]


def test_errors_stay_with_their_own_store_across_threads(rt: WasmRuntime) -> None:
    """No process-global error slot: a failing agent in one thread never fails
    the host calls of another agent running at the same time."""
    good = rt.load(wasm("hostcalls") + b"\x00\x02\x01t")  # a distinct digest: its own lock
    bad = rt.load(wasm("badhost") + b"\x00\x02\x01t")
    failures: list[str] = []

    def run_good() -> None:
        for _ in range(300):
            out = msgpack.unpackb(good.call(b"", limits(seed=3)).output)
            if out != [stream(3, 16), [0, 0, 0]]:
                failures.append(repr(out))

    def run_bad() -> None:
        for i in range(300):
            try:
                bad.call(bytes([i % 3]), FAST)
                failures.append("badhost did not fail")
            except WasmEngineError as err:
                if err.detail.get("trap") != "host_bad_pointer":
                    failures.append(str(err))

    threads = [threading.Thread(target=f) for f in (run_good, run_bad, run_good, run_bad)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert failures == []
