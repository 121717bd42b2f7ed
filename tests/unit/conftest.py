"""Fixtures for the unit tests: ``h``, a scheduler :class:`Harness` with the test agent stored;
``rt``, a wasm runtime in each allocation mode (pooled and on demand); ``host`` and ``bad``,
the host-call test agents loaded in it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from hostcall_helpers import wasm
from scheduler_harness import Harness

from wasm_worker.runtime import Agent, WasmRuntime


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.put_agent()
    return harness


@pytest.fixture(scope="module", params=[64, 0], ids=["pooled", "on-demand"])
def rt(request: pytest.FixtureRequest) -> Iterator[WasmRuntime]:
    runtime = WasmRuntime(epoch_tick_s=0.002, pool_instances=request.param)
    yield runtime
    runtime.close()


@pytest.fixture(scope="module")
def host(rt: WasmRuntime) -> Agent:
    return rt.load(wasm("hostcalls"))


@pytest.fixture(scope="module")
def bad(rt: WasmRuntime) -> Agent:
    return rt.load(wasm("badhost"))
