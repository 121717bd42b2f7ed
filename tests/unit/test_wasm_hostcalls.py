"""Host calls of ABI v1 (``we.log``, ``we.emit``, ``we.now``, ``we.random``) on real wasmtime.

Determinism (same seed, same bytes and fuel, in this process and another one),
bounds checks on every guest pointer, per-task caps, refused imports, and the
runtime serving on after each failure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
import sys
import threading
from pathlib import Path

import msgpack
import pytest
import wasmtime

from wasm_engine import codec, envelope
from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.errors import WasmEngineError
from wasm_engine.protocol import make_header
from wasm_worker.handler import WasmHandler
from wasm_worker.runtime import Agent, HostAgent, Limits, WasmRuntime

WAT = Path(__file__).resolve().parents[2] / "agents" / "wat"
FAST = Limits(fuel=10_000_000, timeout_s=2.0, memory_bytes=4 << 20, max_output=1 << 20)
STEPS = [msgpack.packb({"step": k}) for k in range(3)]


def wat2wasm(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


def wasm(name: str) -> bytes:
    return wat2wasm((WAT / f"{name}.wat").read_text())


def stream(seed: int, n: int) -> bytes:
    """we.random's documented stream (docs/agents.md), computed independently."""
    key = (seed % 2**64).to_bytes(8, "little")
    blocks = (
        hashlib.blake2b(i.to_bytes(8, "little"), key=key).digest() for i in range(n // 64 + 1)
    )
    return b"".join(blocks)[:n]


def limits(**kw: int) -> Limits:
    base = {k: getattr(FAST, k) for k in ("fuel", "timeout_s", "memory_bytes", "max_output")}
    return Limits(**(base | kw))


@pytest.fixture(scope="module")
def host(rt: WasmRuntime) -> Agent:
    return rt.load(wasm("hostcalls"))


@pytest.fixture(scope="module")
def bad(rt: WasmRuntime) -> Agent:
    return rt.load(wasm("badhost"))


def still_serving(rt: WasmRuntime, host: Agent, reuse: bool) -> None:
    """The runtime, the host agent and a plain agent all work after a failure."""
    events: list[bytes] = []
    res = host.call(b"", limits(seed=1), reuse=reuse, emit=events.append)
    assert msgpack.unpackb(res.output) == [stream(1, 16), [0, 0, 0]] and events == STEPS
    assert rt.load(wasm("echo")).call(b"\x01", FAST, reuse=reuse).output == b"\x01"


@pytest.mark.parametrize("reuse", [False, True], ids=["fresh", "reuse"])
def test_every_host_call(host: Agent, reuse: bool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="wasm_worker.agent")
    events: list[bytes] = []
    res = host.call(b"", limits(seed=7), reuse=reuse, task_id="task-7", emit=events.append)
    assert msgpack.unpackb(res.output) == [stream(7, 16), [0, 0, 0]]
    assert events == STEPS and res.events == 3 and res.log_dropped == 0
    (line,) = [r.getMessage() for r in caplog.records if r.name == "wasm_worker.agent"]
    assert "task-7" in line and line.endswith("hostcalls: hello")
    assert type(host) is HostAgent


def test_plain_agents_keep_the_plain_path(rt: WasmRuntime) -> None:
    assert type(rt.load(wasm("echo"))) is Agent


@pytest.mark.parametrize("reuse", [False, True], ids=["fresh", "reuse"])
def test_same_seed_same_bytes_and_fuel(host: Agent, reuse: bool) -> None:
    runs = [host.call(b"", limits(seed=s), reuse=reuse) for s in (42, 42, 43, -1, 2**64 - 1)]
    assert runs[0].output == runs[1].output and runs[0].fuel_used == runs[1].fuel_used
    assert runs[2].output != runs[0].output and runs[2].fuel_used == runs[0].fuel_used
    assert runs[3].output == runs[4].output  # the seed is taken modulo 2**64
    assert msgpack.unpackb(runs[2].output)[0] == stream(43, 16)


def test_random_stream_continues_across_calls_of_a_task(rt: WasmRuntime) -> None:
    twice = rt.load(wat2wasm(RANDOM_TWICE))
    out = twice.call(b"", limits(seed=5)).output
    assert out == stream(5, 100)  # 30 bytes, then 70 more of the same stream


RANDOM_TWICE = """(module
  (import "we" "random" (func $random (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "alloc") (param i32) (result i32) i32.const 1024)
  (func (export "handle") (param i32 i32) (result i64)
    (call $random (i32.const 0) (i32.const 30))
    (call $random (i32.const 30) (i32.const 70))
    i64.const 100))"""  # raw bytes at 0, 100 long (not msgpack: the runtime does not care)


def test_same_output_and_fuel_in_another_process(host: Agent, tmp_path: Path) -> None:
    module = tmp_path / "hostcalls.wasm"
    module.write_bytes(wasm("hostcalls"))
    script = (
        "import json, sys\n"
        "from wasm_worker.runtime import Limits, WasmRuntime\n"
        "rt = WasmRuntime(pool_instances=0)\n"
        "agent = rt.load(open(sys.argv[1], 'rb').read())\n"
        "res = agent.call(b'', Limits(seed=1234))\n"
        "print(json.dumps([res.output.hex(), res.fuel_used]))\n"
        "rt.close()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(module)], capture_output=True, check=True, timeout=60
    )
    there = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    here = host.call(b"", Limits(seed=1234))
    assert there == [here.output.hex(), here.fuel_used]


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


def test_handler_passes_the_seed_and_streams(rt: WasmRuntime) -> None:
    handler = WasmHandler(rt)
    module = wasm("hostcalls")
    digest = "sha256:" + hashlib.sha256(module).hexdigest()
    submit = M.TaskSubmit(task_id="t", kind="wasm", agent=digest, input=codec.packb(None), seed=9)
    msg = M.TaskDispatch("t", 1, 0, digest)
    env = envelope.decode(
        envelope.encode(make_header("task.dispatch"), msg.pack(), [submit.pack(), module])
    )
    handler.accept(msg, env)
    sent: list[bytes] = []
    result = M.parse("task.result", handler.run(msg, env, sent.append).pack())
    assert isinstance(result, M.TaskResult)
    assert result.output == [stream(9, 16), [0, 0, 0]] and result.stats["events"] == 3
    assert sent == STEPS


def test_handler_remembers_a_refused_module(rt: WasmRuntime) -> None:
    handler = WasmHandler(rt)
    module = wat2wasm(
        (WAT / "noop.wat").read_text().replace("(module", '(module (import "we" "nope" (func))', 1)
    )
    digest = "sha256:" + hashlib.sha256(module).hexdigest()
    submit = M.TaskSubmit(task_id="t", kind="wasm", agent=digest).pack()
    msg = M.TaskDispatch("t", 1, 0, digest)
    first = envelope.encode(make_header("task.dispatch"), msg.pack(), [submit, module])
    again = envelope.encode(make_header("task.dispatch"), msg.pack(), [submit])
    for frames in (first, again):  # the module is sent once; the answer stays the same
        env = envelope.decode(frames)
        handler.accept(msg, env)
        with pytest.raises(WasmEngineError) as exc:
            handler.run(msg, env)
        assert exc.value.code == E.WASM_BAD_MODULE and exc.value.detail["imports"] == ["we.nope"]


def test_host_caps_validated() -> None:
    for cap in ("log_bytes", "emit_events", "emit_bytes", "random_bytes", "request_bytes"):
        with pytest.raises(ValueError):
            Limits(**{cap: -1})


def test_the_example_in_docs_agents_md_runs(
    rt: WasmRuntime, caplog: pytest.LogCaptureFixture
) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "agents.md").read_text()
    (example,) = re.findall(r"```wat\n(.*?)```", doc, re.S)
    caplog.set_level(logging.INFO, logger="wasm_worker.agent")
    assert rt.load(wat2wasm(example)).call(b"\xa2hi", FAST).output == b"\xa2hi"
    assert caplog.records[-1].getMessage().endswith(": hello")
