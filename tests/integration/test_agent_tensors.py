"""The tensor host calls (``we.tensor_read``, ``we.tensor_publish``) on real wasmtime and real
shared memory, through the wasm handler: the C agent agents/src/tensor_ops.c sums a slice of a
tensor another plane published (compared with numpy) and publishes one the test opens with
numpy; every hostile call (wild pointers, a range or handle past the end, a stale or foreign
handle, an over-budget or lying publish, a full arena) is a typed error, frees what the task
published, and the same handler serves the next task."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from wasm_engine import codec, envelope
from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.errors import WasmEngineError
from wasm_engine.protocol import make_header
from wasm_engine.tensors import Arena, TensorPlane, TensorRef, segments_of
from wasm_worker.handler import WasmHandler, WorkerLimits
from wasm_worker.runtime import WasmRuntime

MODULE = (Path(__file__).resolve().parents[2] / "agents" / "build" / "tensor_ops.wasm").read_bytes()
DIGEST = "sha256:" + hashlib.sha256(MODULE).hexdigest()
MiB = 1 << 20
BUDGET = 1 * MiB


def new_stack() -> str:
    return f"t{os.getpid()}x{os.urandom(3).hex()}"


@pytest.fixture(scope="module")
def runtime() -> Iterator[WasmRuntime]:
    rt = WasmRuntime()
    yield rt
    rt.close()


@pytest.fixture
def client() -> Iterator[TensorPlane]:
    """The producer of the tensors the agent reads: a plane with its own arena."""
    stack = new_stack()
    plane = TensorPlane(Arena(stack, 4 * MiB, segment_size=2 * MiB), owner="client")
    yield plane
    plane.close()
    assert segments_of(stack) == []


@pytest.fixture
def worker() -> Iterator[TensorPlane]:
    """The worker's plane: the arena agents publish into."""
    stack = new_stack()
    plane = TensorPlane(Arena(stack, 2 * MiB), owner="w")
    yield plane
    plane.close()
    assert segments_of(stack) == []


@pytest.fixture
def handler(runtime: WasmRuntime, worker: TensorPlane) -> WasmHandler:
    return WasmHandler(runtime, WorkerLimits(timeout_s=10.0, tensor_bytes=BUDGET), tensors=worker)


def run(handler: WasmHandler, data: dict[str, Any], task_id: str = "t") -> tuple[Any, dict]:
    submit = M.TaskSubmit(task_id=task_id, kind="wasm", agent=DIGEST, input=codec.packb(data))
    msg = M.TaskDispatch(task_id, 1, 0, DIGEST)
    frames = envelope.encode(make_header("task.dispatch"), msg.pack(), [submit.pack(), MODULE])
    env = envelope.decode(frames)
    handler.accept(msg, env)
    result = M.parse("task.result", handler.run(msg, env).pack())
    assert isinstance(result, M.TaskResult)
    return result.output, result.stats


def fails(handler: WasmHandler, data: dict[str, Any]) -> WasmEngineError:
    with pytest.raises(WasmEngineError) as info:
        run(handler, data)
    return info.value


def wire(ref: TensorRef, **changes: Any) -> dict[str, Any]:
    return {**ref.to_wire(), **changes}


@pytest.fixture
def tensor(client: TensorPlane) -> tuple[TensorRef, np.ndarray]:
    data = np.random.default_rng(5).standard_normal(1 << 18).astype(np.float32)  # 1 MiB
    return client.publish(data, []), data


def test_an_agent_sums_a_tensor_read_from_shared_memory(
    handler: WasmHandler, tensor: tuple[TensorRef, np.ndarray]
) -> None:
    ref, data = tensor
    assert ref.loc == "shm"
    out, _ = run(handler, {"op": "sum", "ref": ref.to_wire()})
    assert out["nbytes"] == data.nbytes and out["count"] == data.size
    assert out["sum"] == pytest.approx(float(data.sum(dtype=np.float64)), rel=1e-12)
    # a slice: values 1000..1000+70000 (several 64 KiB reads, one not aligned to them)
    out, _ = run(handler, {"op": "sum", "ref": ref.to_wire(), "offset": 4000, "count": 70_000})
    assert out["sum"] == pytest.approx(float(data[1000:71_000].sum(dtype=np.float64)), rel=1e-12)


def test_a_zero_length_read_asks_the_size(
    handler: WasmHandler, tensor: tuple[TensorRef, np.ndarray]
) -> None:
    ref, data = tensor
    out, _ = run(handler, {"op": "read", "ref": ref.to_wire(), "offset": 0, "len": 0})
    assert out == {"nbytes": data.nbytes, "first": None}
    out, _ = run(handler, {"op": "read", "ref": ref.to_wire(), "offset": 3, "len": 1})
    assert out["first"] == data.view(np.uint8)[3]


def test_a_published_tensor_opens_with_numpy_and_is_listed_for_its_lease(
    handler: WasmHandler, worker: TensorPlane
) -> None:
    free = worker.arena.free_bytes  # type: ignore[union-attr]
    out, stats = run(handler, {"op": "publish", "n": 100_000, "scale": 0.5}, task_id="pub")
    [raw] = out["refs"]
    assert stats["tensors"] == [raw]  # the loop leases each to the task id (docs/tensors.md)
    ref = TensorRef.from_wire(raw)
    assert (ref.loc, ref.dtype, ref.shape, ref.owner) == ("shm", "float32", (100_000,), "w")
    reader = TensorPlane(owner="reader")
    try:
        view = reader.open(ref)
        np.testing.assert_array_equal(view, np.arange(100_000, dtype=np.float32) * 0.5)
        del view
    finally:
        reader.close()
    assert worker.release(ref)  # what shm.free does once the reader released it
    assert worker.arena.free_bytes == free  # type: ignore[union-attr]


def test_an_agent_reads_back_what_another_task_published(handler: WasmHandler) -> None:
    out, _ = run(handler, {"op": "publish", "n": 5000, "scale": 2.0})
    out, _ = run(handler, {"op": "sum", "ref": out["refs"][0]})
    assert out["sum"] == float((np.arange(5000, dtype=np.float64) * 2).sum())


def bad_reads(ref: TensorRef) -> list[tuple[str, dict[str, Any], str]]:
    r = ref.to_wire()
    return [
        ("dst outside memory", {"ref": r, "len": 16, "dst": 0xFFFF_FFF0}, E.WASM_TRAP),
        ("dst wraps 32 bits", {"ref": r, "len": 64, "dst": 0xFFFF_FFFF}, E.WASM_TRAP),
        ("ref outside memory", {"ref": r, "ref_ptr": 0xFFFF_FF00, "ref_len": 4096}, E.WASM_TRAP),
        ("ref not a map", {"ref": "segment"}, E.SHM_BAD_HANDLE),
        ("ref truncated", {"ref": r, "ref_len": 20}, E.SHM_BAD_HANDLE),
        ("range past the tensor", {"ref": r, "offset": ref.nbytes - 4, "len": 8}, E.SHM_BAD_HANDLE),
        ("offset past the tensor", {"ref": r, "offset": ref.nbytes + 1}, E.SHM_BAD_HANDLE),
        ("handle past its segment", {"ref": wire(ref, offset=2 * MiB - 64)}, E.SHM_BAD_HANDLE),
        ("nbytes not dtype x shape", {"ref": wire(ref, nbytes=8)}, E.SHM_BAD_HANDLE),
        ("inline handle", {"ref": wire(ref, loc="inline", segment="", generation=0, offset=0)},
         E.SHM_BAD_HANDLE),
        ("older generation", {"ref": wire(ref, generation=ref.generation + 7)}, E.SHM_STALE_HANDLE),
        ("segment gone", {"ref": wire(ref, segment="wasm-engine-gone-1-x-1")}, E.SHM_STALE_HANDLE),
        ("another namespace", {"ref": wire(ref, ns="elsewhere/ipc:[1]")}, E.SHM_FOREIGN_NAMESPACE),
    ]  # fmt: skip


def test_every_hostile_read_is_a_typed_error_and_the_next_task_runs(
    handler: WasmHandler, tensor: tuple[TensorRef, np.ndarray]
) -> None:
    ref, data = tensor
    for why, args, code in bad_reads(ref):
        err = fails(handler, {"op": "read", "offset": 0, **args})
        assert err.code == code, (why, err)
        if code == E.WASM_TRAP:
            assert err.detail["trap"] == "host_bad_pointer", why
        out, _ = run(handler, {"op": "sum", "ref": ref.to_wire(), "count": 10})
        assert out["sum"] == pytest.approx(float(data[:10].sum(dtype=np.float64))), why


def test_a_freed_or_reused_slot_refuses_the_old_handle(
    handler: WasmHandler, client: TensorPlane, tensor: tuple[TensorRef, np.ndarray]
) -> None:
    ref, _ = tensor
    assert client.release(ref)
    assert fails(handler, {"op": "sum", "ref": ref.to_wire()}).code == E.SHM_STALE_HANDLE
    again = client.publish(np.ones(1 << 18, np.float32), [])
    assert (again.segment, again.offset) == (ref.segment, ref.offset)  # the same slot, reused
    assert fails(handler, {"op": "sum", "ref": ref.to_wire()}).code == E.SHM_STALE_HANDLE
    assert run(handler, {"op": "sum", "ref": again.to_wire()})[0]["sum"] == float(1 << 18)


def bad_publishes() -> list[tuple[str, dict[str, Any], str]]:
    half = BUDGET // 8  # floats: each publish is half the budget
    return [
        ("over the budget", {"n": half, "times": 3}, E.WASM_TRAP),
        ("data outside memory", {"n": 4, "data_ptr": 0xFFFF_FFF8}, E.WASM_TRAP),
        ("len not dtype x shape", {"n": 4, "len": 12}, E.SHM_BAD_HANDLE),
        ("unknown dtype", {"n": 4, "dtype": "object"}, E.SHM_BAD_HANDLE),
        ("negative dim", {"n": 4, "shape": [-4]}, E.SHM_BAD_HANDLE),
        ("shape not a list", {"n": 4, "shape": 4}, E.SHM_BAD_HANDLE),
    ]


def test_every_hostile_publish_is_a_typed_error_and_frees_what_the_task_published(
    handler: WasmHandler, worker: TensorPlane
) -> None:
    free = worker.arena.free_bytes  # type: ignore[union-attr]
    for why, args, code in bad_publishes():
        err = fails(handler, {"op": "publish", **args})
        assert err.code == code, (why, err)
        if why == "over the budget":
            assert err.detail == {"trap": "host_limit", "call": "we.tensor_publish",
                                  "limit": BUDGET}  # fmt: skip
        assert worker.arena.free_bytes == free, why  # type: ignore[union-attr]
        _, stats = run(handler, {"op": "publish", "n": 8})
        assert worker.release(TensorRef.from_wire(stats["tensors"][0])), why


def test_a_full_arena_is_retryable_backpressure(runtime: WasmRuntime) -> None:
    stack = new_stack()
    small = TensorPlane(Arena(stack, 256 << 10), owner="small")
    try:
        handler = WasmHandler(runtime, WorkerLimits(timeout_s=10.0), tensors=small)
        err = fails(handler, {"op": "publish", "n": 100_000})  # 400 KB into 256 KiB
        assert (err.code, err.retryable) == (E.SHM_ARENA_FULL, True)
        assert small.arena.free_bytes == 256 << 10  # type: ignore[union-attr]
    finally:
        small.close()


def test_without_a_plane_or_an_arena_the_calls_are_refused(
    runtime: WasmRuntime, tensor: tuple[TensorRef, np.ndarray]
) -> None:
    ref, _ = tensor
    bare = WasmHandler(runtime, WorkerLimits(timeout_s=10.0))
    assert fails(bare, {"op": "sum", "ref": ref.to_wire()}).code == E.WASM_CAPABILITY_DENIED
    reader = TensorPlane(owner="reader")  # no arena: it reads, it cannot publish
    try:
        handler = WasmHandler(runtime, WorkerLimits(timeout_s=10.0), tensors=reader)
        assert run(handler, {"op": "sum", "ref": ref.to_wire(), "count": 1})[0]["count"] == 1
        err = fails(handler, {"op": "publish", "n": 4})
        assert err.code == E.WASM_CAPABILITY_DENIED
    finally:
        reader.close()
