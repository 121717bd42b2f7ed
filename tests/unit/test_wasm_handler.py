"""The wasm handler: module bookkeeping and limits (real wasmtime, no sockets)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgpack
import pytest
import wasmtime

from wasm_engine import codec, envelope
from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.errors import WasmEngineError
from wasm_engine.protocol import make_header
from wasm_worker.handler import WasmHandler, WorkerLimits
from wasm_worker.runtime import WasmRuntime

WAT = Path(__file__).resolve().parents[2] / "agents" / "wat"
ECHO = bytes(wasmtime.wat2wasm((WAT / "echo.wat").read_text()))
DIGEST = "sha256:" + hashlib.sha256(ECHO).hexdigest()


@pytest.fixture
def handler() -> WasmHandler:
    runtime = WasmRuntime()
    yield WasmHandler(runtime, WorkerLimits(timeout_s=5.0))
    runtime.close()


def dispatch(task_id: str, data: object, *, module: bool, limits: dict | None = None):
    submit = M.TaskSubmit(
        task_id=task_id, kind="wasm", agent=DIGEST, input=codec.packb(data), limits=limits or {}
    ).pack()
    msg = M.TaskDispatch(task_id, 1, 0, DIGEST)
    blobs = [submit, ECHO] if module else [submit]
    frames = envelope.encode(make_header("task.dispatch"), msg.pack(), blobs)
    return msg, envelope.decode(frames)


def run(handler: WasmHandler, msg: M.TaskDispatch, env: envelope.Envelope) -> object:
    body = handler.run(msg, env).pack()
    result = M.parse("task.result", body)
    assert isinstance(result, M.TaskResult)
    return result.output


def test_module_kept_when_its_first_task_never_runs(handler: WasmHandler) -> None:
    first, first_env = dispatch("t1", "dropped", module=True)
    handler.accept(first, first_env)  # then cancelled before it started: never run
    second, second_env = dispatch("t2", {"x": [1, 2]}, module=False)
    handler.accept(second, second_env)
    assert run(handler, second, second_env) == {"x": [1, 2]}


def test_module_never_sent_is_agent_missing(handler: WasmHandler) -> None:
    msg, env = dispatch("t1", 1, module=False)
    with pytest.raises(WasmEngineError) as exc:
        handler.run(msg, env)
    assert exc.value.code == E.WASM_AGENT_MISSING


def test_output_is_spliced_as_one_msgpack_value(handler: WasmHandler) -> None:
    msg, env = dispatch("t1", {"deep": {"list": [1, "two", 3.0, None, b"\x00"]}}, module=True)
    handler.accept(msg, env)
    body = handler.run(msg, env).pack()
    raw = msgpack.unpackb(body)
    assert raw["output"] == {"deep": {"list": [1, "two", 3.0, None, b"\x00"]}}
    assert raw["task_id"] == "t1" and raw["stats"]["fuel_used"] > 0


def test_submit_limits_are_capped_by_the_worker(handler: WasmHandler) -> None:
    submit = M.TaskSubmit(
        task_id="t", kind="wasm", agent=DIGEST, limits={"timeout": 10**6, "fuel": 10**15}
    )
    limits = handler.task_limits(submit, None)
    assert limits.timeout_s == handler.limits.max_timeout_s
    assert limits.fuel == handler.limits.max_fuel


def test_fuel_limit_from_the_submit_is_enforced(handler: WasmHandler) -> None:
    msg, env = dispatch("t1", "x" * 1000, module=True, limits={"fuel": 3})
    handler.accept(msg, env)
    with pytest.raises(WasmEngineError) as exc:
        handler.run(msg, env)
    assert exc.value.code == E.WASM_OUT_OF_FUEL


def test_manifest_limits_are_task_defaults_and_caps(handler: WasmHandler) -> None:
    import json

    from wasm_engine.manifest import Manifest, agent_digest

    manifest = Manifest("echo", limits={"fuel": 5000, "timeout": 2.0})
    digest = agent_digest(ECHO, manifest)
    submit = M.TaskSubmit(
        task_id="t", kind="wasm", agent=digest, input=codec.packb(1), limits={"fuel": 10**12}
    )
    body = submit.pack()
    msg = M.TaskDispatch("t", 1, 0, digest)
    wire = json.dumps(manifest.canonical()).encode()
    env = envelope.decode(
        envelope.encode(make_header("task.dispatch"), msg.pack(), [body, ECHO, wire])
    )
    handler.accept(msg, env)
    assert handler.run(msg, env).stats["fuel_used"] <= 5000
    _agent, caps = handler.table.agents[digest]
    limits = handler.task_limits(submit, None, caps)
    assert (limits.fuel, limits.timeout_s) == (5000, 2.0)  # capped
    lower = M.TaskSubmit(task_id="u", kind="wasm", agent=digest, limits={"fuel": 10})
    assert handler.task_limits(lower, None, caps).fuel == 10  # a task may ask for less
    default = handler.task_limits(M.TaskSubmit(task_id="v", kind="wasm", agent=digest), None, caps)
    assert default.memory_bytes == handler.limits.memory_bytes  # not in the manifest: the worker's
    # a manifest blob that does not match the digest refuses the module
    bad = M.TaskDispatch("w", 1, 0, "sha256:" + "0" * 64)
    env = envelope.decode(
        envelope.encode(make_header("task.dispatch"), bad.pack(), [body, ECHO, wire])
    )
    handler.accept(bad, env)
    with pytest.raises(WasmEngineError) as exc:
        handler.run(bad, env)
    assert exc.value.code == E.WASM_BAD_MODULE


def test_past_its_cap_the_table_drops_the_least_used_agent_not_in_a_session() -> None:
    """Four distinct agents (the same code under four names) through a table of two: the
    least recently used goes, unless a session holds its instance; a task naming a dropped
    one is wasm.agent_missing (the orchestrator then sends the module again)."""
    from wasm_engine.manifest import Manifest, agent_digest

    runtime = WasmRuntime()
    handler = WasmHandler(runtime, WorkerLimits(timeout_s=5.0))
    handler.table.max_agents = 2
    digests = []

    def call(name: str, module: bool, session: str | None = None) -> None:
        manifest = Manifest(name)
        digest = agent_digest(ECHO, manifest)
        submit = M.TaskSubmit(task_id=name, kind="wasm", agent=digest, input=codec.packb(1))
        msg = M.TaskDispatch(name, 1, 0, digest, session=session, fresh=session is not None)
        wire = json.dumps(manifest.canonical()).encode()
        blobs = [submit.pack(), ECHO, wire] if module else [submit.pack()]
        env = envelope.decode(envelope.encode(make_header("task.dispatch"), msg.pack(), blobs))
        handler.accept(msg, env)
        handler.run(msg, env)
        if digest not in digests:
            digests.append(digest)

    try:
        call("a", True, session="s1")  # a's instance is a session's: pinned
        call("b", True)
        call("c", True)  # over the cap: b (least used, not pinned) goes
        assert list(handler.table.agents) == [digests[0], digests[2]]
        call("a", False, session="s1")
        call("d", True)  # c is now the least used
        assert set(handler.table.agents) == {digests[0], digests[3]}
        assert handler.table.dropped == 2
        with pytest.raises(WasmEngineError) as exc:
            call("b", False)
        assert exc.value.code == E.WASM_AGENT_MISSING
        call("b", True)  # sent again: loads again
    finally:
        runtime.close()
