"""The SDKs against a real orchestrator and worker over real sockets.

The orchestrator and one wasm worker run as threads of the test process (real
ZeroMQ ipc sockets, real wasmtime); the e2e suite runs them as processes.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import wasmtime

from wasm_engine import AsyncClient, Client, WasmEngineError
from wasm_engine import errors as E
from wasm_engine.client import Result
from wasm_engine.config import Settings

WAT = Path(__file__).resolve().parents[2] / "agents" / "wat"


def wasm(name: str) -> bytes:
    return bytes(wasmtime.wat2wasm((WAT / f"{name}.wat").read_text()))


def fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


@pytest.fixture
def stack(make_stack: Callable[..., Settings]) -> Settings:
    return make_stack(credits=4)


def test_run_returns_output_and_stats(stack: Settings) -> None:
    with Client(stack.front) as client:
        agent = client.put_agent(wasm("checksum"), name="checksum")
        result = client.run(agent, "hello world", task_id="t-1")
    import msgpack

    assert result.output == fnv1a64(msgpack.packb("hello world"))
    assert result.task_id == "t-1" and result.trace == "t-1"
    stats = result.stats
    assert stats["worker"] == "w-test" and stats["attempts"] == 1 and stats["device"] == "cpu"
    assert stats["fuel_used"] > 0 and stats["run_us"] >= 0 and "queue_us" in stats


def test_run_many_keeps_input_order(stack: Settings) -> None:
    with Client(stack.front) as client:
        echo = client.put_agent(wasm("echo"))
        results = client.run_many(echo, [{"i": i} for i in range(300)], window=32)
    assert [r.output for r in results] == [{"i": i} for i in range(300)]


def test_task_errors_raise_with_the_error_body(stack: Settings) -> None:
    with Client(stack.front) as client:
        loop = client.put_agent(wasm("loop"))
        with pytest.raises(WasmEngineError) as exc:
            client.run(loop, None, fuel=10_000)
        assert exc.value.code == E.WASM_OUT_OF_FUEL and exc.value.retryable is False
        with pytest.raises(WasmEngineError) as exc:
            client.run(loop, None, timeout=0.2, fuel=10**15)
        assert exc.value.code == E.TASK_DEADLINE
        # the worker lives on
        assert client.run(client.put_agent(wasm("echo")), 5).output == 5


def test_a_deadline_ends_a_running_task_and_the_credit_comes_back(stack: Settings) -> None:
    with Client(stack.front) as client:
        loop = client.put_agent(wasm("loop"))
        with pytest.raises(WasmEngineError) as exc:
            client.run(loop, None, deadline=time.time() + 0.3, fuel=10**15, timeout=5)
        assert exc.value.code == E.TASK_DEADLINE
        echo = client.put_agent(wasm("echo"))
        assert [r.output for r in client.run_many(echo, range(10))] == list(range(10))


def test_duplicate_task_id_runs_once(stack: Settings) -> None:
    with Client(stack.front) as client:
        echo = client.put_agent(wasm("echo"))
        first = client.run(echo, "same", task_id="dup-1")
        second = client.run(echo, "same", task_id="dup-1")
        assert first.output == second.output == "same"
        assert second.stats == first.stats  # the stored reply, not a second run
        with pytest.raises(WasmEngineError) as exc:
            client.run(echo, "other", task_id="dup-1")
        assert exc.value.code == E.TASK_CONFLICT
        assert client.status()["counters"]["completed"] == 1


def test_cancel_a_queued_task(stack: Settings) -> None:
    with Client(stack.front) as client:
        loop = client.put_agent(wasm("loop"))
        running = [client.submit(loop, None, timeout=0.5, fuel=10**15) for _ in range(4)]
        queued = client.submit(loop, None, task_id="to-cancel", timeout=2, fuel=10**15)
        client.cancel("to-cancel")
        with pytest.raises(WasmEngineError) as exc:
            queued.result(10)
        assert exc.value.code == E.TASK_CANCELLED
        for fut in running:
            with pytest.raises(WasmEngineError):
                fut.result(30)


def test_unknown_agent_is_a_typed_error(stack: Settings) -> None:
    with Client(stack.front) as client, pytest.raises(WasmEngineError) as exc:
        client.run("sha256:" + "0" * 64, 1)
    assert exc.value.code == E.WASM_AGENT_MISSING


def test_async_client(stack: Settings) -> None:
    async def main() -> list[object]:
        async with AsyncClient(stack.front) as client:
            echo = await client.put_agent(wasm("echo"))
            futures = [await client.submit(echo, i) for i in range(50)]
            outputs = [r.output for r in await asyncio.gather(*futures)]
            status = await client.status()
            assert status["workers"][0]["name"] == "w-test"
            with pytest.raises(WasmEngineError) as exc:
                await client.run(await client.put_agent(wasm("unreachable")), None)
            assert exc.value.code == E.WASM_TRAP
            return outputs

    assert asyncio.run(main()) == list(range(50))


def test_status_snapshot(stack: Settings) -> None:
    with Client(stack.front) as client:
        client.run(client.put_agent(wasm("noop")), None)
        status = client.status()
    (worker,) = status["workers"]
    assert worker["kind"] == "wasm" and worker["credits"] == 4 and worker["completed"] == 1
    assert status["queues"]["wasm"] == {"depth": 0, "limit": 10_000}
    assert status["counters"]["submitted"] == 1


def test_a_reply_does_not_wait_behind_a_slow_task(stack: Settings) -> None:
    """Replies leave in bursts, but never held while the worker runs a slow task."""
    with Client(stack.front) as client:
        echo = client.put_agent(wasm("echo"))
        loop = client.put_agent(wasm("loop"))
        with pytest.raises(WasmEngineError):  # the worker learns that loop is slow
            client.run(loop, None, timeout=0.2, fuel=10**15)
        client.run(echo, "warm")
        t0 = time.monotonic()
        fast = client.submit(echo, "fast")
        slow = client.submit(loop, None, timeout=1.5, fuel=10**15)
        assert fast.result(10).output == "fast"
        fast_s = time.monotonic() - t0
        with pytest.raises(WasmEngineError):
            slow.result(10)
        slow_s = time.monotonic() - t0
    assert slow_s >= 1.4  # they really ran back to back on the one worker
    assert fast_s < 1.0, f"the fast reply waited {fast_s:.2f}s behind the slow task"


def test_events_stream_in_order_before_the_result(stack: Settings) -> None:
    with Client(stack.front) as client:
        agent = client.put_agent(wasm("hostcalls"))
        seen: list[tuple[object, bool]] = []
        fut = client.submit(agent, None, seed=11, on_event=lambda v: seen.append((v, fut.done())))
        result = fut.result(10)
        assert seen == [({"step": k}, False) for k in range(3)]
        assert result.stats["events"] == 3
        random16, emitted = result.output
        assert len(random16) == 16 and emitted == [0, 0, 0]
        # same agent, input and seed: the same bytes and fuel, events again
        again: list[object] = []
        second = client.run(agent, None, seed=11, on_event=again.append)
        assert (
            second.output == result.output
            and second.stats["fuel_used"] == result.stats["fuel_used"]
        )
        assert again == [{"step": k} for k in range(3)]
        assert client.run(agent, None, seed=12).output[0] != random16


def test_host_call_failures_are_typed_and_the_worker_serves_on(stack: Settings) -> None:
    with Client(stack.front) as client:
        badhost = client.put_agent(wasm("badhost"))
        with pytest.raises(WasmEngineError) as exc:
            client.run(badhost, 0)
        assert exc.value.code == E.WASM_TRAP and exc.value.detail["trap"] == "host_bad_pointer"
        events: list[object] = []
        client.run(client.put_agent(wasm("hostcalls")), None, on_event=events.append)
        assert len(events) == 3


def test_async_client_events(stack: Settings) -> None:
    async def main() -> tuple[list[tuple[object, bool]], Result, Result]:
        async with AsyncClient(stack.front) as client:
            agent = await client.put_agent(wasm("hostcalls"))
            seen: list[tuple[object, bool]] = []
            futures: list[asyncio.Future[Result]] = []

            def on_event(value: object) -> None:  # the future is not resolved yet
                seen.append((value, any(f.done() for f in futures)))

            futures.append(await client.submit(agent, None, seed=5, on_event=on_event))
            first = await futures[0]
            return seen, first, await client.run(agent, None, seed=5)

    seen, first, second = asyncio.run(main())
    assert seen == [({"step": k}, False) for k in range(3)]
    assert first.output[1] == [0, 0, 0] and first.stats["events"] == 3
    assert second.output == first.output  # same seed, same bytes
