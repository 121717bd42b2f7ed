"""Tensors between a client and an agent through a real orchestrator and worker (ipc://, real
shared memory): the client publishes a tensor into its own arena and an agent sums it by its
handle; an agent publishes one, the client opens it with numpy and releases it, and the lease
the worker took for the task frees the slot back in the worker's arena (``shm.free``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from wasm_engine import Client
from wasm_engine import errors as E
from wasm_engine.config import Settings
from wasm_engine.errors import WasmEngineError
from wasm_engine.tensors import TensorRef, process

MODULE = (Path(__file__).resolve().parents[2] / "agents" / "build" / "tensor_ops.wasm").read_bytes()
MiB = 1 << 20


def until(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_client_tensor_is_read_by_an_agent_and_an_agent_tensor_by_the_client(
    make_stack: Callable[..., Settings],
) -> None:
    settings = make_stack(shm_arena=2 * MiB, lease_ttl=60.0)
    arena = make_stack.loops[0].tensors.arena  # type: ignore[attr-defined]
    until("the worker's arena", lambda: arena is not None)
    empty = arena.free_bytes
    mine = process.plane_for(settings.replace(shm_arena=2 * MiB), "client")  # the same stack id
    try:
        with Client(settings.front, timeout=30) as client:
            agent = client.put_agent(MODULE)
            data = np.random.default_rng(3).standard_normal(100_000).astype(np.float32)
            ref = mine.publish(data, [], in_shm=True)
            out = client.run(agent, {"op": "sum", "ref": ref.to_wire()}).output
            assert out["sum"] == pytest.approx(float(data.sum(dtype=np.float64)), rel=1e-12)
            assert mine.release(ref)  # ours, never leased: we free it once the task is done

            result = client.run(agent, {"op": "publish", "n": 50_000, "scale": 0.25})
            assert result.stats["tensors"] == result.output["refs"]
            theirs = TensorRef.from_wire(result.output["refs"][0])
            view = mine.open(theirs)
            np.testing.assert_array_equal(view, np.arange(50_000, dtype=np.float32) * 0.25)
            del view
            assert arena.free_bytes < empty  # held by the lease until we release it
            assert client.release_tensors(result) == 1
            until("shm.free to give the slot back", lambda: arena.free_bytes == empty)

            for stale in (theirs, ref):  # released, and freed by us: both refused now
                with pytest.raises(WasmEngineError) as info:
                    client.run(agent, {"op": "sum", "ref": stale.to_wire()})
                assert info.value.code == E.SHM_STALE_HANDLE
            assert client.run(agent, {"op": "publish", "n": 1}).stats["tensors"]
    finally:
        mine.close()


def test_a_worker_without_an_arena_refuses_to_publish_and_serves_on(
    make_stack: Callable[..., Settings],
) -> None:
    settings = make_stack()  # shm_arena 0: the worker's plane reads, it cannot publish
    with Client(settings.front, timeout=30) as client:
        agent = client.put_agent(MODULE)
        with pytest.raises(WasmEngineError) as info:
            client.run(agent, {"op": "publish", "n": 4})
        assert info.value.code == E.WASM_CAPABILITY_DENIED
        with pytest.raises(WasmEngineError) as info:
            client.run(agent, {"op": "sum", "ref": {"dtype": "float32"}})
        assert info.value.code == E.SHM_BAD_HANDLE
