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
from pathlib import Path

import msgpack
import pytest
from hostcall_helpers import (
    FAST,
    STEPS,
    WAT,
    limits,
    stream,
    wasm,
    wat2wasm,
)

from wasm_engine import codec, envelope
from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.errors import WasmEngineError
from wasm_engine.protocol import make_header
from wasm_worker.handler import WasmHandler
from wasm_worker.runtime import Agent, HostAgent, Limits, WasmRuntime


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
